"""What a block-scaled FP8 GEMM does beyond its weight bytes and useful FLOPs (issue 15 item 4).

Block-scaled FP8 checkpoints (``quantization_config.weight_block_size`` ``[128, 128]``: DeepSeek-V3/R1,
Qwen3's FP8 releases) store one FP32 scale per 128 x 128 weight block. vLLM (0.11, the engine of
ML.ENERGY v3) runs every such GEMM as W8A8 with *dynamic per-token-group* activation scales: before
each GEMM a separate kernel (``per_token_group_quant_fp8``) reads the 16-bit activations, finds the
absolute maximum of every 128-element group of a token, writes the FP8 values and one FP32 scale per
group; the GEMM then reads FP8 activations. This module counts, from the formats' definitions and
vLLM's published kernel configuration, **fixed before any held-out score of it was looked at**
(nothing here is fitted):

**Activation quantisation pass** (per quantised activation element, block ``g = 128``):

* bytes: read the 16-bit element (2), write the FP8 element (1), write and read back one FP32 scale
  per group (``2 x 4 / g``): :data:`QUANT_BYTES_PER_ELEMENT` = 3 + 8/128 = 3.0625. The GEMM reads
  the FP8 element (1 byte) where the graph counted the 16-bit one (2): 1 byte less per element the
  GEMM reads (:data:`GEMM_INPUT_BYTES_SAVED`).
* CUDA-core ops (unit of :mod:`.dequant`: one 32-bit lane instruction slot): widen the 16-bit value
  to FP32 (1), fold ``|x|`` into the group's running maximum (1, the absolute value is an operand
  modifier), multiply by the group's reciprocal scale (1), convert to E4M3 with saturation (0.5: one
  ``cvt`` packs two elements): :data:`QUANT_OPS_PER_ELEMENT` = 3.5; the group's reduction and
  reciprocal (a few ops per 128 elements) are below 0.1 op per element and not counted.
* which elements: each GEMM's input once per token, except where vLLM fuses GEMMs that share an
  input into one (``QKVParallelLinear``: q/k/v read one quantised copy; ``MergedColumnParallelLinear``:
  gate and up; DeepSeek's fused ``q_a``/``kv_a`` projection), and the routed experts' gate/up
  input, quantised once per token before the grouped GEMM gathers each token's ``k`` copies
  (vLLM's ``fused_experts``); the experts' down input is quantised per (token, expert) pair.

**M tiles of the routed experts' grouped GEMM.** vLLM 0.11 runs block-scaled FP8 experts in its
Triton fused-MoE kernel, whose default configuration for ``fp8_w8a8`` with a block shape is
``BLOCK_SIZE_M = 64`` at every batch size (vLLM ``fused_moe.get_default_config``; later releases
switched to 16-row tiles for decode, vLLM PRs #34846 and #47593: "a 64-row tile spends most of its
compute on padding"). Each expert's tokens are padded to whole tiles (``moe_align_block_size``) and
the tensor cores run every tile in full, masked rows included: an active expert with ``m`` rows
costs ``2 x 64 ceil(m / 64) x N x K`` FLOPs. The graph counts the useful ``2 m N K`` (its ``T``
coefficient) plus one whole tile per active expert (its ``U`` coefficient, :data:`EXPERT_M_TILE`
rows): exact where ``m`` < 64 (decode: Qwen3-235B on two GPUs at batch 8 has ~1.2 rows per active
expert, so 64 / 1.2 ~ 50 x the useful expert FLOPs), at most half a tile per expert above the
expected padding at large batches. The block-scale promotion (:func:`.dequant.promotion_ops`) runs
on the same tiles, so it is counted on the executed FLOPs. Tuned per-shape configuration files
(smaller tiles at small batches) exist in vLLM for some expert shapes and GPUs, not for the
expert-parallel shapes served here (``E`` = local experts); an ASSUMPTION, stated.

**Promotion on Blackwell.** The Triton kernel scales each K block's partial sum on the CUDA cores
(``acc += dot(a, b) * a_scale * b_scale`` per 128-wide K block) on every GPU; Blackwell's
microscaling MMA applies only E8M0 scales per 32-element block (OCP MX v1.0), not the checkpoints'
FP32 128 x 128 block scales. So the routed experts' promotion is counted on B200 too
(:func:`.dequant.kernel_simt_ops`); the attention and dense GEMMs keep the earlier assumption (block
scales inside the MMA on GPUs listing ``fp4``: DeepGEMM's Blackwell path with power-of-two scales).

Not counted: launch latencies of the extra kernels (about 3-10 us each, a few hundred per decode
step; the Roofline has no per-kernel floor), DeepGEMM's 128-row expert alignment at large batches
where it replaces the Triton kernel, and per-token (non-block) FP8 models (``fbgemm_fp8``, per-channel
compressed-tensors: Llama-3.1-405B-FP8, Llama-4-Maverick-FP8), whose quantisation vLLM may fuse
into the preceding norm: they keep the graph of before. On a GPU without FP8 tensor cores (A100)
vLLM runs such checkpoints weight-only (W8A16, no activation quantisation, 16-row Marlin tiles):
the counts here are then an overcount (no such rows in the training data).
"""

from __future__ import annotations

from dataclasses import replace

#: rows per M tile of vLLM 0.11's Triton fused-MoE kernel for block-scaled FP8 (default configuration)
EXPERT_M_TILE = 64
#: bytes the quantisation pass moves per activation element (read 16-bit, write FP8, FP32 scale per 128)
QUANT_BYTES_PER_ELEMENT = 2.0 + 1.0 + 2 * 4.0 / 128
#: CUDA-core ops per quantised activation element (widen, |x|-max, scale, convert; module docstring)
QUANT_OPS_PER_ELEMENT = 3.5
#: bytes a W8A8 GEMM's activation read saves per element against a 16-bit read
GEMM_INPUT_BYTES_SAVED = 1.0

#: GEMMs whose input is the same quantised copy as the kernel named (vLLM fuses them into one GEMM)
SHARES_INPUT_WITH = {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj", "kv_a_proj": "q_a_proj"}

_T, _U = 1, 5  # the aggregates' columns (kernels.AGGREGATES / EXTENDED_AGGREGATES)


def block_fp8_kernel(k, names: set[str], pairs: float, act_bytes: float):
    """Kernel ``k`` (an FP8 GEMM of a block-scaled model, its ``welems`` set) with the quantisation
    pass of its input (``qelems``, and its bytes in ``mem_bytes``), its FP8 activation read, and, for
    routed experts, the padded M tile in ``flops``. ``names``: the layer's kernel names (fused-input
    partners), ``pairs``: token-expert pairs per token on this GPU, ``act_bytes``: bytes per 16-bit
    activation the graph counted."""
    d_out = float(k.dims[1])
    # elements the GEMM reads per token (per pair for experts), times its share of layers: from its
    # useful FLOPs (2 d_in d_out per input row; a bias adds d_out, below 1e-3 of it: ignored)
    a_in = k.flops[_T] / (2.0 * d_out)
    if k.ktype == "expert_linear" and k.name == "experts_gate_up":
        q_in = a_in / pairs  # quantised once per token, gathered k times
    elif SHARES_INPUT_WITH.get(k.name) in names:
        q_in = 0.0
    else:
        q_in = a_in
    n = len(k.flops)
    qelems = tuple(q_in if j == _T else 0.0 for j in range(n))
    mem = list(k.mem_bytes)
    mem[_T] += q_in * QUANT_BYTES_PER_ELEMENT - a_in * min(GEMM_INPUT_BYTES_SAVED, act_bytes - 1.0)
    flops = list(k.flops)
    if k.ktype == "expert_linear" and n > _U:
        # one whole M tile per active expert: the U coefficient of its weight elements is
        # (experts on this GPU) x d_in x d_out x layer share
        flops[_U] += 2.0 * EXPERT_M_TILE * k.welems[_U]
    return replace(k, flops=tuple(flops), mem_bytes=tuple(mem), qelems=qelems)
