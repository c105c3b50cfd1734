"""A step's Roofline time in closed form: the fast path of the duration model and the engine simulator.

Every kernel's compute, memory and network time is linear in five per-step aggregates (:func:`_time_form`),
so the Roofline time of many steps is one matrix product and a max: :func:`step_roofline_s`, at a fraction
of :func:`~.builder.step_features`' cost. :func:`step_time_split` also gives the part of it spent in
compute-bound kernels, which the duration model stretches by the GPU's measured GEMM efficiency
(:mod:`llmco2_sidecar.hardware.kernel_efficiency`).
"""

from __future__ import annotations

import numpy as np

from ..predictor.api import Deployment
from ..workload import StepBatch
from .aggregates import aggregates
from .builder import layer_graph
from .kernel_time import graph_simt, kernel_peaks
from .kernels import extended


def _kernel_times(dep: Deployment, steps: StepBatch, fused_attention: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(t [S, 3K], weights [K], n_requests [S])``: each kernel's compute, memory and network time (three
    column blocks) per step, the kernels' counts, and the requests of each step."""
    form = _DEP_FORMS.get((id(dep), fused_attention))
    if form is None or form[0] is not dep:  # first call for this deployment object
        form = (dep, extended(dep.model), *_time_form(dep, fused_attention))
        if len(_DEP_FORMS) > 64:
            _DEP_FORMS.clear()
        _DEP_FORMS[(id(dep), fused_attention)] = form
    _, ext, w, weights = form
    S = steps.n_steps
    if ext:  # MoE / local attention: the extra aggregates (U, Aw, Kw)
        agg = aggregates(steps, dep).step
    else:
        new = steps.new_tokens.astype(np.float64)
        ctx = steps.context_tokens.astype(np.float64)
        idx = steps.request_step
        agg = np.empty((S, 5))
        agg[:, 1] = np.bincount(idx, weights=new, minlength=S)
        agg[:, 2] = np.bincount(idx, weights=new * ctx + new * (new + 1) / 2, minlength=S)
        agg[:, 3] = np.bincount(idx, weights=ctx + new, minlength=S)
        agg[:, 4] = np.bincount(idx, minlength=S)
        agg[:, 0] = agg[:, 4] > 0
    return agg @ w, weights, agg[:, 4].copy()


def step_roofline_s(dep: Deployment, steps: StepBatch, fused_attention: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(roofline_s [S], n_requests [S])`` alone, the inputs of a step-duration model (the whole step only:
    no prefill / decode blocks, no node features). The engine simulator calls it once per simulated step
    or run of steps."""
    t, weights, n = _kernel_times(dep, steps, fused_attention)
    K = weights.shape[0]
    m = np.maximum(t[:, :K], t[:, K:2 * K])  # element-wise (a max over the middle axis of [S, 3, K] is slower)
    np.maximum(m, t[:, 2 * K:], out=m)
    return m @ weights, n


def step_time_split(dep: Deployment, steps: StepBatch, fused_attention: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(roofline_s [S], compute_bound_s [S], n_requests [S])``: :func:`step_roofline_s` and the part of
    it in kernels whose compute time bounds them (ties count as compute-bound)."""
    t, weights, n = _kernel_times(dep, steps, fused_attention)
    K = weights.shape[0]
    c = t[:, :K]
    m = np.maximum(c, t[:, K:2 * K])
    np.maximum(m, t[:, 2 * K:], out=m)
    return m @ weights, np.where(c >= m, c, 0.0) @ weights, n


#: per deployment object (checked once, kept with it): (dep, extended?, W, weights) of _time_form
_DEP_FORMS: dict = {}


def _time_form(dep: Deployment, fused_attention: bool) -> tuple[np.ndarray, np.ndarray]:
    """``W [5, 3K]`` and ``weights [K]`` so that a step's Roofline time is ``max3(agg @ W) @ weights``:
    every kernel's compute, memory and network time is linear in the step aggregates (what
    :func:`roofline` computes; layers count ``num_layers`` times, the outside kernels once)."""
    g = layer_graph(dep, fused_attention)
    gpu = dep.gpu
    peak = gpu.peak_flops(gpu.dtype_for_bits(dep.model.act_bits))
    key = (peak, gpu.mem_bandwidth_bytes_s, gpu.interconnect_bytes_s, dep.model.num_layers,
           tuple(sorted(gpu.dense_tflops.items())))  # the CUDA-core part depends on the GPU's formats and FP32 rate
    cache = g.__dict__.setdefault("_time_forms", {})  # kept on the (cached) layer graph, as its coefficients
    hit = cache.get(key)
    if hit is not None:
        return hit
    if any(k.dtype for k in g.kernels + g.outside):  # per-kernel peaks (FP8 GEMMs)
        peak = np.concatenate([np.broadcast_to(kernel_peaks(g.kernels, dep), (g.n_nodes,)),
                               np.broadcast_to(kernel_peaks(g.outside, dep), (len(g.outside),))])
    cf = np.concatenate([g.coefs[0], g.outside_coefs[0]], axis=1)
    cm = np.concatenate([g.coefs[1], g.outside_coefs[1]], axis=1)
    cn = np.concatenate([g.coefs[2], g.outside_coefs[2]], axis=1)
    cc = cf / peak
    s_lay, s_out = graph_simt(g, dep)
    if s_lay is not None or s_out is not None:  # CUDA-core seconds inside the compute time (graph.dequant)
        cc = cc + np.concatenate([np.zeros_like(g.coefs[0]) if s_lay is None else s_lay,
                                  np.zeros_like(g.outside_coefs[0]) if s_out is None else s_out], axis=1)
    w = np.concatenate([cc, cm / gpu.mem_bandwidth_bytes_s, cn / gpu.interconnect_bytes_s], axis=1)
    weights = np.concatenate([np.full(g.n_nodes, float(dep.model.num_layers)), np.ones(len(g.outside))])
    cache[key] = out = (np.ascontiguousarray(w), weights)
    return out
