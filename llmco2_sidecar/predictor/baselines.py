"""The paper's baselines, fitted and scored on the same examples and splits as the 2-GNN.

* :class:`LLMCarbonBaseline` -- LLMCarbon's FLOP-count equation: a step takes
  ``FLOPs / (n_gpus * peak * efficiency)`` on ``n_gpus`` GPUs drawing their TDP, so
  ``E = TDP * FLOPs / (peak * efficiency)``; the one parameter (efficiency) is fitted on the
  training split (geometric mean ratio).
* :class:`RandomForestBaseline` -- DeepEn-style random forest on tabular features: the example's
  probability-weighted mean of the graph module's global features (batch, tokens, FLOPs, bytes,
  durations, model and GPU figures), regressing log(target).
* :class:`RooflineBaseline` -- the analytic Roofline estimate (:class:`RooflinePredictor`), no fit.
* The NNLQP-style single GNN is a :class:`~.gnn.GNNConfig` variant (``two_stage=False``, no
  phase or Roofline features, no prior), trained by :func:`~.training.train_gnn`.

Each baseline maps examples (and their features) to predictions in the examples' unit.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestRegressor

from .dataset import Example, Featurized
from .roofline import RooflinePredictor


def _example_sum(step_energy: np.ndarray, e: Example) -> float:
    return float(e.weight @ step_energy / e.denom)


def _flop_energy_unit(fe: Featurized, e: Example) -> np.ndarray:
    gpu = e.deployment.gpu
    peak = gpu.peak_flops(gpu.dtype_for_bits(e.deployment.model.act_bits))
    return gpu.tdp_w * fe.features.flops / peak


class LLMCarbonBaseline:
    name = "LLMCarbon (FLOP count)"

    def __init__(self) -> None:
        self.efficiency = 1.0

    def fit(self, examples: list[Example], feats: list[Featurized]) -> "LLMCarbonBaseline":
        unit = np.array([_example_sum(_flop_energy_unit(f, e), e) for e, f in zip(examples, feats)])
        y = np.array([e.target for e in examples])
        self.efficiency = float(np.exp(np.mean(np.log(unit / y))))
        return self

    def predict(self, examples: list[Example], feats: list[Featurized]) -> np.ndarray:
        return np.array([_example_sum(_flop_energy_unit(f, e), e) for e, f in zip(examples, feats)]) / self.efficiency


def tabular_features(examples: list[Example], feats: list[Featurized]) -> np.ndarray:
    """``[K, G + 1]``: weighted mean global features and log(denominator) per example."""
    rows = []
    for e, f in zip(examples, feats):
        p = e.weight / e.weight.sum()
        rows.append(np.concatenate([p @ f.global_x.astype(np.float64), [np.log(e.denom)]]))
    return np.array(rows)


class RandomForestBaseline:
    name = "DeepEn (random forest)"

    def __init__(self, seed: int = 0, n_estimators: int = 200):
        self.model = RandomForestRegressor(n_estimators=n_estimators, random_state=seed, min_samples_leaf=2, n_jobs=1)

    def fit(self, examples: list[Example], feats: list[Featurized]) -> "RandomForestBaseline":
        self.model.fit(tabular_features(examples, feats), np.log([e.target for e in examples]))
        return self

    def predict(self, examples: list[Example], feats: list[Featurized]) -> np.ndarray:
        return np.exp(self.model.predict(tabular_features(examples, feats)))


class RooflineBaseline:
    name = "Roofline (analytic)"

    def __init__(self) -> None:
        self.predictor = RooflinePredictor()

    def fit(self, examples: list[Example], feats: list[Featurized]) -> "RooflineBaseline":
        return self  # nothing to fit

    def predict(self, examples: list[Example], feats: list[Featurized]) -> np.ndarray:
        out = []
        for e, f in zip(examples, feats):
            step = self.predictor.predict_features(e.deployment, f.features).energy_j
            out.append(_example_sum(step, e))
        return np.array(out)
