"""Each request's share of an engine step's modelled work, for attributing the step's energy.

A step's Roofline time splits into three parts, each shared by its own rule:

* token-proportional kernels (projections, MLP, norms, RoPE, residual adds, collectives, embedding):
  by tokens computed in the step -- a decode shares the weight reads with the rest of the batch in
  proportion to the one token it adds;
* attention kernels: by each request's own attention Roofline time, which follows its context
  (query x key pairs and the KV cache it reads);
* the LM head and the logits gather: one equal part per request slice (one logit row each).

Shares are non-negative and sum to 1 within each step (tested).
"""

from __future__ import annotations

import numpy as np

from ..predictor.api import Deployment
from ..workload import StepBatch
from .aggregates import aggregates
from .builder import _coefs, kernel_peaks, layer_graph
from .dequant import simt_seconds

_ATTENTION = ("attention_fused", "attention_qk", "softmax", "attention_sv", "attention_mla")


def _groups(g) -> tuple:
    """The attention, token-proportional (layer / outside) and logit kernels of ``g``, each with
    its Roofline coefficients; computed once per (cached) graph and kept on it, as its own
    coefficients are (:class:`~.builder.LayerGraph`)."""
    groups = g.__dict__.get("_share_groups")
    if groups is None:
        attn = [k for k in g.kernels if k.ktype in _ATTENTION]
        token_layer = [k for k in g.kernels if k.ktype not in _ATTENTION]
        token_outside = [k for k in g.outside if k.name in ("embedding", "final_norm", "embedding_all_reduce")]
        logit = [k for k in g.outside if k.name in ("lm_head", "logits_all_gather")]
        groups = g.__dict__["_share_groups"] = tuple((ks, _coefs(ks)) for ks in (attn, token_layer, token_outside, logit))
    return groups


def _forms(g, dep: Deployment) -> tuple:
    """``(W_step [w, 3K], weights [K, 2], W_attn [w, 3Ka], L)`` for ``dep``: every kernel's compute,
    memory and network time is linear in the aggregates (``agg @ W``, as :func:`~.builder.roofline`
    computes them), its Roofline time the largest of the three. ``weights`` sums the token-proportional
    kernels (layers ``num_layers`` times) into column 0 and the logit kernels into column 1. Kept on
    the (cached) graph per GPU, number format and layer count."""
    gpu = dep.gpu
    L = dep.model.num_layers
    key = (id(gpu), dep.model.act_bits, L)
    cache = g.__dict__.setdefault("_share_forms", {})
    hit = cache.get(key)
    if hit is not None and hit[0] is gpu:
        return hit[1]

    def form(ks, coefs):
        cf, cm, cn = coefs
        peak = kernel_peaks(ks, dep)
        cc = cf / peak
        simt = simt_seconds(ks, gpu) if ks else None
        if simt is not None:  # CUDA-core seconds inside the compute time, as builder.roofline
            cc = cc + simt
        return np.ascontiguousarray(np.concatenate(
            [cc, cm / gpu.mem_bandwidth_bytes_s, cn / gpu.interconnect_bytes_s], axis=1))

    (attn, c_attn), (token_layer, c_tl), (token_outside, c_to), (logit, c_logit) = _groups(g)
    w_step = [form(ks, c).reshape(c[0].shape[0], 3, -1) for ks, c in ((token_layer, c_tl), (token_outside, c_to),
                                                                        (logit, c_logit))]
    w_step = np.concatenate(w_step, axis=2).reshape(w_step[0].shape[0], -1)
    k1, k2, k3 = len(token_layer), len(token_outside), len(logit)
    weights = np.zeros((k1 + k2 + k3, 2))
    weights[:k1, 0] = float(L)
    weights[k1:k1 + k2, 0] = 1.0
    weights[k1 + k2:, 1] = 1.0
    out = (w_step, weights, form(attn, c_attn), np.full(len(attn), float(L)))
    cache[key] = (gpu, out)
    return out


def _max3(t: np.ndarray, k: int) -> np.ndarray:
    """``[n, k]``: the largest of the three column blocks of ``t [n, 3k]`` (compute, memory, network
    time); two element-wise maxima (a max-reduction over the middle axis of ``[n, 3, k]`` is slow for
    small ``k``: 120 us for 2,048 slices and k = 1)."""
    m = np.maximum(t[:, :k], t[:, k:2 * k])
    return np.maximum(m, t[:, 2 * k:], out=m)


def request_shares(dep: Deployment, steps: StepBatch) -> np.ndarray:
    """float64 [R]: share of its step's energy for each request slice; sums to 1 per step."""
    if steps.n_slices == 0:
        return np.zeros(0)
    g = layer_graph(dep)
    S = steps.n_steps
    idx = steps.request_step
    ag = aggregates(steps, dep)
    agg = ag.step
    w_step, weights, w_attn, l_attn = _forms(g, dep)
    # token-proportional and logit time of each step: [S, 2]
    tt = _max3(agg @ w_step, weights.shape[0]) @ weights
    t_token, t_logit = tt[:, 0], tt[:, 1]
    # each slice's own attention time (as if alone), then the step's attention time split by it
    per = ag.slices  # [R, w]: each slice's aggregates (the same rows the step sums are made of)
    m = _max3(per @ w_attn, l_attn.shape[0])
    t_attn_slice = m[:, 0] * l_attn[0] if l_attn.shape[0] == 1 else m @ l_attn
    t_attn = np.bincount(idx, weights=t_attn_slice, minlength=S)

    new = per[:, 1]
    tokens = agg[:, 1]  # the step's new tokens (the same sums as a bincount over its slices)
    n = agg[:, 4]  # slices per step
    total = t_token + t_logit + t_attn
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (t_token[idx] * new / tokens[idx] + t_logit[idx] / n[idx] + t_attn_slice) / total[idx]
    bad = ~np.isfinite(share)
    if bad.any():  # degenerate step (zero modelled time): equal split
        share[bad] = 1.0 / n[idx][bad]
    # exact normalisation against rounding
    sums = np.bincount(idx, weights=share, minlength=S)
    return share / sums[idx]


__all__ = ["request_shares"]
