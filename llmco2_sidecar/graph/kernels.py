"""Per-kernel work formulas of one transformer layer, derived by hand (not taken from LLM-Viewer).

Every quantity is **per GPU** for **one layer** and is *linear* in five per-step aggregates of the
request slices it serves (see :data:`AGGREGATES`):

=========  ==============================================================================
``run``    1 if the kernel runs in this step (any slice), else 0 -- carries weight reads
``T``      tokens computed: sum of ``new_tokens``
``A``      attention pairs (query, key) under the causal mask:
           sum of ``new * context + new * (new + 1) / 2``
``K``      KV-cache tokens read: sum of ``context + new``
``n``      request slices (sequences) in the step -- one logit row each
=========  ==============================================================================

So each kernel is a coefficient vector over the aggregates for FLOPs, memory bytes and network
bytes, and a whole step (or thousands of steps) is one matrix product. Formulas:

* RMSNorm over ``d`` features: 4 FLOPs/element (square, sum, scale, weight); reads the input and
  the weight, writes the output.
* Linear ``d_in -> d_out``: ``2 d_in d_out`` FLOPs per token (+ ``d_out`` with bias); reads the
  weight once per step, reads ``d_in`` and writes ``d_out`` activations per token.
* GQA: k/v projections, the KV-cache write and the KV reads use ``num_kv_heads`` (per GPU:
  ``num_kv_heads / tp``; replicated when ``tp > num_kv_heads``).
* Attention (fused, flash-style): ``4 head_dim + 5`` FLOPs per (query, key) pair per query head
  (QK^T, softmax, SV); reads Q, writes O, writes the new K/V, reads K/V of ``context + new`` tokens
  per request. Unfused: QK^T, softmax and SV as three kernels that write and read the score matrix
  (``heads x A`` elements).
* RoPE: 3 FLOPs per rotated element of q and k. SiLU-gated activation: 5 FLOPs per element
  (silu ~4, multiply 1) over the *intermediate* size.
* Ring all-reduce of ``N`` bytes over ``l`` GPUs: each GPU sends ``2 (l-1)/l N`` bytes
  (reduce-scatter then all-gather) and adds ``(l-1)/l`` of the elements. (DESIGN.md's
  ``n^2/l (l-1) DS`` counts one of the two phases.)
* Pipeline send/recv: ``(pp-1)`` stage boundaries per forward pass, each ``T x hidden`` activations;
  the per-layer graph carries that transfer averaged over the layers.

Models with experts or local attention (:func:`extended`) add three aggregates, zero-coefficient
for every other kernel (dense models keep the five above, bit for bit):

=========  ==============================================================================
``U``      share of a MoE layer's experts on a GPU that the step touches: with ``B`` tokens routed
           to ``k`` of ``E`` experts, ``1 - (1 - k/E)^B`` under uniform routing (so
           ``E (1 - (1 - k/E)^B)`` distinct experts; see :mod:`.moe` for where real routing differs)
``Aw``     attention pairs under the local-attention window (sliding: the last ``W`` keys;
           chunked: keys of the query's own ``W``-token chunk)
``Kw``     KV-cache tokens the window reads: ``min(context + new, W + new - 1)`` (sliding),
           ``context + new - W floor(context / W)`` (chunked)
=========  ==============================================================================

A kernel that runs in only some layers (a dense MLP in DeepSeek's first three layers, local
attention in gpt-oss's alternate layers, RoPE outside Llama-4's NoPE layers) carries its
coefficients times the share of layers it runs in, so ``num_layers x`` the layer graph stays the
model's total and each node is its per-layer average.

Outside the layer graph (but inside totals): embedding lookup (vocab-parallel under TP, then an
all-reduce), the final norm over all tokens, the LM head for one row per request slice (vLLM
computes logits for the last scheduled token of each request), and the logits all-gather under TP.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..models.spec import ModelSpec
from ..workload import Parallelism

AGGREGATES = ("run", "T", "A", "K", "n")
EXTENDED_AGGREGATES = AGGREGATES + ("U", "Aw", "Kw")

KERNEL_TYPES = (
    "norm",
    "linear",
    "rope",
    "attention_fused",
    "attention_qk",
    "softmax",
    "attention_sv",
    "activation",
    "residual_add",
    "all_reduce",
    "send_recv",
    "embedding",
    # appended (the shipped GNN's one-hot columns above keep their positions; see predictor.gnn)
    "moe_router",
    "moe_topk",
    "expert_linear",
    "shared_expert",
    "all_to_all",
    "attention_mla",
)

#: New node types as their nearest original type, for a GNN trained before they existed
#: (``GNNPredictor.load`` extends the first layer so that such a node reads as its parent type).
KERNEL_TYPE_PARENT = {"moe_router": "linear", "moe_topk": "softmax", "expert_linear": "linear",
                      "shared_expert": "linear", "all_to_all": "all_reduce", "attention_mla": "attention_fused"}


@dataclass(frozen=True)
class Kernel:
    """One node of the layer graph. ``flops``, ``mem_bytes`` and ``net_bytes`` are coefficient
    vectors over :data:`AGGREGATES` (per GPU, one layer)."""

    name: str
    ktype: str
    dims: tuple[float, float, float]  # (d_in or heads, d_out or kv heads, head_dim or 0), per GPU
    flops: tuple[float, ...]
    mem_bytes: tuple[float, ...]
    net_bytes: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    dtype: str = ""  # compute data type where it differs from the model's activations ("fp8" GEMMs)
    #: the weights' low-precision format where a GPU may have to convert them on its CUDA cores
    #: ("mxfp4", "fp8"; :mod:`.dequant`), the weight elements the kernel reads (coefficients over the
    #: aggregates, as ``mem_bytes``) and, for block-scaled FP8, the scale blocks' K extent
    wfmt: str = ""
    welems: tuple[float, ...] = ()
    scale_block: int = 0
    #: activation elements a block-scaled FP8 GEMM's quantisation pass converts (coefficients over the
    #: aggregates; :mod:`.blockfp8`), empty elsewhere
    qelems: tuple[float, ...] = ()

    @property
    def is_network(self) -> bool:
        return self.ktype in ("all_reduce", "send_recv", "all_to_all")

    def padded(self, n: int) -> "Kernel":
        """The kernel over ``n`` aggregates (zero coefficients for the added ones)."""
        def pad(v: tuple[float, ...]) -> tuple[float, ...]:
            return v + (0.0,) * (n - len(v))
        return replace(self, flops=pad(self.flops), mem_bytes=pad(self.mem_bytes), net_bytes=pad(self.net_bytes),
                       welems=pad(self.welems) if self.welems else (), qelems=pad(self.qelems) if self.qelems else ())

    def scaled(self, f: float) -> "Kernel":
        """The kernel with every coefficient times ``f`` (the share of layers it runs in)."""
        if f == 1.0:
            return self
        return replace(self, flops=tuple(x * f for x in self.flops), mem_bytes=tuple(x * f for x in self.mem_bytes),
                       net_bytes=tuple(x * f for x in self.net_bytes), welems=tuple(x * f for x in self.welems),
                       qelems=tuple(x * f for x in self.qelems))


def extended(model: ModelSpec) -> bool:
    """Whether the model's kernels need the aggregates ``U``, ``Aw``, ``Kw``."""
    return model.is_moe or model.num_local_layers > 0


def _x(run=0.0, T=0.0, A=0.0, K=0.0, n=0.0, U=0.0, Aw=0.0, Kw=0.0) -> tuple[float, ...]:
    return (float(run), float(T), float(A), float(K), float(n), float(U), float(Aw), float(Kw))


def _v(run=0.0, T=0.0, A=0.0, K=0.0, n=0.0) -> tuple[float, float, float, float, float]:
    return (float(run), float(T), float(A), float(K), float(n))


@dataclass(frozen=True)
class Shapes:
    """Per-GPU sizes of one layer under tensor parallelism."""

    h: int
    q: int  # query width per GPU
    kv: int  # key (= value) width per GPU
    i: int  # intermediate size per GPU
    heads: int  # query heads per GPU
    kv_heads: int  # KV heads per GPU
    head_dim: int
    vocab: int  # LM-head rows per GPU
    wb: float  # bytes per weight
    ab: float  # bytes per activation
    kb: float  # bytes per KV-cache element
    wbe: float = 0.0  # bytes per routed-expert weight (MXFP4: 4.25 / 8)

    @classmethod
    def of(cls, model: ModelSpec, par: Parallelism) -> "Shapes":
        tp = par.tp
        heads = model.num_heads // tp
        kv_heads = max(model.num_kv_heads // tp, 1)
        return cls(
            h=model.hidden_size,
            q=heads * model.head_dim,
            kv=kv_heads * model.head_dim,
            i=model.intermediate_size // tp,
            heads=heads,
            kv_heads=kv_heads,
            head_dim=model.head_dim,
            vocab=-(-model.vocab_size // tp),
            wb=model.weight_bits / 8,
            ab=model.act_bits / 8,
            kb=model.kv_bits / 8,
            wbe=model.expert_bits / 8,
        )


def _norm(name: str, d: int, s: Shapes) -> Kernel:
    return Kernel(name, "norm", (d, d, 0), _v(T=4 * d), _v(run=d * s.wb, T=2 * d * s.ab))


def _linear(name: str, d_in: int, d_out: int, s: Shapes, bias: bool = False) -> Kernel:
    return Kernel(
        name,
        "linear",
        (d_in, d_out, 0),
        _v(T=2 * d_in * d_out + (d_out if bias else 0)),
        _v(run=(d_in * d_out + (d_out if bias else 0)) * s.wb, T=(d_in + d_out) * s.ab),
    )


def _all_reduce(name: str, s: Shapes, tp: int) -> Kernel:
    frac = (tp - 1) / tp
    return Kernel(
        name,
        "all_reduce",
        (s.h, s.h, 0),
        _v(T=frac * s.h),
        _v(T=2 * s.h * s.ab),
        _v(T=2 * frac * s.h * s.ab),
    )


def _localize(k: Kernel, local: float) -> Kernel:
    """An attention kernel over full and local layers: the ``A``/``K`` coefficients split into full
    (share ``1 - local``) and windowed ``Aw``/``Kw`` (share ``local``)."""
    def split(v: tuple[float, ...]) -> tuple[float, ...]:
        run, T, A, K, n = v[:5]
        return (run, T, A * (1 - local), K * (1 - local), n, 0.0, A * local, K * local)
    return replace(k, flops=split(k.flops), mem_bytes=split(k.mem_bytes), net_bytes=split(k.net_bytes))


def _dense_mlp(model: ModelSpec, s: Shapes, dtype: str) -> list[Kernel]:
    ks: list[Kernel] = []
    if model.gated_mlp:
        ks += [_linear("gate_proj", s.h, s.i, s), _linear("up_proj", s.h, s.i, s)]
        ks.append(Kernel("act_mul", "activation", (s.i, s.i, 0), _v(T=5 * s.i), _v(T=3 * s.i * s.ab)))
    else:
        ks.append(_linear("up_proj", s.h, s.i, s))
        ks.append(Kernel("act", "activation", (s.i, s.i, 0), _v(T=4 * s.i), _v(T=2 * s.i * s.ab)))
    ks.append(_linear("down_proj", s.i, s.h, s))
    return [replace(k, dtype=dtype) if dtype and k.ktype == "linear" else k for k in ks]


def layer_kernels(model: ModelSpec, par: Parallelism, fused_attention: bool = True) -> list[Kernel]:
    """The kernels of one transformer layer on one GPU, in execution order. For models whose layers
    differ (dense and MoE layers, local and full attention, NoPE layers) each kernel carries its
    per-layer average (module docstring)."""
    s = Shapes.of(model, par)
    L = model.num_layers
    gd = model.gemm_dtype
    ks: list[Kernel] = [_norm("input_norm", s.h, s)]
    if model.is_mla:
        from .mla import mla_kernels

        ks += mla_kernels(model, par, s, gd)
        o_in = (model.num_heads // par.tp) * model.v_head_dim
    else:
        ks += [
            _linear("q_proj", s.h, s.q, s, model.qkv_bias),
            _linear("k_proj", s.h, s.kv, s, model.qkv_bias),
            _linear("v_proj", s.h, s.kv, s, model.qkv_bias),
        ]
        if gd:
            ks[1:] = [replace(k, dtype=gd) for k in ks[1:]]
        if model.qk_norm:
            qk = s.q + s.kv
            ks.append(Kernel("qk_norm", "norm", (qk, qk, s.head_dim), _v(T=4 * qk), _v(run=2 * s.head_dim * s.wb, T=2 * qk * s.ab)))
        rot = s.q + s.kv
        ks.append(Kernel("rope", "rope", (rot, rot, s.head_dim), _v(T=3 * rot), _v(T=2 * rot * s.ab))
                  .scaled((L - model.num_nope_layers) / L if model.num_nope_layers else 1.0))
        kv_write = 2 * s.kv * s.kb  # bytes per new token written to the KV cache
        if fused_attention:
            attn = [
                Kernel(
                    "attention",
                    "attention_fused",
                    (s.heads, s.kv_heads, s.head_dim),
                    _v(A=(4 * s.head_dim + 5) * s.heads),
                    _v(T=2 * s.q * s.ab + kv_write, K=2 * s.kv * s.kb),
                )
            ]
        else:
            attn = [
                Kernel("attn_qk", "attention_qk", (s.heads, s.kv_heads, s.head_dim), _v(A=2 * s.head_dim * s.heads),
                       _v(T=s.q * s.ab + kv_write, K=s.kv * s.kb, A=s.heads * s.ab)),
                Kernel("attn_softmax", "softmax", (s.heads, s.kv_heads, 0), _v(A=5 * s.heads), _v(A=2 * s.heads * s.ab)),
                Kernel("attn_sv", "attention_sv", (s.heads, s.kv_heads, s.head_dim), _v(A=2 * s.head_dim * s.heads),
                       _v(T=s.q * s.ab, K=s.kv * s.kb, A=s.heads * s.ab)),
            ]
        if model.num_local_layers:
            attn = [_localize(k, model.num_local_layers / L) for k in attn]
        ks += attn
        o_in = s.q
    o = _linear("o_proj", o_in, s.h, s)
    ks.append(replace(o, dtype=gd) if gd else o)
    if model.post_norms:
        ks.append(_norm("post_attn_out_norm", s.h, s))
    if par.tp > 1:
        ks.append(_all_reduce("attn_all_reduce", s, par.tp))
    ks.append(Kernel("residual_add_1", "residual_add", (s.h, s.h, 0), _v(T=s.h), _v(T=3 * s.h * s.ab)))
    ks.append(_norm("post_attention_norm", s.h, s))
    if not model.is_moe:
        ks += _dense_mlp(model, s, gd)
    else:
        from .moe import moe_kernels

        if model.num_dense_layers:
            ks += [k.scaled(model.num_dense_layers / L) for k in _dense_mlp(model, s, gd)]
        ks += [k.scaled(model.num_moe_layers / L) for k in moe_kernels(model, par, s, gd)]
    if model.post_norms:
        ks.append(_norm("post_mlp_out_norm", s.h, s))
    if par.tp > 1:
        ks.append(_all_reduce("mlp_all_reduce", s, par.tp))
    ks.append(Kernel("residual_add_2", "residual_add", (s.h, s.h, 0), _v(T=s.h), _v(T=3 * s.h * s.ab)))
    if par.pp > 1:
        per_layer = (par.pp - 1) / model.num_layers * s.h * s.ab
        ks.append(Kernel("pp_send_recv", "send_recv", (s.h, s.h, 0), _v(), _v(T=per_layer), _v(T=per_layer)))
    if extended(model):
        ks = [k.padded(len(EXTENDED_AGGREGATES)) for k in ks]
    return _weight_formats(ks, model, par)


def _weight_formats(ks: list[Kernel], model: ModelSpec, par: Parallelism | None = None) -> list[Kernel]:
    """Marks the GEMMs whose weights a GPU may have to convert on its CUDA cores (:mod:`.dequant`):
    MXFP4 routed experts, and every GEMM computing in FP8 (with its block-scale extent). Their weight
    elements are their weight bytes (the ``run`` and ``U`` coefficients of ``mem_bytes``) over the
    format's bytes per element. A block-scaled FP8 model's FP8 GEMMs also get their activation
    quantisation pass and, for routed experts, their padded M tiles (:mod:`.blockfp8`). A 16-bit
    model's kernels are returned unchanged."""
    mx = 0.0 < model.expert_weight_bits < 8
    if not mx and model.gemm_dtype != "fp8":
        return ks
    weight_cols = (0, 5)  # run, U (EXTENDED_AGGREGATES)
    out = []
    for k in ks:
        if mx and k.ktype == "expert_linear":
            fmt, per, block = "mxfp4", model.expert_bits / 8, 0
        elif k.dtype == "fp8":
            fmt, per = "fp8", (model.expert_bits if k.ktype == "expert_linear" else model.weight_bits) / 8
            block = model.weight_block_size
        else:
            out.append(k)
            continue
        elems = tuple(x / per if j in weight_cols else 0.0 for j, x in enumerate(k.mem_bytes))
        out.append(replace(k, wfmt=fmt, welems=elems, scale_block=int(block)))
    if model.weight_block_size and model.gemm_dtype == "fp8":
        from .blockfp8 import block_fp8_kernel

        names = {k.name for k in out}
        ep, tp = (par.ep, par.tp) if par is not None else (1, 1)
        pairs = model.experts_per_token * (tp if ep == 1 else 1) / tp if model.is_moe else 1.0  # as graph.moe
        out = [block_fp8_kernel(k, names, pairs, model.act_bits / 8) if k.wfmt == "fp8" else k for k in out]
    return out


def outside_kernels(model: ModelSpec, par: Parallelism) -> list[Kernel]:
    """Embedding, final norm, LM head and the TP collectives around them (per GPU, once per step)."""
    s = Shapes.of(model, par)
    tp = par.tp
    frac = (tp - 1) / tp
    ks = [
        Kernel("embedding", "embedding", (s.vocab, s.h, 0), _v(), _v(T=2 * s.h * s.ab)),
        _norm("final_norm", s.h, s),
        Kernel("lm_head", "linear", (s.h, s.vocab, 0), _v(n=2 * s.h * s.vocab), _v(run=s.h * s.vocab * s.wb, n=(s.h + s.vocab) * s.ab)),
    ]
    if tp > 1:
        ks.append(Kernel("embedding_all_reduce", "all_reduce", (s.h, s.h, 0), _v(T=frac * s.h), _v(T=2 * s.h * s.ab),
                         _v(T=2 * frac * s.h * s.ab)))
        ks.append(Kernel("logits_all_gather", "all_reduce", (s.vocab, s.vocab, 0), _v(), _v(n=2 * s.vocab * s.ab),
                         _v(n=frac * s.vocab * tp * s.ab)))
    if extended(model):
        ks = [k.padded(len(EXTENDED_AGGREGATES)) for k in ks]
    return ks
