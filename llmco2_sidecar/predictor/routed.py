"""The shipped predictor as two trained models: one for dense models, one for mixtures of experts.

``llmco2-gnn-v2`` learned from dense configurations only; ``llmco2-gnn-moe-v1`` from dense and
mixture-of-experts ones (ML.ENERGY v3's MoE rows in bf16, FP8 and MXFP4, v2's Mixtral), with the
block-scaled FP8 feature and its GNN's inputs clipped to its training range. Trained on both, one
model would serve dense deployments worse than the dense-only one does on held-out groups
(``benchmarks/results/accuracy_moe_block*.md``: train v3 -> test v2 and A100 out degrade), while on
mixture-of-experts families held out it beats the dense model's transfer on average
(``moe_transfer.md``). So each deployment goes to the model made for its kind: dense figures stay
exactly the dense model's, and a mixture of experts gets the model that has seen experts.

The router is a :class:`~.api.StepPredictor` like any other; its ``name_for(deployment)`` and
``heldout_scores(deployment)`` name the member that answers and give that member's held-out scores.
"""

from __future__ import annotations

import numpy as np

from .api import Deployment, StepPredictor


class RoutedPredictor(StepPredictor):
    """``dense`` for dense models, ``moe`` for mixtures of experts (``dense`` too when ``moe`` is None);
    both :class:`~.gnn.GNNPredictor` (or anything with its ``guard`` and ``predict_duration_s``)."""

    def __init__(self, dense, moe=None):
        self.dense = dense
        self.moe = moe if moe is not None else dense
        self.name = dense.name
        self.guard = self.moe.guard = dense.guard  # one count of the power window over both (the demo prints it)

    def pick(self, deployment: Deployment):
        return self.moe if deployment.model.is_moe else self.dense

    def name_for(self, deployment: Deployment) -> str:
        return self.pick(deployment).name

    def heldout_scores(self, deployment: Deployment | None = None) -> dict[str, float]:
        return (self.dense if deployment is None else self.pick(deployment)).heldout_scores(deployment)

    def predict_steps(self, deployment: Deployment, steps, **kw):
        return self.pick(deployment).predict_steps(deployment, steps, **kw)

    def predict_duration_s(self, deployment: Deployment, steps) -> np.ndarray:
        return self.pick(deployment).predict_duration_s(deployment, steps)

