"""LLM architecture facts, read from a Hugging Face ``config.json``.

Only dense decoder-only transformers are modelled (LLaMA, Mistral, Qwen2/Qwen3, InternLM, Gemma,
Phi-3 families). Mixture-of-experts configs raise :class:`UnsupportedModelError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import InputError, UnsupportedModelError

# model_type values whose layers we model (dense, pre-norm, gated MLP unless noted).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "internlm", "internlm2", "gemma", "gemma2", "gemma3_text", "phi3")
_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")
_GATED_ACTS = ("silu", "swiglu", "gelu", "gelu_pytorch_tanh", "gelu_new", "geglu")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a dense decoder-only LLM.

    Bit widths: ``weight_bits`` (weights), ``act_bits`` (activations), ``kv_bits`` (KV cache).
    """

    name: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    hidden_act: str = "silu"
    gated_mlp: bool = True
    qkv_bias: bool = False
    qk_norm: bool = False  # Qwen3 normalises q and k per head
    post_norms: bool = False  # Gemma-2/3: extra norms after attention and MLP
    weight_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16
    verified: bool = True  # False for bundled configs checked in a single public copy only
    source: str = field(default="", compare=False)

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def gqa_ratio(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def params_per_layer(self) -> int:
        """Weights in one transformer layer (projections, MLP, norms, biases)."""
        h, q, kv, i = self.hidden_size, self.q_size, self.kv_size, self.intermediate_size
        attn = h * (q + 2 * kv) + q * h + ((q + 2 * kv) if self.qkv_bias else 0)
        mlp = (3 if self.gated_mlp else 2) * h * i
        norms = 2 * h + (2 * h if self.post_norms else 0) + (2 * self.head_dim if self.qk_norm else 0)
        return attn + mlp + norms

    @property
    def non_embedding_params(self) -> int:
        return self.num_layers * self.params_per_layer + self.hidden_size  # + final norm

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def total_params(self) -> int:
        return self.non_embedding_params + self.embedding_params

    @property
    def weight_bytes(self) -> float:
        return self.total_params * self.weight_bits / 8

    @property
    def kv_bytes_per_token(self) -> float:
        """KV cache bytes per token over all layers (K and V)."""
        return 2 * self.num_layers * self.kv_size * self.kv_bits / 8

    def with_bits(self, weight_bits: int | None = None, act_bits: int | None = None, kv_bits: int | None = None) -> "ModelSpec":
        from dataclasses import replace

        return replace(
            self,
            weight_bits=weight_bits or self.weight_bits,
            act_bits=act_bits or self.act_bits,
            kv_bits=kv_bits or self.kv_bits,
        )

    def with_layers(self, num_layers: int) -> "ModelSpec":
        from dataclasses import replace

        return replace(self, num_layers=num_layers)

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], name: str = "", verified: bool = True, source: str = "") -> "ModelSpec":
        """Read a Hugging Face ``config.json`` (as a dict). Raises :class:`InputError` naming a missing field."""
        cfg = dict(config)
        if "text_config" in cfg and "hidden_size" not in cfg:  # multimodal wrappers
            cfg = {**cfg["text_config"], "model_type": cfg["text_config"].get("model_type", cfg.get("model_type"))}
        model_type = str(cfg.get("model_type", "")).lower()
        name = name or cfg.get("_name_or_path") or model_type or "model"
        if any(cfg.get(k) for k in _MOE_KEYS) or "moe" in model_type or model_type in ("mixtral", "qwen3_moe", "qwen2_moe", "deepseek_v3", "gpt_oss"):
            raise UnsupportedModelError(
                "model",
                f"{name} is a mixture-of-experts model ({model_type}); MoE is not supported yet",
                "dense decoder-only models: " + ", ".join(SUPPORTED_MODEL_TYPES),
            )
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise InputError("model_type", f"{model_type or 'missing'} is not a supported architecture", ", ".join(SUPPORTED_MODEL_TYPES))

        def need(key: str, *alts: str) -> int:
            for k in (key, *alts):
                if cfg.get(k) is not None:
                    return int(cfg[k])
            raise InputError(f"config.json:{key}", f"missing from the config of {name}", "a positive integer")

        hidden = need("hidden_size", "n_embd", "d_model")
        heads = need("num_attention_heads", "n_head")
        layers = need("num_hidden_layers", "n_layer")
        inter = need("intermediate_size", "ffn_hidden_size")
        vocab = need("vocab_size")
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        for key, value in (("hidden_size", hidden), ("num_attention_heads", heads), ("num_hidden_layers", layers),
                           ("intermediate_size", inter), ("vocab_size", vocab), ("num_key_value_heads", kv_heads),
                           ("head_dim", head_dim)):
            if value < 1:
                raise InputError(f"config.json:{key}", f"must be positive, got {value}", ">= 1")
        if heads % kv_heads:
            raise InputError("config.json:num_key_value_heads", f"{kv_heads} does not divide num_attention_heads={heads}")
        act = str(cfg.get("hidden_act") or cfg.get("hidden_activation") or "silu")
        bias = bool(cfg.get("attention_bias", cfg.get("bias", model_type == "qwen2")))
        if model_type == "qwen2":  # Qwen2/2.5 have q/k/v biases and no attention_bias key
            bias = True
        bits = 16 if str(cfg.get("torch_dtype", "bfloat16")) in ("bfloat16", "float16", "float32") else 16
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
            qk_norm=model_type == "qwen3",
            post_norms=model_type in ("gemma2", "gemma3_text"),
            weight_bits=bits,
            act_bits=bits,
            kv_bits=bits,
            verified=verified,
            source=source,
        )
