"""The analytic Roofline estimate: Roofline time x power. No learned parameters.

For each step: ``t_roof`` is the step's Roofline time (graph builder); the wall time is the observed
duration where given, else ``t_roof / ROOFLINE_EFFICIENCY``. Each GPU draws its idle power for the
whole wall time (its loaded idle, with a CUDA context: :func:`~.physics.loaded_idle_w`) and its
dynamic range (TDP - loaded idle) while the Roofline says it is busy:

    E = n_gpus x (P_loaded x t + (TDP - P_loaded) x t_roof)

``ROOFLINE_EFFICIENCY`` = 0.6 is an assumption (real kernels reach a fraction of peak), not a fit.
This is the baseline every learned predictor must beat and the fallback when none is shipped.
"""

from __future__ import annotations

import numpy as np

from ..graph import step_features
from ..graph.builder import StepFeatures
from ..workload import StepBatch
from .api import Deployment, StepPrediction, StepPredictor
from .physics import loaded_idle_w

ROOFLINE_EFFICIENCY = 0.6


class RooflinePredictor(StepPredictor):
    name = "roofline-analytic"

    def __init__(self, efficiency: float = ROOFLINE_EFFICIENCY):
        self.efficiency = efficiency

    def predict_features(self, dep: Deployment, f: StepFeatures) -> StepPrediction:
        t_roof = f.roofline_s
        dur = np.where(np.isfinite(f.duration_s), f.duration_s, t_roof / self.efficiency)
        dyn = np.minimum(t_roof, dur)
        gpu = dep.gpu
        idle = loaded_idle_w(gpu)
        energy = dep.n_gpus * (idle * dur + (gpu.tdp_w - idle) * dyn)
        # prefill part: by the Roofline time of the prefill slices costed alone
        both = f.roofline_s_prefill + f.roofline_s_decode
        frac = np.divide(f.roofline_s_prefill, both, out=np.zeros_like(both), where=both > 0)
        return StepPrediction(energy_j=energy, prefill_energy_j=energy * frac, duration_s=dur)

    def predict_duration_s(self, dep: Deployment, steps: StepBatch) -> np.ndarray:
        """The ``duration_s`` of :meth:`predict_steps` alone (for the engine simulator)."""
        from ..graph.step_time import step_roofline_s

        t, _ = step_roofline_s(dep, steps)
        return np.where(np.isfinite(steps.duration_s), steps.duration_s, t / self.efficiency)

    def predict_steps(self, dep: Deployment, steps: StepBatch) -> StepPrediction:
        return self.predict_features(dep, step_features(dep, steps, with_nodes=False))
