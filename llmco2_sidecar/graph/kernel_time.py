"""Roofline time of kernels on one GPU: per-kernel FLOPs, memory and network bytes from the step
aggregates, each kernel's compute peak for its data type, and the CUDA-core work of weight conversion
(:mod:`.dequant`). Used by the step features (:mod:`.builder`), the request shares and ``llmco2 graph``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..predictor.api import Deployment
from .dequant import simt_seconds

if TYPE_CHECKING:
    from .builder import LayerGraph


def _coefs(kernels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([k.flops for k in kernels]).T, np.array([k.mem_bytes for k in kernels]).T,
            np.array([k.net_bytes for k in kernels]).T)


@dataclass
class Roofline:
    """Per-step, per-kernel quantities ``[S, N]`` for one GPU and one layer (or the outside kernels)."""

    flops: np.ndarray
    mem_bytes: np.ndarray
    net_bytes: np.ndarray
    time_s: np.ndarray
    bound: np.ndarray  # int8: 0 compute, 1 memory, 2 network
    #: CUDA-core seconds of each kernel (weight conversion, block-scale promotion: :mod:`.dequant`),
    #: inside ``time_s``'s compute part; None where no kernel has any on this GPU
    simt_s: np.ndarray | None = None


_AUTO = object()


def roofline(kernels, agg: np.ndarray, dep: Deployment, coefs=None, peaks=None, with_bound: bool = True,
             simt=_AUTO) -> Roofline:
    """Roofline time of each kernel: max(FLOPs / peak + CUDA-core ops / their rate, bytes / memory BW,
    network bytes / link BW) (the CUDA-core part: :mod:`.dequant`, zero for 16-bit models).
    ``coefs``: ``_coefs(kernels)`` when the caller has them already (:class:`LayerGraph` keeps them),
    ``peaks``: ``kernel_peaks(kernels, dep)`` likewise, ``simt``: ``simt_seconds(kernels, dep.gpu)``
    likewise. ``with_bound=False`` leaves ``bound`` None."""
    cf, cm, cn = _coefs(kernels) if coefs is None else coefs
    flops, mem, net = agg @ cf, agg @ cm, agg @ cn
    gpu = dep.gpu
    peak = kernel_peaks(kernels, dep) if peaks is None else peaks
    if simt is _AUTO:
        simt = simt_seconds(kernels, gpu)
    tf, tm, tn = flops / peak, mem / gpu.mem_bandwidth_bytes_s, net / gpu.interconnect_bytes_s
    ts = None
    if simt is not None:
        ts = agg @ simt
        tf = tf + ts
    t_mn = np.maximum(tm, tn)
    time = np.maximum(tf, t_mn)
    bound = None
    if with_bound:  # the first of the three at the maximum (argmax): compute, memory, network
        bound = np.where(tf >= t_mn, 0, np.where(tm >= tn, 1, 2)).astype(np.int8)
    return Roofline(flops, mem, net, time, bound, ts)


def graph_peaks(g: LayerGraph, dep: Deployment) -> tuple:
    """``(kernel_peaks(g.kernels), kernel_peaks(g.outside))`` for ``dep``'s GPU and number format,
    kept on the (cached) layer graph."""
    gpu = dep.gpu
    key = (id(gpu), dep.model.act_bits)
    cache = g.__dict__.setdefault("_peaks", {})
    hit = cache.get(key)
    if hit is not None and hit[0] is gpu:
        return hit[1]
    out = (kernel_peaks(g.kernels, dep), kernel_peaks(g.outside, dep))
    cache[key] = (gpu, out)
    return out


def graph_simt(g: LayerGraph, dep: Deployment) -> tuple:
    """``(simt_seconds(g.kernels), simt_seconds(g.outside))`` on ``dep``'s GPU, kept on the (cached)
    layer graph (each None where no kernel has CUDA-core work there)."""
    gpu = dep.gpu
    cache = g.__dict__.setdefault("_simt", {})
    hit = cache.get(id(gpu))
    if hit is not None and hit[0] is gpu:
        return hit[1]
    out = (simt_seconds(g.kernels, gpu), simt_seconds(g.outside, gpu))
    cache[id(gpu)] = (gpu, out)
    return out


def kernel_peaks(kernels, dep: Deployment):
    """The compute peak (FLOP/s) of each kernel: the activations' data type, or the kernel's own
    (FP8 GEMMs) where the GPU lists a peak for it (else its BF16 peak). A scalar when all agree."""
    gpu = dep.gpu
    base = gpu.peak_flops(gpu.dtype_for_bits(dep.model.act_bits))
    if not any(k.dtype for k in kernels):
        return base
    return np.array([gpu.peak_flops(k.dtype) if k.dtype else base for k in kernels])
