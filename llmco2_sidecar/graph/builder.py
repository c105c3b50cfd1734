"""The kernel graph of engine steps with Roofline features, vectorised over many steps.

``step_features(dep, steps)`` turns a :class:`~llmco2_sidecar.workload.StepBatch` into tensors ready
for PyG: one layer graph per step (the topology is fixed per deployment, so ``edge_index`` is
shared), node features ``[S, N, F]`` and global features ``[S, G]``, plus raw per-step totals for
the whole replica. Each node carries three feature sets: the whole step, its prefill slices alone
and its decode slices alone (the paper's separate prefill and decode features). A slice is prefill
when it computes more than one token or starts from an empty context.

Cost: O(R) numpy work for R request slices plus one ``[S, 5] x [5, N]`` product per quantity; no
Python loop over steps or kernels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from ..predictor.api import Deployment
from ..errors import InputError
from ..workload import StepBatch
from .aggregates import StepAggregates, aggregates, slice_aggregates  # noqa: F401  (re-exported)
from .kernel_time import Roofline, _coefs, graph_peaks, graph_simt, kernel_peaks, roofline  # noqa: F401  (re-exported)
from .edges import layer_edges
from .kernels import AGGREGATES, KERNEL_TYPES, Kernel, layer_kernels, outside_kernels

PHASES = ("step", "prefill", "decode")
_PER_PHASE = ("log_flops", "log_mem_bytes", "log_net_bytes", "log_time_us", "log_mai", "log_perf_tflops", "bound_memory")
NODE_FEATURE_NAMES = (
    [f"type_{t}" for t in KERNEL_TYPES]
    + ["log_dim0", "log_dim1", "log_dim2"]
    + [f"{p}_{f}" for p in PHASES for f in _PER_PHASE]
)
GLOBAL_FEATURE_NAMES = (
    "log_batch", "log_prefill_tokens", "log_decode_tokens", "log_mean_context", "log_max_context",
    "log_flops", "log_mem_bytes", "log_net_bytes", "log_flops_prefill", "log_flops_decode",
    "log_mem_bytes_prefill", "log_mem_bytes_decode", "log_roofline_s", "log_duration_s", "has_duration",
    "weight_bits", "act_bits", "kv_bits", "log_hidden", "log_intermediate", "log_heads", "log_kv_heads", "log_layers",
    "log_params", "tp", "pp", "log_peak_tflops", "log_mem_bw_tb_s", "log_net_bw_gb_s", "log_mrp", "log_nrp",
    "tdp_kw", "idle_kw", "log_n_gpus",
    # appended with MoE support (a model trained before reads them with zero weights, predictor.gnn)
    "log_active_params", "log1p_experts", "experts_per_token", "mean_weight_bits",
    # appended 2026-12-07: 1 for block-scaled FP8 weights (models/precision.py), else 0
    "fp8_block_scaled",
    # appended 2026-12-07: log1p of the step's CUDA-core microseconds (weight conversion to 16 bits
    # where the tensor cores lack the format, block-scaled FP8 promotion and activation quantisation;
    # graph.dequant, graph.blockfp8), 0 for most
    "log_simt_us",
)


@dataclass(frozen=True)
class LayerGraph:
    """Topology of one layer on one deployment: kernel names, types and the DAG's edges."""

    kernels: tuple[Kernel, ...]
    edge_index: np.ndarray  # int64 [2, E]
    outside: tuple[Kernel, ...]

    @property
    def names(self) -> list[str]:
        return [k.name for k in self.kernels]

    # computed once per (cached) graph: every step featurisation needs them
    @functools.cached_property
    def coefs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _coefs(self.kernels)

    @functools.cached_property
    def outside_coefs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _coefs(self.outside)

    @functools.cached_property
    def static_nodes(self) -> np.ndarray:
        """``[N, len(KERNEL_TYPES) + 3]``: each kernel's type (one-hot) and log1p of its dimensions."""
        onehot = np.zeros((len(self.kernels), len(KERNEL_TYPES)))
        onehot[np.arange(len(self.kernels)), [KERNEL_TYPES.index(k.ktype) for k in self.kernels]] = 1.0
        dims = np.log1p(np.array([k.dims for k in self.kernels], dtype=np.float64))
        return np.concatenate([onehot, dims], axis=1)

    @property
    def types(self) -> list[str]:
        return [k.ktype for k in self.kernels]

    @property
    def n_nodes(self) -> int:
        return len(self.kernels)


@functools.lru_cache(maxsize=256)
def _layer_graph(model, par, fused: bool) -> LayerGraph:
    ks = layer_kernels(model, par, fused_attention=fused)
    index = {k.name: j for j, k in enumerate(ks)}
    edges = layer_edges(ks)
    ei = np.array([[index[a] for a, _ in edges], [index[b] for _, b in edges]], dtype=np.int64)
    return LayerGraph(kernels=tuple(ks), edge_index=ei, outside=tuple(outside_kernels(model, par)))


def check_deployment(dep: Deployment) -> None:
    m, p = dep.model, dep.parallel
    if m.num_heads % p.tp:
        raise InputError("tp", f"{p.tp} does not divide the {m.num_heads} attention heads of {m.name}",
                         "a divisor of num_attention_heads")
    if (not m.is_moe or m.num_dense_layers) and m.intermediate_size % p.tp:
        raise InputError("tp", f"{p.tp} does not divide intermediate_size={m.intermediate_size}")
    if p.ep > 1 and not m.is_moe:
        raise InputError("ep", f"{m.name} has no experts to spread", "1 for a dense model")
    if m.is_moe:
        if p.ep == 1 and m.expert_intermediate_size % p.tp:
            raise InputError("tp", f"{p.tp} does not divide the expert intermediate size {m.expert_intermediate_size}",
                             "a divisor, or expert parallelism (ep)")
        if m.num_experts % p.ep:
            raise InputError("ep", f"{p.ep} does not divide the {m.num_experts} experts of {m.name}")
        if m.shared_expert_intermediate_size % p.tp:
            raise InputError("tp", f"{p.tp} does not divide the shared-expert size {m.shared_expert_intermediate_size}")
    if p.pp > m.num_layers:
        raise InputError("pp", f"{p.pp} stages exceed the {m.num_layers} layers of {m.name}", f"<= {m.num_layers}")


def layer_graph(dep: Deployment, fused_attention: bool = True) -> LayerGraph:
    check_deployment(dep)
    return _layer_graph(dep.model, dep.parallel, fused_attention)


@dataclass
class StepFeatures:
    """Graph tensors and raw totals for S steps of one deployment.

    Attributes:
        node_x: float32 [S, N, F] node features (names in ``node_feature_names``).
        global_x: float32 [S, G] global features (names in ``global_feature_names``).
        edge_index: int64 [2, E], the layer DAG shared by every step.
        flops, memory_bytes, network_bytes: float64 [S], whole replica (all layers, all GPUs,
            embedding and LM head included), and their ``*_prefill`` / ``*_decode`` parts (each phase
            costed alone, so weight reads count in both when a step mixes them).
        roofline_s: float64 [S], the step's Roofline time (layers run one after another, PP stages too).
        simt_s, simt_s_prefill, simt_s_decode: float64 [S], the CUDA-core GPU-seconds of the whole
            replica (all GPUs, like ``flops``; :mod:`.dequant`); None where no kernel has any on this GPU
            (16-bit models, formats the GPU reads natively).
        simt_path_s: float64 [S] or None, the CUDA-core seconds inside ``roofline_s`` (one GPU's path).
        prefill_tokens, decode_tokens, n_requests: float64 [S].
    """

    node_x: np.ndarray
    global_x: np.ndarray
    edge_index: np.ndarray
    flops: np.ndarray
    memory_bytes: np.ndarray
    network_bytes: np.ndarray
    flops_prefill: np.ndarray
    flops_decode: np.ndarray
    memory_bytes_prefill: np.ndarray
    memory_bytes_decode: np.ndarray
    network_bytes_prefill: np.ndarray
    network_bytes_decode: np.ndarray
    roofline_s: np.ndarray
    roofline_s_prefill: np.ndarray
    roofline_s_decode: np.ndarray
    prefill_tokens: np.ndarray
    decode_tokens: np.ndarray
    n_requests: np.ndarray
    duration_s: np.ndarray
    node_feature_names: tuple[str, ...] = field(default=tuple(NODE_FEATURE_NAMES))
    global_feature_names: tuple[str, ...] = field(default=GLOBAL_FEATURE_NAMES)
    #: ``node_major=True`` only: the dynamic node features ``[N, S, 21]`` (:func:`node_major_block`)
    #: while ``node_x`` is empty ``[S, N, 0]``; the static ones are ``layer_graph.static_nodes``
    node_dyn: np.ndarray | None = None
    layer_graph: LayerGraph | None = None
    simt_s: np.ndarray | None = None
    simt_s_prefill: np.ndarray | None = None
    simt_s_decode: np.ndarray | None = None
    simt_path_s: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        return int(self.node_x.shape[0])


def _phase_features(r: Roofline) -> list[np.ndarray]:
    """The seven per-phase node features (:data:`_PER_PHASE`), each shaped as ``r``'s arrays."""
    eps = 1e-30
    mai = r.flops / np.maximum(r.mem_bytes, eps)
    perf = r.flops / np.maximum(r.time_s, eps) / 1e12
    return [np.log1p(r.flops), np.log1p(r.mem_bytes), np.log1p(r.net_bytes), np.log1p(r.time_s * 1e6),
            np.log1p(mai), np.log1p(perf), (r.bound == 1).astype(np.float64)]


def _phase_block(r: Roofline) -> np.ndarray:
    return np.stack(_phase_features(r), axis=-1)


def node_major_block(lay3: Roofline, S: int) -> np.ndarray:
    """float32 ``[N, S, 3 x 7]``: the dynamic node features of S steps (the last ``3 x 7`` columns of
    :attr:`StepFeatures.node_x`, same values) laid out node-major, from the layer Roofline of the
    three row blocks (step, prefill, decode) of :func:`_totals`. The fused inference forward reads
    this layout (one adjacency product for every step).

    The same element-wise formulas as :func:`_phase_features`, evaluated on node-major views of the
    Roofline arrays and written straight into the float32 result (each value computed in float64
    and rounded once, as ``astype`` does): no ``[7, 3S, N]`` stack and transposed copy."""
    N = lay3.flops.shape[1]
    out = np.empty((N, S, 3, len(_PER_PHASE)), np.float32)

    def nm(a: np.ndarray) -> np.ndarray:  # [3S, N] -> node-major view [N, S, 3]
        return a.reshape(3, S, N).transpose(2, 1, 0)

    eps = 1e-30
    flops, mem, time = nm(lay3.flops), nm(lay3.mem_bytes), nm(lay3.time_s)
    log1p = np.log1p
    log1p(flops, out=out[..., 0])
    log1p(mem, out=out[..., 1])
    log1p(nm(lay3.net_bytes), out=out[..., 2])
    log1p(time * 1e6, out=out[..., 3])
    log1p(flops / np.maximum(mem, eps), out=out[..., 4])
    log1p(flops / np.maximum(time, eps) / 1e12, out=out[..., 5])
    np.equal(nm(lay3.bound), 1, out=out[..., 6])
    return out.reshape(N, S, -1)


def duration_globals(dur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The global features that depend on the step duration: ``(log1p(duration in us) or 0 where
    unknown, has_duration)``, float64 [S] each."""
    has = np.isfinite(dur)
    return np.log1p(np.where(has, dur, 0.0) * 1e6), has.astype(np.float64)


def _totals(dep: Deployment, g: LayerGraph, agg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Roofline,
                                                                      np.ndarray]:
    """Replica totals (flops, mem, net, time) for aggregates ``agg``, the layer Roofline and the CUDA-core
    seconds along one GPU's path (None where no kernel has any on this GPU: 16-bit models)."""
    L, tp = dep.model.num_layers, dep.parallel.tp
    p_lay, p_out = graph_peaks(g, dep)
    s_lay, s_out = graph_simt(g, dep)
    lay = roofline(g.kernels, agg, dep, g.coefs, p_lay, simt=s_lay)
    out = roofline(g.outside, agg, dep, g.outside_coefs, p_out, with_bound=False, simt=s_out)
    flops = tp * (L * lay.flops.sum(1) + out.flops.sum(1))
    mem = tp * (L * lay.mem_bytes.sum(1) + out.mem_bytes.sum(1))
    net = tp * (L * lay.net_bytes.sum(1) + out.net_bytes.sum(1))
    time = L * lay.time_s.sum(1) + out.time_s.sum(1)
    simt = None if lay.simt_s is None else L * lay.simt_s.sum(1)
    if out.simt_s is not None:
        simt = out.simt_s.sum(1) + (0.0 if simt is None else simt)
    return flops, mem, net, time, lay, simt


def step_features(dep: Deployment, steps: StepBatch, fused_attention: bool = True, with_nodes: bool = True,
                  node_major: bool = False) -> StepFeatures:
    """Kernel-graph features of every step in ``steps`` (see module docstring).

    ``with_nodes=False`` skips the node and global feature tensors (``node_x`` is then ``[S, N, 0]``,
    ``global_x`` ``[S, 0]``) for callers that need only the totals, such as the analytic predictor.
    ``node_major=True`` gives the dynamic node features node-major in ``node_dyn`` instead of
    ``node_x`` (the fused inference forward's layout; same values).
    """
    g = layer_graph(dep, fused_attention)
    ag = aggregates(steps, dep)
    S, N = steps.n_steps, g.n_nodes
    # the whole step, its prefill slices and its decode slices in one pass (three row blocks of S)
    f3, m3, n3, t3, lay3, s3 = _totals(dep, g, np.concatenate([ag.step, ag.prefill, ag.decode]))
    f_s, f_p, f_d = f3[:S], f3[S:2 * S], f3[2 * S:]
    m_s, m_p, m_d = m3[:S], m3[S:2 * S], m3[2 * S:]
    n_s, n_p, n_d = n3[:S], n3[S:2 * S], n3[2 * S:]
    t_s, t_p, t_d = t3[:S], t3[S:2 * S], t3[2 * S:]
    totals = dict(flops=f_s, memory_bytes=m_s, network_bytes=n_s, flops_prefill=f_p, flops_decode=f_d,
                  memory_bytes_prefill=m_p, memory_bytes_decode=m_d, network_bytes_prefill=n_p,
                  network_bytes_decode=n_d, roofline_s=t_s, roofline_s_prefill=t_p, roofline_s_decode=t_d,
                  prefill_tokens=ag.prefill[:, 1].copy(), decode_tokens=ag.decode[:, 1].copy(),
                  n_requests=ag.step[:, 4].copy(), duration_s=steps.duration_s.copy(),
                  **({} if s3 is None else _simt_totals(s3, S, dep.parallel.tp)))

    if not with_nodes:
        return StepFeatures(node_x=np.zeros((S, N, 0), np.float32), global_x=np.zeros((S, 0), np.float32),
                            edge_index=g.edge_index, **totals)
    node_dyn = None
    if node_major:
        node_x = np.zeros((S, N, 0), np.float32)
        node_dyn = node_major_block(lay3, S)
    else:
        static = np.broadcast_to(g.static_nodes, (S, N, g.static_nodes.shape[1]))
        blocks = _phase_block(lay3)  # [3S, N, 7]
        node_x = np.concatenate([static, blocks[:S], blocks[S:2 * S], blocks[2 * S:]], axis=2).astype(np.float32)
    log_dur, has = duration_globals(steps.duration_s)
    per_step = np.log1p(np.stack([
        ag.step[:, 4], ag.prefill[:, 1], ag.decode[:, 1], ag.mean_context, ag.max_context, f_s, m_s, n_s, f_p, f_d,
        m_p, m_d, t_s * 1e6], axis=1))
    const = _global_constants(dep)
    glob = np.empty((S, per_step.shape[1] + 3 + const.size), np.float32)
    glob[:, :per_step.shape[1]] = per_step
    glob[:, per_step.shape[1]] = log_dur
    glob[:, per_step.shape[1] + 1] = has
    glob[:, per_step.shape[1] + 2:-1] = const
    glob[:, -1] = 0.0 if s3 is None else np.log1p(s3[:S] * 1e6)
    return StepFeatures(node_x=node_x, global_x=glob, edge_index=g.edge_index, node_dyn=node_dyn, layer_graph=g,
                        **totals)


def _simt_totals(s3: np.ndarray, S: int, tp: int) -> dict:
    """The CUDA-core fields of :class:`StepFeatures` from one GPU's path seconds of the three row blocks."""
    rep = tp * s3
    return dict(simt_path_s=s3[:S], simt_s=rep[:S], simt_s_prefill=rep[S:2 * S], simt_s_decode=rep[2 * S:])


def _global_constants(dep: Deployment) -> np.ndarray:
    """The deployment's constant global features (model, parallelism, GPU), float64; computed once
    per deployment."""
    cache = _CONSTANTS
    key = (id(dep.model), id(dep.gpu), dep.parallel)  # the objects are kept with the entry: ids stay theirs
    hit = cache.get(key)
    if hit is not None and hit[0] is dep.model and hit[1] is dep.gpu:
        return hit[2]
    m, gpu, par = dep.model, dep.gpu, dep.parallel
    peak = gpu.peak_flops(gpu.dtype_for_bits(m.act_bits))
    log = math.log
    const = np.array([
        m.weight_bits, m.act_bits, m.kv_bits, log(m.hidden_size), log(m.intermediate_size), log(m.num_heads),
        log(m.num_kv_heads), log(m.num_layers), log(m.total_params), par.tp, par.pp, log(peak / 1e12),
        log(gpu.mem_bandwidth_gb_s / 1e3), log(gpu.interconnect_bytes_s / 1e9), log(peak / gpu.mem_bandwidth_bytes_s),
        log(peak / gpu.interconnect_bytes_s), gpu.tdp_w / 1e3, gpu.idle_w / 1e3, log(dep.n_gpus),
        log(m.active_params), math.log1p(m.num_experts), m.experts_per_token, m.mean_weight_bits,
        1.0 if m.weight_bits == 8 and m.weight_block_size > 0 else 0.0], dtype=np.float64)
    const.setflags(write=False)
    if len(cache) > 256:
        cache.clear()
    cache[key] = (dep.model, dep.gpu, const)
    return const


_CONSTANTS: dict = {}
