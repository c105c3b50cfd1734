"""Physics prior and duration model: a few non-negative coefficients fitted on measured data.

Prior energy of a step on ``n`` GPUs of one kind (all in J), every term scaled by that GPU's own
datasheet facts so that a GPU absent from the training data still gets a physical estimate::

    E = c_idle * n * P_loaded * t                   (loaded-idle power over the whole step)
      + sum_k c_k * n * (TDP - P_loaded) * min(t, m_k * t_roof)   (busy time: kernels running)
      + c_flop * (TDP - P_loaded) * (FLOPs / peak + s_simt)   (busy compute: GPU-seconds x dynamic range)
      + c_byte * (TDP - P_loaded) * bytes / BW       (busy memory traffic)
      + c_net  * (TDP - P_loaded) * net bytes / link (collectives)

``t`` is the step's wall time (observed, or from :class:`DurationModel`); FLOPs and bytes are the
replica's totals from the kernel graph; ``s_simt`` the replica's CUDA-core GPU-seconds (weights converted
to 16 bits where the tensor cores lack their format, block-scaled FP8 scaling: :mod:`~..graph.dequant`;
zero for 16-bit models), charged at the compute fraction ``c_flop`` (no coefficient of its own: a
format held out of training could not teach one); ``P_loaded`` is the GPU's idle power with a CUDA context
(:func:`~.physics.loaded_idle_w`), ``peak`` its dense peak for the activation data type, ``BW`` its
memory bandwidth and ``link`` its interconnect bandwidth. The ``c_*`` are dimensionless and shared by
all GPUs: ``c_flop`` and ``c_byte`` are the fractions of the dynamic range a fully compute- or
memory-bound kernel draws. The fit keeps the coefficients physical (:func:`fit_physical`), so the
prior's power stays between the GPU's idle power and its power limit on any GPU. Real kernels run slower than their Roofline time; while they run the GPU
sits in its busy clock state whatever the FLOPs. The busy-time terms say how much: with the
non-negative ``c_k`` over the multiples ``m_k`` (:data:`BUSY_MULTIPLES`) their sum is a concave,
increasing, piecewise-linear function of ``t`` that stops growing at ``4 x t_roof``. Time beyond
that (host overhead, an older engine's scheduler: ML.ENERGY v2's vLLM 0.4.2 steps last 4-7 x their
Roofline time) adds only the first term, so it is charged at loaded-idle power. The process node enters through the datasheet ratio (TDP - idle) / peak (joules
per FLOP at full load); with three GPU kinds (N7, 4N, 4NP) a separate node term could not be told
apart from the GPU itself. The prefill part uses the prefill phase's FLOPs and bytes and the prefill
share of the Roofline time.

(Until 2026-12-06 the prior used absolute W/GPU, J/FLOP and J/byte shared by H100 and B200; with A100
rows from ML.ENERGY v2 in the data, the scaled form is the one that can transfer.)

Duration when none is observed: ``t = b + k * b + t0 + t_req * requests`` with ``k, t0, t_req >= 0``
(non-negative least squares on relative error), where the base ``b`` is the step's Roofline time with its
compute-bound kernels stretched to the GPU's measured GEMM compute efficiency (``base="kernel"``,
:mod:`~llmco2_sidecar.hardware.kernel_efficiency`: ``b = roofline + compute_bound x (1 / e - 1)``; no
training source times a prefill, so that regime takes Vidur's measured figure, while the memory-bound
regime keeps what the modern engine's own decode steps fit) or, in model files before 2026-12-07, the
Roofline time itself (``base="roofline"``). Either way a predicted step is never faster than its Roofline
time on that GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..graph import StepFeatures
from ..graph.step_time import step_roofline_s, step_time_split
from ..hardware.kernel_efficiency import efficiency
from .api import Deployment
from .physics import dynamic_range_w, loaded_idle_w

#: Kernel-time multiples of the Roofline time for the busy-time terms (see module docstring).
BUSY_MULTIPLES = (1.0, 1.5, 2.0, 3.0, 4.0)
#: Low-precision busy terms: ``min(t, m t_roof16) - min(t, m t_roof)`` with ``t_roof16`` the step's
#: Roofline time were the same model's weights and GEMMs 16-bit (KV cache as it is). Zero for a 16-bit
#: model. With a positive coefficient a low-precision model's kernels keep the GPU busy for part of
#: the time its 16-bit twin would need: small-batch FP8 / MXFP4 kernels (scales, activation
#: quantisation, dequantisation to 16-bit where the GPU lacks the format) run further from their
#: format's Roofline than 16-bit ones. Whether the prior uses them is chosen per training set by
#: inner leave-one-architecture-out (:meth:`PhysicsPrior.fit`).
LOWP_MULTIPLES = (1.0, 2.0)
PRIOR_TERMS = (("loaded_idle_time",) + tuple(f"busy_time_x{m:g}" for m in BUSY_MULTIPLES) + ("compute", "memory", "network")
               + tuple(f"lowp_busy_x{m:g}" for m in LOWP_MULTIPLES))
N_BASE_TERMS = 1 + len(BUSY_MULTIPLES) + 3
DURATION_TERMS = ("roofline_s", "constant", "requests")


def prior_terms(dep: Deployment, f: StepFeatures, duration_s: np.ndarray, steps,
                low_precision_terms: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Prior design matrices ``(total [S, 4], prefill [S, 4])`` in J (see module docstring): loaded-idle
    energy over the step, and compute, memory and network busy time x the GPU's dynamic range."""
    t = np.asarray(duration_s, dtype=np.float64)
    n_idle, n_dyn, j_flop, j_byte, j_net = _gpu_constants(dep)
    S, nb, nl = t.shape[0], len(BUSY_MULTIPLES), len(LOWP_MULTIPLES)
    total = np.empty((S, 4 + nb + nl))
    np.multiply(n_idle, t, out=total[:, 0])
    busy = total[:, 1:1 + nb]
    np.minimum(t[:, None], f.roofline_s[:, None] * _BUSY, out=busy)
    busy *= n_dyn
    np.multiply(j_flop, f.flops, out=total[:, 1 + nb])
    simt = f.simt_s  # None: no CUDA-core work on this GPU (16-bit models)
    has_simt = simt is not None
    if has_simt:  # CUDA-core GPU-seconds (16-bit conversion, block-scale promotion: graph.dequant)
        total[:, 1 + nb] += (n_dyn / dep.n_gpus) * simt
    np.multiply(j_byte, f.memory_bytes, out=total[:, 2 + nb])
    np.multiply(j_net, f.network_bytes, out=total[:, 3 + nb])
    lowp = total[:, 4 + nb:]
    if low_precision_terms and is_low_precision(dep.model):  # busy time a 16-bit twin would add (0 for 16-bit)
        t16 = roofline16_s(dep, f, steps)
        for k, m in enumerate(LOWP_MULTIPLES):
            lowp[:, k] = n_dyn * np.maximum(np.minimum(t, m * t16) - np.minimum(t, m * f.roofline_s), 0.0)
    else:
        lowp[:] = 0.0
    roof_sum = f.roofline_s_prefill + f.roofline_s_decode
    has_prefill = f.prefill_tokens > 0
    share = np.where(has_prefill, f.roofline_s_prefill / np.maximum(roof_sum, 1e-30), 0.0)
    pre = np.empty_like(total)
    np.multiply(total[:, :1 + nb], share[:, None], out=pre[:, :1 + nb])
    np.multiply(j_flop, f.flops_prefill, out=pre[:, 1 + nb])
    if has_simt:
        pre[:, 1 + nb] += (n_dyn / dep.n_gpus) * f.simt_s_prefill
    np.multiply(j_byte, f.memory_bytes_prefill, out=pre[:, 2 + nb])
    np.multiply(j_net, f.network_bytes_prefill, out=pre[:, 3 + nb])
    np.multiply(lowp, share[:, None], out=pre[:, 4 + nb:])
    pre[~has_prefill] = 0.0
    return total, pre


_BUSY = np.array(BUSY_MULTIPLES, dtype=np.float64)
_GPU_CONSTANTS: dict = {}


def _gpu_constants(dep: Deployment) -> tuple[float, ...]:
    """``(n x loaded idle W, n x dynamic range W, J per FLOP, J per byte, J per network byte)`` of the
    deployment's GPU (n = its GPU count), computed once per GPU object and number format."""
    gpu = dep.gpu
    key = (id(gpu), dep.model.act_bits, dep.n_gpus)
    hit = _GPU_CONSTANTS.get(key)
    if hit is not None and hit[0] is gpu:
        return hit[1]
    p_idle = loaded_idle_w(gpu)
    dyn = dynamic_range_w(gpu)
    out = (dep.n_gpus * p_idle, dep.n_gpus * dyn, dyn / gpu.peak_flops(gpu.dtype_for_bits(dep.model.act_bits)),
           dyn / gpu.mem_bandwidth_bytes_s, dyn / gpu.interconnect_bytes_s)
    if len(_GPU_CONSTANTS) > 256:
        _GPU_CONSTANTS.clear()
    _GPU_CONSTANTS[key] = (gpu, out)
    return out


def is_low_precision(model) -> bool:
    """Weights or weight GEMMs narrower than 16 bits (FP8, MXFP4, ...)."""
    return model.weight_bits < 16 or bool(model.expert_weight_bits and model.expert_weight_bits < 16) or bool(
        model.gemm_dtype and model.gemm_dtype not in ("bf16", "fp16"))


def roofline16_s(dep: Deployment, f: StepFeatures, steps) -> np.ndarray:
    """The steps' Roofline time were the model's weights and GEMMs 16-bit (``f.roofline_s`` for a 16-bit
    model; otherwise one more :func:`~..graph.step_time.step_roofline_s` pass over the same steps)."""
    from dataclasses import replace

    if not is_low_precision(dep.model):
        return f.roofline_s

    m16 = replace(dep.model, weight_bits=16, act_bits=max(dep.model.act_bits, 16), expert_weight_bits=0.0, gemm_dtype="")
    t16, _ = step_roofline_s(replace(dep, model=m16), steps)
    return np.maximum(np.asarray(t16, dtype=np.float64), f.roofline_s)


def fit_relative_nnls(a: np.ndarray, y: np.ndarray, upper: np.ndarray | None = None) -> np.ndarray:
    """Non-negative ``c`` (at most ``upper`` where given) minimising ``sum(((a @ c - y) / y)^2)``."""
    from scipy.optimize import lsq_linear, nnls  # training only: inference must not need scipy

    a = np.asarray(a, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    scale = np.maximum(np.abs(a / y[:, None]).max(axis=0), 1e-300)
    m = a / y[:, None] / scale
    if upper is None:
        c, _ = nnls(m, np.ones_like(y))
    else:
        c = lsq_linear(m, np.ones_like(y), bounds=(np.zeros(a.shape[1]), np.asarray(upper) * scale)).x
    return c / scale


def idle_floor_ratio() -> float:
    """The largest bare-idle / loaded-idle ratio over the catalog GPUs: ``c_idle`` at least this keeps
    the prior above every GPU's bare idle power."""
    from ..hardware.catalog import load_catalog
    from .physics import loaded_idle_w

    return max(g.idle_w / loaded_idle_w(g) for g in load_catalog().gpus.values())


def fit_physical(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Prior coefficients minimising ``sum(((a @ c - y) / y)^2)`` inside the physical set:

    * ``idle_floor_ratio() <= c_idle <= 1``: between bare idle and loaded idle over the whole step;
    * every other ``c >= 0``, and the busy-time terms plus any one of the compute, memory and network
      fractions ``<= 1``: a step bound by one resource never exceeds the GPU's dynamic range.

    With a step no shorter than its Roofline time every utilisation is <= 1, so the prior's power lies
    in ``[idle_w, tdp_w]`` for steps bound by one resource; a step at the ridge point (compute and
    memory both near their peak) can exceed it by at most the smaller fraction, where the product's
    power window acts (counted, tested over the catalog)."""
    from scipy.optimize import minimize  # training only

    a = np.asarray(a, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = a / y[:, None]
    scale = np.maximum(np.abs(m).max(axis=0), 1e-300)
    ms = m / scale
    k = a.shape[1]
    lo_idle = idle_floor_ratio()
    bounds = [(lo_idle * scale[0], 1.0 * scale[0])] + [(0.0, None)] * (k - 1)
    nb = len(BUSY_MULTIPLES)
    busy_cols = list(range(1, 1 + nb)) + list(range(1 + nb + 3, k))  # busy time, then the low-precision busy terms
    frac_cols = list(range(1 + nb, 1 + nb + 3))  # compute, memory, network
    cons = []
    for j in frac_cols:  # busy time + each busy fraction <= 1
        row = np.zeros(k)
        row[busy_cols] = 1.0 / scale[busy_cols]
        row[j] = 1.0 / scale[j]
        cons.append({"type": "ineq", "fun": lambda z, r=row: 1.0 - r @ z, "jac": lambda z, r=row: -r})
    start = fit_relative_nnls(a, y) * scale
    start = np.clip(start, [b[0] for b in bounds], [b[1] if b[1] is not None else np.inf for b in bounds])
    start[1:] = 0.0  # feasible start
    res = minimize(lambda z: float(np.sum((ms @ z - 1.0) ** 2)), start, jac=lambda z: 2 * ms.T @ (ms @ z - 1.0),
                   bounds=bounds, constraints=cons, method="SLSQP", options={"maxiter": 500, "ftol": 1e-12})
    c = np.maximum(res.x, 0.0) / scale
    c[0] = min(max(c[0], lo_idle), 1.0)
    worst = c[busy_cols].sum() + c[frac_cols].max()
    if worst > 1.0:  # solver tolerance
        c[1:] /= worst
    return c


@dataclass
class PhysicsPrior:
    """``E = terms @ coef`` (see module docstring)."""

    coef: np.ndarray = field(default_factory=lambda: np.array([1.0] + [0.0] * (len(BUSY_MULTIPLES) - 1) + [0.3, 0.5, 0.5, 0.0]
                                                              + [0.0] * len(LOWP_MULTIPLES)))
    #: whether the fit kept the low-precision busy terms (chosen by inner cross-validation)
    low_precision_terms: bool = False

    def __post_init__(self):
        c = np.asarray(self.coef, dtype=np.float64)
        if c.size < len(PRIOR_TERMS):  # a model file from before the low-precision terms: they are 0
            c = np.concatenate([c, np.zeros(len(PRIOR_TERMS) - c.size)])
        self.coef = c

    def energy(self, terms: np.ndarray) -> np.ndarray:
        return np.asarray(terms) @ self.coef

    def fit(self, example_terms: np.ndarray, targets: np.ndarray, groups=None) -> "PhysicsPrior":
        """``example_terms [K, T]``: each example's weighted sum of step terms divided by its
        normaliser (so ``example_terms @ coef`` predicts the example's target).

        ``groups`` (the examples' architectures): when given, with low-precision rows and at least
        three architectures, the low-precision busy terms are kept only if they lower the mean
        per-architecture MAPE of an inner leave-one-architecture-out over these examples (the
        training side only)."""
        a = np.asarray(example_terms, dtype=np.float64)
        y = np.asarray(targets, dtype=np.float64)
        base = _fit_design(a, y, False)
        self.coef, self.low_precision_terms = base, False
        if groups is None or not np.any(a[:, N_BASE_TERMS:] > 0):
            return self
        g = np.asarray(groups)
        values = sorted(set(g.tolist()))
        if len(values) < 3:
            return self
        score = {}
        for lowp in (False, True):
            errs = []
            for v in values:
                test = g == v
                c = _fit_design(a[~test], y[~test], lowp)
                errs.append(np.mean(np.abs(a[test] @ c / y[test] - 1)))
            score[lowp] = float(np.mean(errs))
        self.cv_mape = {"without": score[False] * 100, "with": score[True] * 100}
        if score[True] < score[False]:
            self.coef, self.low_precision_terms = _fit_design(a, y, True), True
        return self


def _fit_design(a: np.ndarray, y: np.ndarray, low_precision_terms: bool) -> np.ndarray:
    """Without the low-precision terms: :func:`fit_physical` on the base terms over every row (the
    low-precision terms 0). With them, two stages: the base terms from the 16-bit rows alone (a
    low-precision kernel's distance from its format's Roofline must not bend the 16-bit physics),
    then the low-precision busy coefficients from the low-precision rows with the base fixed, bounded
    so the busy terms plus any one busy fraction stay <= 1 (the power limit)."""
    from scipy.optimize import lsq_linear  # training only

    nb = len(BUSY_MULTIPLES)
    c = np.zeros(a.shape[1])
    lowp = a[:, N_BASE_TERMS:].sum(axis=1) > 0
    if not low_precision_terms or lowp.all() or (~lowp).sum() < 10 or not lowp.any():
        c[:N_BASE_TERMS] = fit_physical(a[:, :N_BASE_TERMS], y)
        return c
    c[:N_BASE_TERMS] = fit_physical(a[~lowp, :N_BASE_TERMS], y[~lowp])
    room = 1.0 - c[1:1 + nb].sum() - c[1 + nb:N_BASE_TERMS].max()
    if room <= 1e-9:
        return c
    al, yl = a[lowp], y[lowp]
    m = al[:, N_BASE_TERMS:] / yl[:, None]
    rhs = 1.0 - al[:, :N_BASE_TERMS] @ c[:N_BASE_TERMS] / yl
    scale = np.maximum(np.abs(m).max(axis=0), 1e-300)
    x = lsq_linear(m / scale, rhs, bounds=(np.zeros(m.shape[1]), np.full(m.shape[1], room) * scale)).x / scale
    if x.sum() > room:
        x *= room / x.sum()
    c[N_BASE_TERMS:] = x
    return c


#: what the duration model adds its overheads to (see the module docstring)
DURATION_BASES = ("kernel", "roofline")


@dataclass
class DurationModel:
    """Step wall time when none is observed (see module docstring)."""

    #: ``(k, t0, t_req)``: extra time per base second, per step and per request (all >= 0).
    coef: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 0.0]))
    #: ``"kernel"``: compute-bound kernels at the GPU's measured GEMM efficiency; ``"roofline"``: the
    #: Roofline time (model files without ``duration_base``)
    base: str = "roofline"

    def __post_init__(self) -> None:
        if self.base not in DURATION_BASES:
            raise ValueError(f"duration base {self.base!r} is not one of {', '.join(DURATION_BASES)}")

    def base_s(self, dep, steps) -> tuple[np.ndarray, np.ndarray]:
        """``(base_s [S], n_requests [S])`` of each step (see the module docstring)."""
        if self.base == "kernel":
            roof, compute, n = step_time_split(dep, steps)
            return roof + compute * (1.0 / efficiency(dep.gpu) - 1.0), n
        return step_roofline_s(dep, steps)

    def step_terms(self, dep, steps) -> np.ndarray:
        """``[S, 3]``: each step's base time, 1 and its requests (what :attr:`coef` multiplies)."""
        base, n = self.base_s(dep, steps)
        return np.stack([base, np.ones_like(base), n], axis=1)

    def predict_steps_s(self, dep, steps) -> np.ndarray:
        """Never below the Roofline time (the coefficients are non-negative, the efficiency <= 1). The
        engine simulator's hot path: one or a few steps per call, so no stacked terms."""
        base, n = self.base_s(dep, steps)
        k, t0, t_req = np.maximum(self.coef, 0.0)
        return np.maximum(base * (1.0 + k) + t0 + t_req * n, 1e-6)

    def fit(self, example_terms: np.ndarray, observed_s: np.ndarray) -> "DurationModel":
        """``example_terms [K, 3]``: each example's probability-weighted mean of :meth:`step_terms`;
        ``observed_s [K]``: its observed mean step time. Minimises the relative error of
        ``base + terms @ coef``."""
        from scipy.optimize import nnls  # training only

        a = np.asarray(example_terms, dtype=np.float64)
        y = np.asarray(observed_s, dtype=np.float64)
        rhs = 1.0 - a[:, 0] / y
        m = a / y[:, None]
        scale = np.maximum(np.abs(m).max(axis=0), 1e-300)
        c, _ = nnls(m / scale, rhs)
        self.coef = c / scale
        return self
