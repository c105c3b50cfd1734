"""A :class:`~.spec.ModelSpec` from an engine identity's ``ModelArchitecture`` fields, and back.

The fields are the spec's own names (``llmco2.v1.ModelArchitecture``); 0 or "" means "not set".
The dense fields go through :func:`~.hf_config.spec_from_hf_config` like a ``config.json`` (so the
same checks apply); the expert, MLA, local-attention and number-format fields are then checked
here and set as they are. Errors name ``identity.architecture.<field>``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from ..errors import InputError, UnsupportedModelError
from .precision import SUPPORTED_QUANT_METHODS
from .spec import ModelSpec

DENSE_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                "head_dim", "vocab_size", "weight_bits", "act_bits", "kv_bits", "tie_word_embeddings", "qkv_bias")
MOE_FIELDS = ("num_experts", "experts_per_token", "expert_intermediate_size", "shared_expert_intermediate_size",
              "num_dense_layers")
MLA_FIELDS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
LOCAL_FIELDS = ("local_attention", "local_window", "num_local_layers", "num_nope_layers")
PRECISION_FIELDS = ("expert_weight_bits", "gemm_dtype", "quant_method")
ARCHITECTURE_FIELDS = DENSE_FIELDS + MOE_FIELDS + MLA_FIELDS + LOCAL_FIELDS + PRECISION_FIELDS
_P = "identity.architecture."
_HF_TO_FIELD = {"num_experts_per_tok": "experts_per_token", "num_local_experts": "num_experts", "num_experts": "num_experts"}


def architecture_from_spec(spec: ModelSpec) -> dict[str, Any]:
    """The ``ModelArchitecture`` fields of a spec (defaults left out)."""
    out = {f: getattr(spec, f) for f in DENSE_FIELDS}
    for f in MOE_FIELDS + MLA_FIELDS + LOCAL_FIELDS + PRECISION_FIELDS:
        v = getattr(spec, f)
        if v:
            out[f] = v
    return out


def spec_from_architecture(a: Mapping[str, Any] | Any, name: str = "") -> ModelSpec:
    """The spec of an identity's architecture (a mapping or the protobuf message)."""
    get = (lambda k: a.get(k) or 0) if isinstance(a, Mapping) else (lambda k: getattr(a, k, 0) or 0)
    model_type = str(get("model_type") or "llama")
    for key in ("intermediate_size", "num_layers", "num_heads", "vocab_size"):
        if get(key) < 1:
            raise InputError(_P + key, "missing or zero", ">= 1")
    if get("hidden_size") > 1 << 20 or get("num_layers") > 10_000 or get("vocab_size") > 1 << 24:
        raise InputError("identity.architecture", "absurd model size")
    mla = get("kv_lora_rank") > 0
    cfg: dict[str, Any] = {
        "model_type": model_type, "hidden_size": get("hidden_size"), "intermediate_size": get("intermediate_size"),
        "num_hidden_layers": get("num_layers"), "num_attention_heads": get("num_heads"),
        "num_key_value_heads": get("num_kv_heads") or get("num_heads"), "vocab_size": get("vocab_size"),
        "tie_word_embeddings": bool(get("tie_word_embeddings")),
    }
    if get("qkv_bias"):
        cfg["attention_bias"] = True
    if get("head_dim") and not mla:
        cfg["head_dim"] = get("head_dim")
    n_exp = get("num_experts")
    if n_exp:  # the parser needs its family's keys; the fields below then set the facts as sent
        cfg.update(num_local_experts=n_exp, num_experts_per_tok=get("experts_per_token") or 0)
    if mla:
        cfg.update({k: get(k) for k in MLA_FIELDS})
    try:
        spec = ModelSpec.from_hf_config(cfg, name=name or model_type)
    except InputError as exc:
        key = exc.field.split(":")[-1]
        raise type(exc)(_P + _HF_TO_FIELD.get(key, key),
                        str(exc).split(": ", 1)[-1].split(" (allowed")[0], exc.allowed) from None
    changes: dict[str, Any] = {}
    bits = {k: get(k) for k in ("weight_bits", "act_bits", "kv_bits") if get(k)}
    for key, value in bits.items():
        if value not in (4, 8, 16, 32):
            raise InputError(_P + key, f"unsupported bit width {value}", "4, 8, 16, 32")
    changes.update(bits)
    L = spec.num_layers
    if n_exp:
        k, ei = get("experts_per_token"), get("expert_intermediate_size") or spec.intermediate_size
        if n_exp > 65536:
            raise InputError(_P + "num_experts", f"absurd value {n_exp}", "1..65536")
        if not 1 <= k <= n_exp:
            raise InputError(_P + "experts_per_token", f"{k} of {n_exp} experts", f"1..{n_exp}")
        if get("num_dense_layers") > L:
            raise InputError(_P + "num_dense_layers", f"{get('num_dense_layers')} of {L} layers", f"0..{L}")
        changes.update(num_experts=n_exp, experts_per_token=k, expert_intermediate_size=ei,
                       shared_expert_intermediate_size=get("shared_expert_intermediate_size"),
                       num_dense_layers=get("num_dense_layers"))
    elif any(get(f) for f in MOE_FIELDS):
        raise InputError(_P + "num_experts", "expert fields set without num_experts", ">= 1 for a MoE model")
    local = str(get("local_attention") or "")
    if local:
        if local not in ("sliding", "chunked"):
            raise InputError(_P + "local_attention", f"unknown kind {local!r}", "sliding, chunked")
        if get("local_window") < 1 or not 0 < get("num_local_layers") <= L:
            raise InputError(_P + "local_window", "local attention needs local_window >= 1 and 1..num_layers local layers")
        changes.update(local_attention=local, local_window=get("local_window"), num_local_layers=get("num_local_layers"))
    if get("num_nope_layers"):
        if get("num_nope_layers") > L:
            raise InputError(_P + "num_nope_layers", f"{get('num_nope_layers')} of {L} layers", f"0..{L}")
        changes["num_nope_layers"] = get("num_nope_layers")
    ewb = float(get("expert_weight_bits") or 0.0)
    if ewb and not 1.0 <= ewb <= 32.0:
        raise InputError(_P + "expert_weight_bits", f"{ewb} bits", "1..32")
    if ewb:
        changes["expert_weight_bits"] = ewb
    gd = str(get("gemm_dtype") or "")
    if gd and gd not in ("fp8", "bf16", "fp16", "int8", "fp4"):
        raise InputError(_P + "gemm_dtype", f"unknown data type {gd!r}", "fp8, bf16, fp16, int8, fp4")
    if gd:
        changes["gemm_dtype"] = gd
    qm = str(get("quant_method") or "").lower()
    if qm and qm not in SUPPORTED_QUANT_METHODS:
        raise UnsupportedModelError(_P + "quant_method", f"{qm} cannot be costed by the kernel graph",
                                    ", ".join(SUPPORTED_QUANT_METHODS))
    if qm:
        changes["quant_method"] = qm
    return replace(spec, **changes) if changes else spec
