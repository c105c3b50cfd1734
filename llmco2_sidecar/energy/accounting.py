"""Per-engine accounting shared by the live sidecar (:mod:`llmco2_sidecar.service.pipeline`) and the
offline replay (:mod:`llmco2_sidecar.sim.replay`): one code path from engine steps to per-request
energy and carbon.

* :func:`resolve_accounting`: the carbon settings of one replica (PUE, grid intensity, serving-engine
  power, embodied carbon per GPU-second), from the same defaults and checks;
* :func:`predict_with_shares`: the predictor's step energies and each request slice's share;
* :func:`account_steps`: idle gaps, then :func:`~llmco2_sidecar.service.attribution.attribute`;
* :func:`operational_g` / :func:`embodied_g`: energy and GPU-seconds to grams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..workload import StepBatch


@dataclass
class Accounting:
    """Carbon settings resolved for one engine replica.

    ``idle_power_w``: host share + the GPUs' idle power (drawn during idle gaps); ``host_busy_w``:
    the host share alone (drawn while steps run); ``formation_j``: E_form per step;
    ``embodied_g_per_gpu_s``: embodied gCO2e per GPU-second held; ``n_gpus``: GPUs of the replica.
    """

    pue: float
    ci_g_per_kwh: float
    region: str
    idle_power_w: float
    host_busy_w: float
    formation_j: float
    embodied_g_per_gpu_s: float
    n_gpus: int

    @property
    def gpu_idle_w(self) -> float:
        """The replica's GPUs' idle power (part of ``idle_power_w``)."""
        return self.idle_power_w - self.host_busy_w


def resolve_accounting(dep, pue: float | None = None, carbon_intensity_g_per_kwh: float | None = None,
                       region: str | None = None, host_idle_w_per_gpu: float | None = None,
                       formation_j: float | None = None, lifetime_years: float | None = None) -> Accounting:
    """The replica's settings; ``None`` takes each module's stated default."""
    from . import carbon, embodied, serving

    n = dep.n_gpus
    power = serving.serving_power(dep.gpu, n, host_idle_w_per_gpu,
                                  serving.DEFAULT_FORMATION_J if formation_j is None else formation_j)
    pue_v = carbon.check_pue(carbon.DEFAULT_PUE if pue is None else pue)
    if carbon_intensity_g_per_kwh is not None:
        ci, reg = carbon.check_carbon_intensity(carbon_intensity_g_per_kwh), "configured"
    else:
        r = carbon.region(region)
        ci, reg = r.g_per_kwh, r.code
    lifetime = embodied.DEFAULT_LIFETIME_YEARS if lifetime_years is None else lifetime_years
    return Accounting(pue=pue_v, ci_g_per_kwh=ci, region=reg, idle_power_w=power.idle_w,
                      host_busy_w=power.host_idle_w, formation_j=power.formation_j,
                      embodied_g_per_gpu_s=float(embodied.embodied_carbon_g(dep.gpu, 1.0, lifetime)), n_gpus=n)


def accounting_from_config(cfg, dep) -> Accounting:
    """:func:`resolve_accounting` with the fields of a :class:`~llmco2_sidecar.config.SidecarConfig`."""
    return resolve_accounting(dep, cfg.pue, cfg.carbon_intensity_g_per_kwh, cfg.region, cfg.host_idle_w_per_gpu,
                              cfg.formation_j, cfg.lifetime_years)


def operational_g(energy_j, acc: Accounting, ci_g_per_kwh=None):
    """gCO2e of ``energy_j`` (scalar or array) at the replica's PUE and grid intensity (or ``ci_g_per_kwh``,
    scalar or array, for a time-varying intensity)."""
    ci = acc.ci_g_per_kwh if ci_g_per_kwh is None else ci_g_per_kwh
    return energy_j * acc.pue / 3.6e6 * ci


def embodied_g(gpu_s, acc: Accounting):
    """Embodied gCO2e charged for ``gpu_s`` GPU-seconds held."""
    return gpu_s * acc.embodied_g_per_gpu_s


def predict_with_shares(predictor, dep, sb: StepBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One predictor call over ``sb``: (energy_j [S], prefill_energy_j [S], duration_s [S], shares [R])."""
    from ..graph import request_shares

    pred = predictor.predict_steps(dep, sb)
    shares = request_shares(dep, sb)
    return (np.asarray(pred.energy_j, dtype=np.float64), np.asarray(pred.prefill_energy_j, dtype=np.float64),
            np.asarray(pred.duration_s, dtype=np.float64), shares)


def account_steps(step_of: np.ndarray, context_tokens: np.ndarray, is_prefill: np.ndarray, start_s: np.ndarray,
                  end_s: np.ndarray, predicted: tuple, last_end_s: float, acc: Accounting):
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
