"""DeepSeek's multi-head latent attention (MLA) on one GPU, in the weight-absorbed form vLLM runs
for decode: attention works on the cached latent (``kv_lora_rank + qk_rope_head_dim`` per token and
layer, one for all heads, so each TP rank caches all of it).

Per token and GPU (``nh = heads / tp``, ``c = kv_lora_rank``, ``r = qk_rope_head_dim``,
``d = qk_nope_head_dim``, ``v = v_head_dim``):

* ``q_a_proj`` ``h -> q_lora_rank`` and ``kv_a_proj`` ``h -> c + r`` (replicated on TP ranks), their
  norms, ``q_b_proj`` ``q_lora_rank -> nh (d + r)``;
* ``q_absorb``: each head's no-RoPE query through ``W_UK`` into the latent space, ``2 nh d c`` FLOPs;
* ``attention`` (``attention_mla``): per (query, key) pair and head ``2 (c + r)`` for scores,
  ``2 c`` for the latent-weighted sum, 5 for the softmax; reads ``c + r`` latent elements per key
  token (shared by all heads), writes ``c + r`` per new token;
* ``v_up``: the latent output through ``W_UV``, ``2 nh c v`` FLOPs; then ``o_proj`` ``nh v -> h``.

vLLM's prefill uses the expanded form instead (keys and values decompressed once per context
token, ``2 (d + r) + 2 v + 5`` FLOPs per pair and head, fewer for long prompts): the absorbed form
counts more attention FLOPs for long prefills than vLLM runs (DeepSeek-V3: 2181 vs 645 per pair
and head), the same bytes.
"""

from __future__ import annotations

from ..models.spec import ModelSpec
from ..workload import Parallelism
from .kernels import Kernel, Shapes, _linear, _norm, _v


def mla_kernels(model: ModelSpec, par: Parallelism, s: Shapes, gemm_dtype: str = "") -> list[Kernel]:
    h, nh = s.h, model.num_heads // par.tp
    c, r, d, v = model.kv_lora_rank, model.qk_rope_head_dim, model.qk_nope_head_dim, model.v_head_dim
    ks: list[Kernel] = []
    if model.q_lora_rank:
        ks += [_linear("q_a_proj", h, model.q_lora_rank, s), _norm("q_a_norm", model.q_lora_rank, s),
               _linear("q_b_proj", model.q_lora_rank, nh * (d + r), s)]
    else:
        ks.append(_linear("q_proj", h, nh * (d + r), s))
    ks += [_linear("kv_a_proj", h, c + r, s), _norm("kv_a_norm", c, s)]
    rot = nh * r + r
    ks.append(Kernel("rope", "rope", (rot, rot, r), _v(T=3 * rot), _v(T=2 * rot * s.ab)))
    ks.append(Kernel("q_absorb", "linear", (nh * d, nh * c, d), _v(T=2 * nh * d * c),
                     _v(run=nh * d * c * s.wb, T=nh * (d + c) * s.ab)))
    ks.append(Kernel("attention", "attention_mla", (nh, 1, c + r), _v(A=(4 * c + 2 * r + 5) * nh),
                     _v(T=(nh * (c + r) + nh * c) * s.ab + (c + r) * s.kb, K=(c + r) * s.kb)))
    ks.append(Kernel("v_up", "linear", (nh * c, nh * v, v), _v(T=2 * nh * c * v), _v(run=nh * c * v * s.wb, T=nh * (c + v) * s.ab)))
    if gemm_dtype:
        ks = [k if k.ktype != "linear" or k.name in ("q_absorb", "v_up") else _with_dtype(k, gemm_dtype) for k in ks]
    return ks


def _with_dtype(k: Kernel, dtype: str) -> Kernel:
    from dataclasses import replace

    return replace(k, dtype=dtype)


def mla_edges(names: set[str]) -> list[tuple[str, str]]:
    q = "q_b_proj" if "q_b_proj" in names else "q_proj"
    e = [("input_norm", "q_a_proj"), ("q_a_proj", "q_a_norm"), ("q_a_norm", "q_b_proj")] if q == "q_b_proj" else [("input_norm", "q_proj")]
    e += [(q, "rope"), (q, "q_absorb"), ("input_norm", "kv_a_proj"), ("kv_a_proj", "kv_a_norm"), ("kv_a_proj", "rope"),
          ("q_absorb", "attention"), ("rope", "attention"), ("kv_a_norm", "attention"), ("attention", "v_up")]
    return e
