"""``llmco2 graph``'s table: each kernel's figures for one step, and the GPU's ridge points."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..predictor.api import Deployment
from ..workload import StepBatch
from .aggregates import aggregates
from .builder import kernel_peaks, layer_graph, roofline


@dataclass(frozen=True)
class KernelRow:
    """One line of ``llmco2 graph``: one kernel, per GPU, for one layer (or once per step for the
    outside kernels)."""

    name: str
    ktype: str
    scope: str  # "layer" or "model"
    flops: float
    mem_bytes: float
    net_bytes: float
    intensity: float  # MAI (FLOP/byte of memory), or NAI for network kernels
    roofline_tflops: float  # attainable performance min(peak, BW x intensity)
    bound: str
    time_s: float


def kernel_table(dep: Deployment, steps: StepBatch, step_index: int = 0, fused_attention: bool = True) -> list[KernelRow]:
    """Per-kernel figures of one step, for display."""
    g = layer_graph(dep, fused_attention)
    ag = aggregates(steps, dep).step[step_index:step_index + 1]
    gpu = dep.gpu
    rows = []
    for scope, ks in (("layer", g.kernels), ("model", g.outside)):
        r = roofline(ks, ag, dep)
        peaks = np.broadcast_to(kernel_peaks(ks, dep), (len(ks),))
        for j, k in enumerate(ks):
            peak = float(peaks[j])
            f, mb, nb = r.flops[0, j], r.mem_bytes[0, j], r.net_bytes[0, j]
            if k.is_network:
                inten = f / nb if nb else 0.0
                attain = min(peak, gpu.interconnect_bytes_s * inten)
            else:
                inten = f / mb if mb else 0.0
                attain = min(peak, gpu.mem_bandwidth_bytes_s * inten)
                if r.simt_s is not None and r.simt_s[0, j] > 0:  # CUDA-core work inside its time (graph.dequant, graph.blockfp8)
                    attain = min(attain, f / float(r.time_s[0, j]))
            rows.append(KernelRow(k.name, k.ktype, scope, f, mb, nb, inten, attain / 1e12,
                                  ("compute", "memory", "network")[int(r.bound[0, j])], float(r.time_s[0, j])))
    return rows


def ridge_points(dep: Deployment) -> tuple[float, float]:
    """(MRP, NRP): FLOP per memory byte and per network byte where a kernel turns compute-bound."""
    gpu = dep.gpu
    peak = gpu.peak_flops(gpu.dtype_for_bits(dep.model.act_bits))
    return peak / gpu.mem_bandwidth_bytes_s, peak / gpu.interconnect_bytes_s
