"""The best predictor the project ships: the trained 2-GNN when its model file is present, else the
analytic Roofline estimate. ``name`` tells which answered."""

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
    return model if model is not None else RooflinePredictor()
