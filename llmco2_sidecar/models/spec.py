"""LLM architecture facts, read from a Hugging Face ``config.json`` (parsing: :mod:`.hf_config`).

Decoder-only transformers: dense (LLaMA, Mistral, Qwen2/Qwen3, InternLM, Gemma, Phi-3 families) and
mixture-of-experts (Mixtral, Qwen2-MoE, Qwen3-MoE, gpt-oss, DeepSeek-V2/V3, Llama-4), with the
attention variants that change work or KV bytes: DeepSeek's multi-head latent attention (MLA),
sliding-window layers (gpt-oss) and chunked local attention with NoPE layers (Llama-4).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a decoder-only LLM.

    Bit widths: ``weight_bits`` (weights), ``act_bits`` (activations), ``kv_bits`` (KV cache).
    ``expert_weight_bits`` (0: as ``weight_bits``) is the storage width of the routed experts'
    weights including block scales (gpt-oss's MXFP4 experts: 4 bits + one 8-bit scale per 32 =
    4.25). ``gemm_dtype`` ("" : from ``act_bits``) is the data type the weight GEMMs compute in
    where it differs from the activations' storage (FP8 checkpoints with dynamic FP8 activation
    scaling: "fp8"; the GPU's FP8 peak applies where it has one).

    Mixture of experts (``num_experts`` 0: dense): ``num_experts`` routed experts, of which
    ``experts_per_token`` are active per token, each a gated MLP of ``expert_intermediate_size``;
    shared experts (always active) of total width ``shared_expert_intermediate_size``;
    ``num_dense_layers`` layers keep a dense MLP of ``intermediate_size`` (DeepSeek's first three,
    Llama-4 Maverick's every other layer), the other ``num_layers - num_dense_layers`` are MoE.

    MLA (``kv_lora_rank`` > 0): queries through a ``q_lora_rank`` bottleneck (0: a plain
    projection), keys and values from a cached latent of ``kv_lora_rank + qk_rope_head_dim`` per
    token and layer, shared by all heads; ``head_dim`` is then ``qk_nope_head_dim + qk_rope_head_dim``.

    Local attention: ``num_local_layers`` layers attend within ``local_window`` tokens, either a
    sliding window (``local_attention="sliding"``: the last ``local_window`` keys) or fixed chunks
    (``"chunked"``: keys of the query's own ``local_window``-token chunk). ``num_nope_layers``
    layers use no rotary embedding.
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
    # mixture of experts
    num_experts: int = 0
    experts_per_token: int = 0
    expert_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    num_dense_layers: int = 0
    # multi-head latent attention
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    # local attention and RoPE
    local_attention: str = ""  # "", "sliding" or "chunked"
    local_window: int = 0
    num_local_layers: int = 0
    num_nope_layers: int = 0
    # precision beyond the three widths
    expert_weight_bits: float = 0.0
    gemm_dtype: str = ""
    quant_method: str = ""  # the checkpoint's quantization_config.quant_method, for display
    #: block-scaled FP8 weights: the block's K extent (quantization_config.weight_block_size, e.g. 128);
    #: 0 for per-tensor or per-channel scales (models/precision.py)
    weight_block_size: int = 0

    # ---- kinds -----------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    @property
    def expert_bits(self) -> float:
        """Storage bits per routed-expert weight (block scales included)."""
        return self.expert_weight_bits or float(self.weight_bits)

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
    def attention_params(self) -> int:
        """Weights of one attention block (projections and biases; MLA: its low-rank factors)."""
        h, nh = self.hidden_size, self.num_heads
        if self.is_mla:
            qd = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = (h * self.q_lora_rank + self.q_lora_rank * nh * qd) if self.q_lora_rank else h * nh * qd
            kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank * nh * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv + nh * self.v_head_dim * h
        q, kv = self.q_size, self.kv_size
        return h * (q + 2 * kv) + q * h + ((q + 2 * kv) if self.qkv_bias else 0)

    @property
    def norm_params(self) -> int:
        """Norm weights of one layer."""
        extra = (self.q_lora_rank + self.kv_lora_rank) if self.is_mla else (2 * self.head_dim if self.qk_norm else 0)
        return 2 * self.hidden_size + (2 * self.hidden_size if self.post_norms else 0) + extra

    @property
    def dense_mlp_params(self) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden_size * self.intermediate_size

    @property
    def expert_params(self) -> int:
        """Weights of one routed expert (a gated MLP)."""
        return 3 * self.hidden_size * self.expert_intermediate_size

    @property
    def moe_mlp_params(self) -> int:
        """Weights of one MoE block: router, all routed experts, shared experts."""
        h = self.hidden_size
        return h * self.num_experts + self.num_experts * self.expert_params + 3 * h * self.shared_expert_intermediate_size

    @property
    def params_per_layer(self) -> int:
        """Weights in one dense transformer layer (projections, MLP, norms, biases); for a MoE model
        the layer average."""
        if not self.is_moe:
            h, q, kv, i = self.hidden_size, self.q_size, self.kv_size, self.intermediate_size
            attn = h * (q + 2 * kv) + q * h + ((q + 2 * kv) if self.qkv_bias else 0)
            mlp = (3 if self.gated_mlp else 2) * h * i
            norms = 2 * h + (2 * h if self.post_norms else 0) + (2 * self.head_dim if self.qk_norm else 0)
            return attn + mlp + norms
        return (self.num_layers * (self.attention_params + self.norm_params) + self.num_dense_layers * self.dense_mlp_params
                + self.num_moe_layers * self.moe_mlp_params) // self.num_layers

    @property
    def non_embedding_params(self) -> int:
        if not self.is_moe and not self.is_mla:
            return self.num_layers * self.params_per_layer + self.hidden_size  # + final norm
        return (self.num_layers * (self.attention_params + self.norm_params) + self.num_dense_layers * self.dense_mlp_params
                + self.num_moe_layers * self.moe_mlp_params + self.hidden_size)

    @property
    def routed_expert_params(self) -> int:
        """All routed experts' weights over all MoE layers (the part stored at ``expert_bits``)."""
        return self.num_moe_layers * self.num_experts * self.expert_params

    @property
    def active_params(self) -> int:
        """Weights a single token runs through (routed experts: ``experts_per_token`` of them)."""
        inactive = self.num_moe_layers * (self.num_experts - self.experts_per_token) * self.expert_params
        return self.total_params - inactive

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def total_params(self) -> int:
        return self.non_embedding_params + self.embedding_params

    @property
    def weight_bytes(self) -> float:
        if not self.expert_weight_bits:
            return self.total_params * self.weight_bits / 8
        rest = self.total_params - self.routed_expert_params
        return rest * self.weight_bits / 8 + self.routed_expert_params * self.expert_weight_bits / 8

    @property
    def mean_weight_bits(self) -> float:
        """Storage bits per weight over the whole model (``weight_bits`` unless experts differ)."""
        if not self.expert_weight_bits:
            return float(self.weight_bits)
        return self.weight_bytes * 8 / self.total_params

    @property
    def kv_entries_per_token_layer(self) -> int:
        """KV-cache elements one token adds in one layer: K and V of the KV heads, or MLA's latent."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.kv_size

    @property
    def kv_bytes_per_token(self) -> float:
        """KV cache bytes per token over all layers (K and V; MLA: the compressed latent). Local-attention
        layers are counted in full (an upper bound: vLLM's hybrid allocator keeps only their window)."""
        if self.is_mla:
            return self.num_layers * self.kv_entries_per_token_layer * self.kv_bits / 8
        return 2 * self.num_layers * self.kv_size * self.kv_bits / 8

    @property
    def kv_replicated_over_tp(self) -> bool:
        """MLA's latent is shared by all heads, so each tensor-parallel GPU caches all of it."""
        return self.is_mla

    def with_bits(self, weight_bits: int | None = None, act_bits: int | None = None, kv_bits: int | None = None) -> "ModelSpec":
        return replace(
            self,
            weight_bits=weight_bits or self.weight_bits,
            act_bits=act_bits or self.act_bits,
            kv_bits=kv_bits or self.kv_bits,
        )

    def with_layers(self, num_layers: int) -> "ModelSpec":
        """The same architecture with ``num_layers`` layers (dense, local and NoPE layer counts scaled)."""
        if num_layers == self.num_layers or not (self.num_dense_layers or self.num_local_layers or self.num_nope_layers):
            return replace(self, num_layers=num_layers)
        f = num_layers / self.num_layers
        return replace(self, num_layers=num_layers, num_dense_layers=round(self.num_dense_layers * f),
                       num_local_layers=round(self.num_local_layers * f), num_nope_layers=round(self.num_nope_layers * f))

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], name: str = "", verified: bool = True, source: str = "") -> "ModelSpec":
        """Read a Hugging Face ``config.json`` (as a dict). Raises :class:`InputError` naming a missing
        field, :class:`UnsupportedModelError` for an architecture or number format we cannot cost."""
        from .hf_config import spec_from_hf_config

        return spec_from_hf_config(cls, config, name=name, verified=verified, source=source)


# re-exported for callers that listed the supported types
from .hf_config import SUPPORTED_MODEL_TYPES  # noqa: E402  (after ModelSpec: hf_config imports nothing from here)

__all__ = ["ModelSpec", "SUPPORTED_MODEL_TYPES"]
