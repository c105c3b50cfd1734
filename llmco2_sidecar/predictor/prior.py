"""Physics prior and duration model: a few non-negative coefficients fitted on measured data.

Prior energy of a step on ``n`` GPUs (all in J)::

    E = p_static * n * t  +  e_flop * FLOPs  +  e_byte * memory_bytes  +  e_net * network_bytes

``t`` is the step's wall time (observed, or from :class:`DurationModel`); FLOPs and bytes are the
replica's totals from the kernel graph. The coefficients are one set for all GPU kinds (W per GPU,
J/FLOP, J/byte): with two GPU kinds in the data a per-kind fit could not be tested on an unseen
GPU. A variant with every term scaled by the GPU's TDP and datasheet peaks (power fractions) was
tried and transferred worse between H100 and B200 (mean held-out MAPE 15.9% vs 10.2% on the
ML.ENERGY v3 splits), so the plain form is kept. The prefill part uses the prefill phase's FLOPs and
bytes and the prefill share of the Roofline time.

Duration when none is observed: ``t = k * roofline_s + t0 + t_req * requests`` (non-negative
least squares on the observed step times; the server's software overhead lives in ``t0`` and
``t_req``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..graph import StepFeatures
from .api import Deployment

PRIOR_TERMS = ("static_time", "compute", "memory", "network")
DURATION_TERMS = ("roofline_s", "constant", "requests")


def prior_terms(dep: Deployment, f: StepFeatures, duration_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prior design matrices ``(total [S, 4], prefill [S, 4])``: GPU-seconds, FLOPs, memory bytes,
    network bytes (so ``@ coef`` is in J)."""
    t = np.asarray(duration_s, dtype=np.float64)
    total = np.stack([dep.n_gpus * t, f.flops, f.memory_bytes, f.network_bytes], axis=1)
    roof_sum = f.roofline_s_prefill + f.roofline_s_decode
    share = np.where(f.prefill_tokens > 0, f.roofline_s_prefill / np.maximum(roof_sum, 1e-30), 0.0)
    pre = np.stack([dep.n_gpus * t * share, f.flops_prefill, f.memory_bytes_prefill, f.network_bytes_prefill], axis=1)
    pre = np.where((f.prefill_tokens > 0)[:, None], pre, 0.0)
    return total, pre


def fit_relative_nnls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative ``c`` minimising ``sum(((a @ c - y) / y)^2)``."""
    from scipy.optimize import nnls  # training only: inference must not need scipy

    a = np.asarray(a, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    scale = np.maximum(np.abs(a / y[:, None]).max(axis=0), 1e-300)
    c, _ = nnls(a / y[:, None] / scale, np.ones_like(y))
    return c / scale


@dataclass
class PhysicsPrior:
    """``E = terms @ coef`` (see module docstring)."""

    coef: np.ndarray = field(default_factory=lambda: np.array([300.0, 0.5e-12, 0.1e-9, 0.0]))

    def energy(self, terms: np.ndarray) -> np.ndarray:
        return np.asarray(terms) @ self.coef

    def fit(self, example_terms: np.ndarray, targets: np.ndarray) -> "PhysicsPrior":
        """``example_terms [K, 4]``: each example's weighted sum of step terms divided by its
        normaliser (so ``example_terms @ coef`` predicts the example's target)."""
        self.coef = fit_relative_nnls(example_terms, targets)
        return self


@dataclass
class DurationModel:
    """Step wall time when none is observed (see module docstring)."""

    coef: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))

    @staticmethod
    def terms(f: StepFeatures) -> np.ndarray:
        return np.stack([f.roofline_s, np.ones_like(f.roofline_s), f.n_requests], axis=1)

    def predict(self, f: StepFeatures) -> np.ndarray:
        return np.maximum(self.terms(f) @ self.coef, 1e-6)

    def fit(self, example_terms: np.ndarray, observed_s: np.ndarray) -> "DurationModel":
        """``example_terms [K, 3]``: each example's probability-weighted mean of step terms;
        ``observed_s [K]``: its observed mean step time."""
        self.coef = fit_relative_nnls(example_terms, observed_s)
        return self
