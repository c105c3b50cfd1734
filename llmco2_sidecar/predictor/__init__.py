"""Energy predictors: the trained 2-GNN (paper section 4.1), the analytic Roofline estimate and the
paper's baselines, all behind :class:`~llmco2_sidecar.predictor.api.StepPredictor`."""

from .api import Deployment, StepPrediction, StepPredictor

__all__ = ["Deployment", "StepPrediction", "StepPredictor"]
