"""The best predictor the project ships: the trained 2-GNNs when their model files are present (the
dense model for dense deployments, the mixture-of-experts model for MoE ones: predictor/routed.py),
else the analytic Roofline estimate. ``name`` (``name_for(deployment)``) tells which answered."""

from __future__ import annotations

import functools
import logging

from .api import StepPredictor
from .roofline import RooflinePredictor

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def default_predictor() -> StepPredictor:
    try:
        from .gnn import load_default  # the trained model (optional: absent until shipped)
    except ImportError:
        return RooflinePredictor()
    try:
        model = load_default()
    except Exception as exc:  # a broken model file must not take the product down
        log.warning("shipped GNN model could not be loaded (%s); using the Roofline estimate", exc)
        return RooflinePredictor()
    if model is None:
        return RooflinePredictor()
    from .gnn import load_default_moe
    from .routed import RoutedPredictor

    try:
        moe = load_default_moe()
    except Exception as exc:  # the dense model then serves mixtures of experts too (as before it shipped)
        log.warning("shipped mixture-of-experts GNN could not be loaded (%s); the dense model predicts MoE models", exc)
        moe = None
    return RoutedPredictor(model, moe)
