"""Per-engine accounting shared by the live sidecar (:mod:`llmco2_sidecar.service.pipeline`) and the
offline replay (:mod:`llmco2_sidecar.sim.replay`): one code path from engine steps to per-request
energy and carbon.

* :func:`resolve_accounting`: the carbon settings of one replica, through the sidecar's own
  :func:`~llmco2_sidecar.service.records.make_accounting` (same defaults, same checks);
* :func:`predict_with_shares`: the sidecar's :func:`~llmco2_sidecar.service.prediction.predict_step_batch`;
* :func:`account_steps`: idle gaps, then :func:`~llmco2_sidecar.service.attribution.attribute`
  (the pipeline calls it for every engine's steps);
* :func:`operational_g` / :func:`embodied_g`: energy and GPU-seconds to grams, as the records do.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ..workload import StepBatch


def gpu_idle_w(acc) -> float:
    """The replica's GPUs' idle power (the part of ``acc.idle_power_w`` that is not the host's)."""
    return acc.idle_power_w - acc.host_busy_w


def resolve_accounting(dep, pue: float | None = None, carbon_intensity_g_per_kwh: float | None = None,
                       region: str | None = None, host_idle_w_per_gpu: float | None = None,
                       formation_j: float | None = None, lifetime_years: float | None = None) -> "Accounting":  # noqa: F821 (service.records.Accounting)
    """The replica's settings; ``None`` takes each module's stated default."""
    from ..service.records import make_accounting

    cfg = SimpleNamespace(pue=pue, carbon_intensity_g_per_kwh=carbon_intensity_g_per_kwh, region=region,
                          host_idle_w_per_gpu=host_idle_w_per_gpu, formation_j=formation_j,
                          lifetime_years=lifetime_years)
    return make_accounting(cfg, dep)


def operational_g(energy_j, acc, ci_g_per_kwh=None):
    """gCO2e of ``energy_j`` (scalar or array) at the replica's PUE and grid intensity (or ``ci_g_per_kwh``,
    scalar or array, for a time-varying intensity); the records' formula."""
    ci = acc.ci_g_per_kwh if ci_g_per_kwh is None else ci_g_per_kwh
    return energy_j * acc.pue / 3.6e6 * ci


def embodied_g(gpu_s, acc):
    """Embodied gCO2e charged for ``gpu_s`` GPU-seconds held."""
    return gpu_s * acc.embodied_g_per_gpu_s


def predict_with_shares(predictor, dep, sb: StepBatch) -> tuple:
    """(energy_j [S], prefill_energy_j [S], duration_s [S], shares [R]): the sidecar's prediction call."""
    from ..service.prediction import predict_step_batch

    return predict_step_batch(predictor, dep, sb)


def account_steps(step_of: np.ndarray, context_tokens: np.ndarray, is_prefill: np.ndarray, start_s: np.ndarray,
                  end_s: np.ndarray, predicted: tuple, last_end_s: float, acc):
    """Split S steps of one engine over their R request slices (attribution rules in
    :mod:`llmco2_sidecar.service.attribution`); ``last_end_s``: end of the engine's previous step
    (``inf`` when none: no idle gap before the first step). Returns the
    :class:`~llmco2_sidecar.service.attribution.StepEnergy`."""
    from ..service.attribution import attribute, idle_gaps

    energy_j, prefill_energy_j, duration_s, shares = predicted
    S = start_s.shape[0]
    gap = idle_gaps(start_s, end_s, last_end_s)
    continuing = np.bincount(step_of, weights=(context_tokens > 0), minlength=S) > 0
    return attribute(step_of, shares, is_prefill, continuing, energy_j, prefill_energy_j, duration_s, gap,
                     acc.idle_power_w, acc.host_busy_w, acc.formation_j, acc.n_gpus)
