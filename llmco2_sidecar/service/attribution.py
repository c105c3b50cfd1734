"""Attribution: a step's energy to its requests, and the idle gaps between steps.

Pure numpy over the columnar steps of one engine (S steps, R request slices); no Python loop per
request. The rules (DESIGN.md, "Serving-engine energy and carbon"):

* a step's GPU energy is split over its slices by ``shares`` (:func:`llmco2_sidecar.graph.request_shares`,
  each request's share of the step's modelled work; shares sum to 1 per step), into the slice's
  prefill bucket when it is a prefill slice, its decode bucket otherwise;
* serving-engine energy (:mod:`llmco2_sidecar.energy.serving`): the host's idle share while the
  step runs (``host_energy_j``), plus, for the idle gap before a step, ``P_idle x gap + E_form``
  where ``P_idle`` = host share + the GPUs' idle power. A gap before a step that carries a request
  that was already running (it waited through the gap) is charged to the step's requests by the
  same shares; a gap before a step of only new requests was an idle engine: that energy is
  **unattributed idle** energy, reported in window records, charged to no request;
* GPU time held (``gpu_s``, what embodied carbon is charged by: SCI's time reserved, not only time
  busy) follows the same rule: a step's duration and its attributed gap to its requests by shares,
  an unattributed gap's GPU time to no request (``idle_gpu_s``, window records).

Invariants (tested): per step, slice energies sum to the step's energy; over any set of steps,
attributed energy + unattributed idle energy = GPU step energy + serving energy; attributed GPU time
+ unattributed GPU time = (step durations + gaps) x GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..energy.serving import host_energy_j, serving_energy_j


class PredictionError(RuntimeError):
    """The predictor's output for some steps is unusable (wrong shape, not finite)."""


@dataclass
class StepEnergy:
    """Per-step and per-slice energies of one engine's steps, in J.

    Per step [S]: ``gpu_j`` (predicted GPU energy), ``prefill_gpu_j``, ``busy_host_j`` (host
    share during the step), ``gap_s`` (idle gap before the step), ``gap_attributed_j``,
    ``idle_j`` (unattributed), ``duration_s``, ``idle_gpu_s`` (GPU-seconds of an unattributed gap).
    Per slice [R]: ``prefill_j``, ``decode_j``, ``serving_j``, ``gpu_s`` (GPU-seconds held:
    share x (duration + attributed gap) x GPUs).
    """

    gpu_j: np.ndarray
    prefill_gpu_j: np.ndarray
    busy_host_j: np.ndarray
    gap_s: np.ndarray
    gap_attributed_j: np.ndarray
    idle_j: np.ndarray
    duration_s: np.ndarray
    prefill_j: np.ndarray
    decode_j: np.ndarray
    serving_j: np.ndarray
    gpu_s: np.ndarray
    idle_gpu_s: np.ndarray

    @property
    def step_total_j(self) -> np.ndarray:
        """Everything spent for each step, attributed or not: GPU + host + gap."""
        return self.gpu_j + self.busy_host_j + self.gap_attributed_j + self.idle_j

    @property
    def slice_total_j(self) -> np.ndarray:
        return self.prefill_j + self.decode_j + self.serving_j


def idle_gaps(start_s: np.ndarray, end_s: np.ndarray, last_end_s: float) -> np.ndarray:
    """Idle time before each step [S]: start minus the latest end so far (0 when overlapping).
    ``last_end_s``: the end of the engine's previous step; ``inf`` when there was none (no gap before
    the first step; the gaps between the steps given still count)."""
    if start_s.shape[0] == 0:
        return np.zeros(0)
    first = last_end_s if last_end_s != np.inf else -np.inf  # -inf: the first step's gap is not finite -> 0
    prev = np.maximum.accumulate(np.concatenate(([first], end_s[:-1])))
    gap = start_s - prev
    gap[~np.isfinite(gap)] = 0.0
    return np.maximum(gap, 0.0)


def attribute(step_of: np.ndarray, shares: np.ndarray, is_prefill: np.ndarray, continuing: np.ndarray,
              gpu_j: np.ndarray, prefill_gpu_j: np.ndarray, duration_s: np.ndarray, gap_s: np.ndarray,
              idle_power_w: float, host_busy_w: float, formation_j: float, n_gpus: int) -> StepEnergy:
    """Split each step's energy over its slices.

    Args:
        step_of: int64 [R] step index of each slice. shares: float64 [R], sum 1 per step.
        is_prefill: bool [R]. continuing: bool [S], the step carries a request that ran before it.
        gpu_j, prefill_gpu_j, duration_s, gap_s: float64 [S].
        idle_power_w: host share + GPUs' idle power during gaps. host_busy_w: host share during steps.
        formation_j: E_form per step. n_gpus: GPUs of the replica.
    """
    gap_j = serving_energy_j(gap_s, idle_power_w, formation_j)
    gap_attr = np.where(continuing, gap_j, formation_j)
    idle = gap_j - gap_attr
    busy_host = host_energy_j(duration_s, host_busy_w)
    slice_gpu = shares * gpu_j[step_of]
    prefill = np.where(is_prefill, slice_gpu, 0.0)
    decode = slice_gpu - prefill
    serving = shares * (busy_host + gap_attr)[step_of]
    held_s = np.where(continuing, duration_s + gap_s, duration_s)
    gpu_s = shares * (held_s * n_gpus)[step_of]
    idle_gpu_s = np.where(continuing, 0.0, gap_s) * n_gpus
    return StepEnergy(gpu_j=gpu_j, prefill_gpu_j=prefill_gpu_j, busy_host_j=busy_host, gap_s=gap_s,
                      gap_attributed_j=gap_attr, idle_j=idle, duration_s=duration_s, prefill_j=prefill,
                      decode_j=decode, serving_j=serving, gpu_s=gpu_s, idle_gpu_s=idle_gpu_s)
