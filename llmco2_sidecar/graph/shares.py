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
from .aggregates import aggregates, slice_aggregates
from .builder import _coefs, kernel_peaks, layer_graph, roofline

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


def _peaks(g, dep: Deployment) -> tuple:
    """Each kernel group's compute peaks (:func:`~.builder.kernel_peaks`) on ``dep``'s GPU and number
    format, kept on the graph with its groups."""
    gpu = dep.gpu
    key = (id(gpu), dep.model.act_bits)
    cache = g.__dict__.setdefault("_share_peaks", {})
    hit = cache.get(key)
    if hit is not None and hit[0] is gpu:
        return hit[1]
    peaks = tuple(kernel_peaks(ks, dep) for ks, _ in _groups(g))
    cache[key] = (gpu, peaks)
    return peaks


def request_shares(dep: Deployment, steps: StepBatch) -> np.ndarray:
    """float64 [R]: share of its step's energy for each request slice; sums to 1 per step."""
    if steps.n_slices == 0:
        return np.zeros(0)
    g = layer_graph(dep)
    L = dep.model.num_layers
    S = steps.n_steps
    idx = steps.request_step
    agg = aggregates(steps, dep).step
    (attn, c_attn), (token_layer, c_tl), (token_outside, c_to), (logit, c_logit) = _groups(g)
    p_attn, p_tl, p_to, p_logit = _peaks(g, dep)

    t_token = L * roofline(token_layer, agg, dep, c_tl, p_tl, with_bound=False).time_s.sum(1)
    t_token += roofline(token_outside, agg, dep, c_to, p_to, with_bound=False).time_s.sum(1)
    t_logit = roofline(logit, agg, dep, c_logit, p_logit, with_bound=False).time_s.sum(1)

    new = steps.new_tokens.astype(np.float64)
    ctx = steps.context_tokens.astype(np.float64)
    per = slice_aggregates(new, ctx, dep.model)
    # each slice's own attention time (as if alone), then the step's attention time split by it
    t_attn_slice = L * roofline(attn, per, dep, c_attn, p_attn, with_bound=False).time_s.sum(1)
    t_attn = np.bincount(idx, weights=t_attn_slice, minlength=S)

    tokens = np.bincount(idx, weights=new, minlength=S)
    n = np.bincount(idx, minlength=S).astype(np.float64)
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
