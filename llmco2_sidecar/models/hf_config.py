"""Reading a Hugging Face ``config.json`` into a :class:`~.spec.ModelSpec`.

Per family, the keys that carry the facts (values in the bundled configs, ``configs/SOURCE.md``):

* experts: ``num_local_experts`` (Mixtral, gpt-oss, Llama-4), ``num_experts`` (Qwen-MoE),
  ``n_routed_experts`` (DeepSeek); active per token ``num_experts_per_tok`` / ``experts_per_token``;
  expert width ``moe_intermediate_size`` (Qwen-MoE, DeepSeek) or ``intermediate_size`` (Mixtral,
  gpt-oss, Llama-4, whose dense layers use ``intermediate_size_mlp``);
* shared experts: ``n_shared_experts x moe_intermediate_size`` (DeepSeek),
  ``shared_expert_intermediate_size`` (Qwen-MoE), one of ``intermediate_size`` per MoE layer
  (Llama-4: set by its model code, not by a key);
* dense layers: ``first_k_dense_replace`` and ``moe_layer_freq`` (DeepSeek), ``mlp_only_layers`` and
  ``decoder_sparse_step`` (Qwen-MoE), ``interleave_moe_layer_step`` (Llama-4: layer i is MoE when
  ``(i + 1) % step == 0``);
* MLA: ``q_lora_rank``, ``kv_lora_rank``, ``qk_nope_head_dim``, ``qk_rope_head_dim``, ``v_head_dim``;
* local attention: ``layer_types`` with ``sliding_window`` (gpt-oss: alternate layers, window 128);
  Llama-4's ``attention_chunk_size`` on its RoPE layers, every fourth layer being a global NoPE
  layer (``no_rope_layers``; transformers' default interval 4 where the list is absent or empty).
  A plain ``sliding_window`` without ``layer_types`` (Mistral-7B-v0.1, Gemma-2's alternate layers in
  model code) is NOT applied: those models keep full attention, as before this module existed.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import InputError, UnsupportedModelError
from .precision import precision_from_config

DENSE_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "internlm", "internlm2", "gemma", "gemma2", "gemma3_text", "phi3")
MOE_MODEL_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "gpt_oss", "deepseek_v2", "deepseek_v3", "llama4_text", "llama4")
SUPPORTED_MODEL_TYPES = DENSE_MODEL_TYPES + MOE_MODEL_TYPES
_GATED_ACTS = ("silu", "swiglu", "gelu", "gelu_pytorch_tanh", "gelu_new", "geglu")
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def _int(cfg: Mapping[str, Any], key: str, default: int = 0) -> int:
    v = cfg.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or int(v) != v:
        raise InputError(f"config.json:{key}", f"must be a non-negative integer, got {v!r}")
    return int(v)


def _moe_layer_count(cfg: Mapping[str, Any], model_type: str, layers: int) -> int:
    """How many of the layers are MoE, from the family's keys (module docstring)."""
    if model_type.startswith("deepseek"):
        first = _int(cfg, "first_k_dense_replace")
        freq = _int(cfg, "moe_layer_freq", 1) or 1
        return sum(1 for i in range(layers) if i >= first and i % freq == 0)
    if model_type in ("qwen2_moe", "qwen3_moe"):
        step = _int(cfg, "decoder_sparse_step", 1) or 1
        only = set(cfg.get("mlp_only_layers") or [])
        return sum(1 for i in range(layers) if i not in only and (i + 1) % step == 0)
    if model_type.startswith("llama4"):
        if isinstance(cfg.get("moe_layers"), list) and cfg["moe_layers"]:
            return len(cfg["moe_layers"])
        step = _int(cfg, "interleave_moe_layer_step", 1) or 1
        return sum(1 for i in range(layers) if (i + 1) % step == 0)
    return layers


def _local_layers(cfg: Mapping[str, Any], model_type: str, layers: int) -> tuple[str, int, int, int]:
    """``(kind, window, local layers, NoPE layers)``."""
    if model_type.startswith("llama4"):
        chunk = _int(cfg, "attention_chunk_size")
        flags = cfg.get("no_rope_layers") or []
        if len(flags) == layers:  # 1: the layer uses RoPE (and chunked attention), 0: NoPE, global
            nope = sum(1 for f in flags if not f)
        else:
            interval = _int(cfg, "no_rope_layer_interval", 4) or 4
            nope = sum(1 for i in range(layers) if (i + 1) % interval == 0)
        return ("chunked", chunk, layers - nope, nope) if chunk else ("", 0, 0, nope)
    types = cfg.get("layer_types")
    window = cfg.get("sliding_window")
    if isinstance(types, list) and window:
        if len(types) != layers:
            raise InputError("config.json:layer_types", f"{len(types)} entries for {layers} layers")
        n = sum(1 for t in types if t == "sliding_attention")
        return ("sliding", int(window), n, 0) if n else ("", 0, 0, 0)
    return "", 0, 0, 0


def spec_from_hf_config(cls, config: Mapping[str, Any], name: str = "", verified: bool = True, source: str = ""):
    cfg = dict(config)
    top = cfg
    if "text_config" in cfg and "hidden_size" not in cfg:  # multimodal wrappers (Llama-4, Gemma-3)
        tc = cfg["text_config"]
        if not isinstance(tc, Mapping):
            raise InputError("config.json:text_config", "must be a JSON object")
        cfg = {**tc, "model_type": tc.get("model_type", cfg.get("model_type"))}
        for key in ("quantization_config", "torch_dtype"):
            if key in top and key not in cfg:
                cfg[key] = top[key]
    model_type = str(cfg.get("model_type", "")).lower()
    name = name or cfg.get("_name_or_path") or model_type or "model"
    if model_type not in SUPPORTED_MODEL_TYPES:
        kind = "mixture-of-experts architecture" if any(cfg.get(k) for k in _EXPERT_KEYS) else "architecture"
        raise UnsupportedModelError("config.json:model_type", f"{model_type or 'missing'} is not a supported {kind}",
                                    ", ".join(SUPPORTED_MODEL_TYPES))

    def need(key: str, *alts: str) -> int:
        for k in (key, *alts):
            if cfg.get(k) is not None:
                return _int(cfg, k)
        raise InputError(f"config.json:{key}", f"missing from the config of {name}", "a positive integer")

    hidden = need("hidden_size", "n_embd", "d_model")
    heads = need("num_attention_heads", "n_head")
    layers = need("num_hidden_layers", "n_layer")
    inter = need("intermediate_size", "ffn_hidden_size")
    vocab = need("vocab_size")
    kv_heads = _int(cfg, "num_key_value_heads") or heads
    mla = _int(cfg, "kv_lora_rank") > 0
    nope_d, rope_d = _int(cfg, "qk_nope_head_dim"), _int(cfg, "qk_rope_head_dim")
    head_dim = (nope_d + rope_d) if mla else (_int(cfg, "head_dim") or hidden // max(heads, 1))
    for key, value in (("hidden_size", hidden), ("num_attention_heads", heads), ("num_hidden_layers", layers),
                       ("intermediate_size", inter), ("vocab_size", vocab), ("num_key_value_heads", kv_heads),
                       ("head_dim", head_dim)):
        if value < 1:
            raise InputError(f"config.json:{key}", f"must be positive, got {value}", ">= 1")
    if heads % kv_heads:
        raise InputError("config.json:num_key_value_heads", f"{kv_heads} does not divide num_attention_heads={heads}")
    act = str(cfg.get("hidden_act") or cfg.get("hidden_activation") or "silu")
    bias = bool(cfg.get("attention_bias", cfg.get("bias", cfg.get("qkv_bias", model_type == "qwen2"))))
    if model_type in ("qwen2", "qwen2_moe"):  # Qwen2/2.5 have q/k/v biases and no attention_bias key
        bias = True

    moe: dict[str, int] = {}
    experts = next((_int(cfg, k) for k in _EXPERT_KEYS if cfg.get(k)), 0)
    if model_type in MOE_MODEL_TYPES:
        if experts < 1:
            raise InputError("config.json:num_experts", f"missing from the mixture-of-experts config of {name}",
                             "num_local_experts, num_experts or n_routed_experts >= 1")
        k = _int(cfg, "num_experts_per_tok") or _int(cfg, "experts_per_token")
        if not 1 <= k <= experts:
            raise InputError("config.json:num_experts_per_tok", f"{k} active experts of {experts}", f"1..{experts}")
        expert_inter = _int(cfg, "moe_intermediate_size") or inter
        dense_inter = _int(cfg, "intermediate_size_mlp") or inter if model_type.startswith("llama4") else inter
        if model_type.startswith("deepseek"):
            shared = _int(cfg, "n_shared_experts") * expert_inter
        elif model_type.startswith("llama4"):
            shared = inter  # one shared expert per MoE layer (model code)
        else:
            shared = _int(cfg, "shared_expert_intermediate_size")
        moe = dict(num_experts=experts, experts_per_token=k, expert_intermediate_size=expert_inter,
                   shared_expert_intermediate_size=shared, num_dense_layers=layers - _moe_layer_count(cfg, model_type, layers))
        inter = dense_inter
    mla_fields: dict[str, int] = {}
    if mla:
        mla_fields = dict(q_lora_rank=_int(cfg, "q_lora_rank"), kv_lora_rank=_int(cfg, "kv_lora_rank"),
                          qk_nope_head_dim=nope_d, qk_rope_head_dim=rope_d, v_head_dim=_int(cfg, "v_head_dim") or nope_d)
        kv_heads = heads  # every head has its own keys and values, decompressed from the shared latent
    local, window, n_local, n_nope = _local_layers(cfg, model_type, layers)
    prec = precision_from_config(cfg, name)
    return cls(
        name=name,
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=inter,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", model_type.startswith("gemma"))),
        max_position_embeddings=int(cfg.get("max_position_embeddings") or 4096),
        hidden_act=act,
        gated_mlp=act in _GATED_ACTS or model_type in SUPPORTED_MODEL_TYPES,
        qkv_bias=bias,
        qk_norm=model_type in ("qwen3", "qwen3_moe") or bool(cfg.get("use_qk_norm")),
        post_norms=model_type in ("gemma2", "gemma3_text"),
        verified=verified,
        source=source,
        local_attention=local,
        local_window=window,
        num_local_layers=n_local,
        num_nope_layers=n_nope,
        **moe,
        **mla_fields,
        **prec,
    )
