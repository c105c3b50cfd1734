"""CUDA-core work of low-precision weight GEMMs on GPUs whose tensor cores lack the format.

A GEMM whose weights are stored in a format the GPU's tensor cores cannot read runs as a 16-bit GEMM
(W4A16 / W8A16: Marlin-style or Triton kernels) after each weight element is converted to 16 bits
on the CUDA cores. That conversion is work the tensor-core FLOPs do not count. Likewise a
block-scaled FP8 GEMM on a GPU whose tensor cores apply no block scales does its scaling on the
CUDA cores. This module counts both, from the formats' definitions, **before any held-out score was
looked at** (issue 15 item 4); nothing here is fitted.

Unit: one *op* is one elementary operation on one 32-bit CUDA-core lane (a bitwise op, a multiply,
an FMA: one instruction slot). A GPU does ``fp32 x 1e12 / 2`` of them per second, its datasheet FP32
figure (the catalog's ``dense_tflops.fp32``) counting an FMA as two FLOPs per lane and clock
(H100 SXM: 66.9 TFLOP/s = 132 SMs x 128 lanes x 1.98 GHz x 2, so 33.45e12 ops/s; hardware/SOURCE.md).
The counts below are of what the format requires, not of one kernel's instructions: packed 16-bit
instructions (two elements per lane) would halve them, the register shuffles that bring converted
values into the tensor cores' operand layout add to them.

**MXFP4 -> BF16** (OCP Microscaling Formats v1.0: each element E2M1, 1 sign, 2 exponent bits with
bias 1, 1 mantissa bit; one E8M0 scale ``X`` per block of 32 elements; value ``2^(X-127) x element``):

* place the element's fields in a 16-bit pattern (its sign to bit 15, its exponent and mantissa bits
  under the BF16 exponent's low bits): 1 bitwise op (shift-and-mask / three-input logic op);
* one multiply by ``2^(X - 127) x 2^(127 - 1)``: applies the block scale and the exponent-bias
  difference between BF16 (127) and E2M1 (1) at once, and normalises E2M1's subnormal (0.5): 1 op;
* per 32-element block, turning ``X`` into that 16-bit multiplier: a shift into the exponent field
  and the bias add, 2 ops, so 2/32 per element.

:data:`MXFP4_OPS_PER_ELEMENT` = 2 + 2/32 = 2.0625.

**FP8 -> BF16** (E4M3, bias 7, on a GPU without FP8 tensor cores, e.g. A100: weight-only W8A16):
place the fields (1 bitwise op), one multiply by the channel's or block's scale times
``2^(127 - 7)`` (1 op); the scale's own cost is per output channel or per 128 x 128 block (below
1/128 op per element): :data:`FP8_OPS_PER_ELEMENT` = 2.

Each weight element the step reads is converted once: the Roofline minimum. A kernel that tiles a
large batch into several M tiles converts each weight tile once per M tile, more than counted here.

**Block-scaled FP8 on FP8 tensor cores** (``weight_block_size`` [128, 128]: DeepSeek-V3, Qwen3 FP8;
activations quantised per token and 128-wide K group). The tensor core accumulates one K block
without scales; the partial sum is then scaled by ``a_scale x b_scale`` of that K block and added
to the FP32 accumulator on the CUDA cores (DeepSeek-V3 technical report, arXiv 2412.19437, section
3.3.2, "promotion to CUDA cores" every 128 elements; the Triton and CUTLASS block-scaled GEMMs vLLM
runs do the same per K block): 1 FMA per output element per K block, ``M N K / block`` ops for a
``2 M N K``-FLOP GEMM, so :func:`promotion_ops` = FLOPs / (2 x block). A per-channel (row-wise)
FP8 GEMM (``fbgemm_fp8``, Llama-4-Maverick) applies its scales once, in the epilogue: ``M N`` ops,
below ``1/(2K)`` of the FLOPs (``K >= 2048`` here): not counted. The per-token activation
quantisation both do (a reduction and a scale per activation element, not per weight) is not
counted either.

Which GPUs need which (the catalog's peaks say what the tensor cores read):

* MXFP4 weights: converted unless the GPU lists an ``fp4`` peak (B200's fifth-generation tensor cores
  read MXFP4 natively; H100/H200 and A100 do not);
* FP8 weights: converted unless the GPU lists an ``fp8`` peak (H100, H200, L4, L40S and B200 do; A100
  does not);
* block-scaled FP8 promotion: on GPUs with an ``fp8`` peak and no ``fp4`` one. ASSUMPTION: a GPU with
  microscaling (MX) tensor cores (those listing ``fp4``: B200) applies block scales inside the MMA
  for the attention and dense GEMMs. The routed experts are promoted on every FP8 GPU, B200
  included: vLLM 0.11 runs them in its Triton fused-MoE kernel, which scales each K block's partial
  sum on the CUDA cores (:mod:`.blockfp8`, which also adds the activation quantisation pass's ops
  and the experts' padded M tiles; since 2026-12-07).

How the graph uses it (:mod:`.builder`): a kernel's compute time is its tensor-core time plus its
CUDA-core time (the same warps issue both; taken as not overlapping each other, each overlapping the
memory traffic as every kernel's compute does: the larger of the two would be the strict minimum,
the sum differs from it only where the kernel is compute-bound); the step's totals carry the
CUDA-core GPU-seconds (``StepFeatures.simt_s``), which the prior adds to its compute term
(:mod:`~llmco2_sidecar.predictor.prior`), and the GNN reads as the global ``log_simt_us``. A GPU spec
without an ``fp32`` figure (a user's TOML) gets no CUDA-core term.
"""

from __future__ import annotations

import numpy as np

#: CUDA-core ops to convert one MXFP4 weight element to BF16 (module docstring).
MXFP4_OPS_PER_ELEMENT = 2.0 + 2.0 / 32
#: CUDA-core ops to convert one FP8 weight element to BF16 where the GPU has no FP8 tensor cores.
FP8_OPS_PER_ELEMENT = 2.0


def simt_ops_per_s(gpu) -> float:
    """CUDA-core ops per second: the datasheet FP32 rate over 2 (an FMA is 2 FLOPs, 1 op); 0 if the
    spec has no ``fp32`` figure."""
    return float(gpu.dense_tflops.get("fp32", 0.0)) * 1e12 / 2


def native(gpu, fmt: str) -> bool:
    """Whether ``gpu``'s tensor cores read weights of format ``fmt`` (``"mxfp4"``, ``"fp8"``)."""
    key = {"mxfp4": "fp4", "fp8": "fp8"}[fmt]
    return float(gpu.dense_tflops.get(key, 0.0)) > 0


def block_scales_in_mma(gpu) -> bool:
    """Whether the tensor cores apply block scales themselves (microscaling tensor cores: ASSUMED
    for GPUs listing an ``fp4`` peak; module docstring)."""
    return float(gpu.dense_tflops.get("fp4", 0.0)) > 0


def promotion_ops(flops: tuple[float, ...], block: int) -> tuple[float, ...]:
    """CUDA-core ops of a block-scaled FP8 GEMM's per-K-block scaling: FLOPs / (2 x block)."""
    return tuple(f / (2.0 * block) for f in flops)


def kernel_simt_ops(k, gpu) -> tuple[float, ...] | None:
    """The CUDA-core ops of kernel ``k`` on ``gpu`` as a coefficient vector over the aggregates, or
    None where it has none. Block-scaled FP8 on FP8 tensor cores: the promotion (on every GPU for the
    routed experts, run by vLLM's Triton fused-MoE kernel; elsewhere where the MMA applies no block
    scales) plus the activation quantisation pass (:mod:`.blockfp8`)."""
    if not k.wfmt:
        return None
    if not native(gpu, k.wfmt):
        per = MXFP4_OPS_PER_ELEMENT if k.wfmt == "mxfp4" else FP8_OPS_PER_ELEMENT
        return tuple(e * per for e in k.welems)
    if k.wfmt == "fp8" and k.scale_block > 0:
        from .blockfp8 import QUANT_OPS_PER_ELEMENT

        if k.ktype == "expert_linear" or not block_scales_in_mma(gpu):
            ops = promotion_ops(k.flops, k.scale_block)
        else:
            ops = (0.0,) * len(k.flops)
        if k.qelems:
            ops = tuple(o + q * QUANT_OPS_PER_ELEMENT for o, q in zip(ops, k.qelems))
        return ops if any(ops) else None
    return None


def simt_seconds(kernels, gpu) -> np.ndarray | None:
    """``[w, K]``: each kernel's CUDA-core seconds per unit of each aggregate on ``gpu`` (the column
    layout of :func:`~.kernel_time._coefs`), or None when no kernel has CUDA-core work there."""
    rate = simt_ops_per_s(gpu)
    if rate <= 0:
        return None
    cols = [kernel_simt_ops(k, gpu) for k in kernels]
    if all(c is None for c in cols):
        return None
    w = len(kernels[0].flops)
    return np.array([c if c is not None else (0.0,) * w for c in cols], dtype=np.float64).T / rate
