"""Accuracy metrics of the paper (section 5): MAPE and EBA(delta)."""

from __future__ import annotations

import numpy as np


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(true, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"prediction and truth differ in length ({p.size} vs {t.size})")
    if p.size == 0:
        raise ValueError("no samples")
    if (t <= 0).any():
        raise ValueError("the truth must be positive")
    return p, t


def relative_errors(pred, true) -> np.ndarray:
    """|pred - true| / true per sample."""
    p, t = _pair(pred, true)
    return np.abs(p - t) / t


def mape(pred, true) -> float:
    """Mean absolute percentage error, in percent."""
    return float(relative_errors(pred, true).mean() * 100.0)


def eba(pred, true, delta: float) -> float:
    """Error-bound accuracy: percentage of samples with relative error <= ``delta`` (e.g. 0.1)."""
    return float((relative_errors(pred, true) <= delta + 1e-12).mean() * 100.0)


def summary(pred, true) -> dict[str, float]:
    """``{"n", "mape", "eba10", "eba30"}``."""
    p, _ = _pair(pred, true)
    return {"n": int(p.size), "mape": mape(pred, true), "eba10": eba(pred, true, 0.10), "eba30": eba(pred, true, 0.30)}
