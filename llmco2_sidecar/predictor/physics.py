"""Physical facts every prediction obeys on any catalog GPU, seen in training or not.

* **Roofline floor on time.** A step never runs faster than its Roofline time on that GPU (the sum
  over its kernels of max(FLOPs / peak, bytes / bandwidth, network bytes / link bandwidth), from the
  kernel graph). Predicted durations are built on top of it (:class:`~.prior.DurationModel`);
  observed durations are facts and are kept as given.
* **Power window.** Over a step the replica's GPUs draw at least their idle power and at most their
  power limit: ``n x idle_w x t <= E <= n x tdp_w x t``. :func:`apply_power_bounds` enforces it and
  :class:`GuardStats` counts how often either side had to act (the product reports the count; with a
  physical prior it should be rare, and it is a defect worth a look when it is not).
* **Loaded idle.** A GPU holding a CUDA context (a serving engine) sits in a higher DVFS state than a
  bare idle one. Time a step spends beyond its Roofline time (host overhead, an older engine's
  scheduler) is charged at this loaded-idle power, not busy power (:func:`loaded_idle_w`).

Loaded idle = ``idle_ctx_w`` where the catalog gives one, else ``idle_w`` + the CUDA-context step
measured by Vadari (arXiv 2605.23918, 2026): +26-50 W on HBM parts (H100, A100; we use the middle,
38 W), +66 W on the GDDR6 L40S. For the 72 W L4 the L40S step scaled by TDP (66/350 x 72 = 13.6 W) is
an ASSUMPTION, flagged in the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hardware.idle import context_step_w
from ..hardware.spec import GPUSpec

def loaded_idle_w(gpu: GPUSpec) -> float:
    """Idle power of one GPU holding a CUDA context (a serving engine between kernels), in W."""
    ctx = float(getattr(gpu, "idle_ctx_w", 0.0) or 0.0)
    if ctx > 0:
        return ctx
    step, _ = context_step_w(gpu.architecture, gpu.tdp_w)  # the catalog's own rule (hardware/idle.py)
    return min(gpu.idle_w + step, 0.5 * gpu.tdp_w)


def dynamic_range_w(gpu: GPUSpec) -> float:
    """Power a GPU can add above loaded idle: ``tdp_w - loaded_idle_w``, in W."""
    return max(gpu.tdp_w - loaded_idle_w(gpu), 1.0)


@dataclass
class GuardStats:
    """How often the power window had to act on predicted steps (cumulative).

    Attributes:
        steps: steps predicted.
        tdp_bound: steps whose predicted energy exceeded ``n x tdp_w x t`` and were lowered to it.
        idle_bound: steps predicted below ``n x idle_w x t`` and raised to it.
    """

    steps: int = 0
    tdp_bound: int = 0
    idle_bound: int = 0

    def describe(self) -> str:
        return (f"power guard: TDP cap bound {self.tdp_bound} of {self.steps} steps, "
                f"idle floor bound {self.idle_bound}")


def power_bounds_j(n_gpus: int, gpu: GPUSpec, duration_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` energy of a step lasting ``duration_s`` on ``n_gpus`` GPUs, in J."""
    t = np.asarray(duration_s, dtype=np.float64)
    return n_gpus * gpu.idle_w * t, n_gpus * gpu.tdp_w * t


#: The soft power window (:func:`soft_window_log`): sharpness ``p`` and the cap's share of the power limit.
SOFT_WINDOW_P = 8.0
SOFT_WINDOW_CAP = 0.98


def soft_window_log(log_e, log_lo, log_hi, xp=np):
    """A step's log energy moved smoothly inside the power window, by construction (models trained
    with it never need the hard guard): a soft minimum with ``0.98 x`` the cap, then a soft maximum
    with the idle floor, both p-norms (``p = 8``) in log space::

        c = (e^-p + (0.98 hi)^-p)^(-1/p)      (< min(e, 0.98 hi))
        out = (c^p + lo^p)^(1/p)              (> max(c, lo); < hi while lo < 0.78 hi)

    ``e`` well inside the window (``2 lo <= e <= hi / 2``) is kept to within 0.1%.
    ``xp``: ``numpy`` or ``torch`` (training differentiates through it)."""
    p = SOFT_WINDOW_P
    lh = log_hi + float(np.log(SOFT_WINDOW_CAP))
    if xp is np:
        lc = -np.logaddexp(-p * log_e, -p * lh) / p
        return np.logaddexp(p * lc, p * log_lo) / p
    lc = -xp.logaddexp(-p * log_e, -p * lh) / p
    return xp.logaddexp(p * lc, p * log_lo) / p


def apply_power_bounds(energy_j: np.ndarray, prefill_j: np.ndarray, low_j: np.ndarray, high_j: np.ndarray,
                       stats: GuardStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clip step energies into ``[low, high]``; the prefill part keeps its share of the step."""
    e = np.asarray(energy_j, dtype=np.float64)
    clipped = np.clip(e, low_j, high_j)
    share = np.divide(prefill_j, e, out=np.zeros_like(e), where=e > 0)
    if stats is not None:
        stats.steps += int(e.size)
        stats.tdp_bound += int(np.count_nonzero(e > high_j))
        stats.idle_bound += int(np.count_nonzero(e < low_j))
    return clipped, clipped * share
