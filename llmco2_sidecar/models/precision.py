"""Number formats of a checkpoint, from its ``config.json`` ``quantization_config``.

What the graph costs per format (weights / activations in memory / GEMM compute):

=====================  ==================================================================
none (bf16/fp16)       16 / 16 / bf16 peak
``fp8``, ``fbgemm_fp8`` 8 / 16 / FP8 peak with dynamic activation scaling (DeepSeek-V3: e4m3,
                       128 x 128 weight blocks, one fp32 scale per block: +0.002 bits, ignored),
                       BF16 peak where the activations stay static-unquantized or the GPU has no FP8;
                       ``weight_block_size`` (``[128, 128]``: block-scaled FP8, DeepSeek-V3 and Qwen's
                       FP8 releases) is kept as ``ModelSpec.weight_block_size``: a block-scaled GEMM
                       quantizes its activations per token group and applies a scale per K block
                       inside its main loop, unlike a per-channel (row-wise) one such as Meta's
                       ``fbgemm_fp8``; the weight bytes and useful FLOPs are the same, the kernels
                       are not (graph/blockfp8.py counts the block-scaled GEMMs' activation
                       quantisation pass, the experts' padded M tiles and their promotion)
``mxfp4``              routed experts 4.25 bits (4-bit E2M1 + one 8-bit E8M0 scale per 32
                       weights); ``modules_to_not_convert`` (gpt-oss: attention, router,
                       embeddings, LM head) stay 16; compute at the BF16 peak (vLLM on Hopper and
                       Ampere dequantizes MXFP4 inside the MoE kernel: W4A16; the conversion's
                       CUDA-core work is costed by graph/dequant.py on GPUs without FP4 tensor cores)
``gptq``, ``awq``      ``bits`` (4 or 8) / 16 / bf16 peak (group scales ignored: +0.125 bits at group 128)
``compressed-tensors`` the first config group's ``weights.num_bits`` and ``input_activations``:
                       8-bit float activations compute at FP8, else 16-bit
=====================  ==================================================================

Anything else (bitsandbytes, GGUF, HQQ, AQLM, ...) raises :class:`UnsupportedModelError` naming
``config.json:quantization_config.quant_method``: the graph cannot cost a format it does not know.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import UnsupportedModelError

SUPPORTED_QUANT_METHODS = ("fp8", "fbgemm_fp8", "mxfp4", "gptq", "awq", "compressed-tensors")
MXFP4_BITS = 4.25  # 4-bit element + 8-bit shared scale per 32-element block (OCP MX spec v1.0)
_FIELD = "config.json:quantization_config"


def precision_from_config(cfg: Mapping[str, Any], name: str = "model") -> dict:
    """``ModelSpec`` precision fields (``weight_bits``, ``act_bits``, ``kv_bits``, ``expert_weight_bits``,
    ``gemm_dtype``, ``quant_method``) for a config; 16-bit where it has no ``quantization_config``."""
    out = dict(weight_bits=16, act_bits=16, kv_bits=16, expert_weight_bits=0.0, gemm_dtype="", quant_method="",
               weight_block_size=0)
    q = cfg.get("quantization_config")
    if not q:
        return out
    if not isinstance(q, Mapping):
        raise UnsupportedModelError(_FIELD, "must be a JSON object")
    method = str(q.get("quant_method") or "").lower()
    out["quant_method"] = method
    if method in ("fp8", "fbgemm_fp8"):
        out["weight_bits"] = 8
        block = q.get("weight_block_size")
        if block is not None:
            if (not isinstance(block, (list, tuple)) or not block
                    or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
                raise UnsupportedModelError(f"{_FIELD}.weight_block_size", f"{block!r} is not a list of positive "
                                            "integers", "e.g. [128, 128]")
            out["weight_block_size"] = int(block[-1])
        if str(q.get("activation_scheme", "dynamic")).lower() in ("dynamic", "static") or method == "fbgemm_fp8":
            out["gemm_dtype"] = "fp8"
        return out
    if method == "mxfp4":
        out["expert_weight_bits"] = MXFP4_BITS
        skipped = " ".join(str(m) for m in (q.get("modules_to_not_convert") or []))
        if "experts" in skipped:
            raise UnsupportedModelError(f"{_FIELD}.modules_to_not_convert", f"{name} keeps its experts unquantized under "
                                        "mxfp4; only the experts-only MXFP4 layout (gpt-oss) is costed")
        return out
    if method in ("gptq", "awq"):
        bits = q.get("bits", q.get("w_bit", 4))
        if bits not in (4, 8):
            raise UnsupportedModelError(f"{_FIELD}.bits", f"{bits}-bit {method} cannot be costed", "4, 8")
        out["weight_bits"] = int(bits)
        return out
    if method == "compressed-tensors":
        groups = q.get("config_groups") or {}
        first = next(iter(groups.values()), None) if isinstance(groups, Mapping) else None
        w = (first or {}).get("weights") or {}
        a = (first or {}).get("input_activations") or {}
        bits = w.get("num_bits")
        if bits not in (4, 8):
            raise UnsupportedModelError(f"{_FIELD}.config_groups.weights.num_bits", f"{bits!r} cannot be costed", "4, 8")
        out["weight_bits"] = int(bits)
        if a.get("num_bits") == 8 and str(a.get("type", "float")) == "float":
            out["gemm_dtype"] = "fp8"
        return out
    raise UnsupportedModelError(f"{_FIELD}.quant_method", f"{method or 'missing'} ({name}) cannot be costed by the "
                                "kernel graph", ", ".join(SUPPORTED_QUANT_METHODS))
