"""Latency quantiles in bounded memory: a log-bucket histogram (relative error <= 0.1%).

A replay of 10 million requests keeps no per-request arrays: each latency lands in the bucket
``ceil(log(x) / log(GAMMA))`` (GAMMA = 1.002, buckets from 1 us to 1e6 s, about 17,000 counters);
a quantile is the representative value of the bucket that holds its rank (nearest rank), within
0.1% of the exact sample quantile. Deterministic and order-independent.
"""

from __future__ import annotations

import math

import numpy as np

GAMMA = 1.002
_LOG_G = math.log(GAMMA)
_LO = math.floor(math.log(1e-6) / _LOG_G)
_HI = math.ceil(math.log(1e6) / _LOG_G)


class LogHistogram:
    """Counts of positive values in log buckets; values <= 1 us count as 1 us, >= 1e6 s as 1e6 s."""

    def __init__(self) -> None:
        self.counts = np.zeros(_HI - _LO + 1, dtype=np.int64)
        self.n = 0
        self.total = 0.0

    def add(self, values) -> None:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if not v.size:
            return
        idx = np.ceil(np.log(np.clip(v, 1e-6, 1e6)) / _LOG_G).astype(np.int64) - _LO
        np.clip(idx, 0, self.counts.shape[0] - 1, out=idx)
        self.counts += np.bincount(idx, minlength=self.counts.shape[0])
        self.n += int(v.size)
        self.total += float(v.sum())

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0..1), nearest rank; None when empty."""
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q * self.n))
        b = int(np.searchsorted(np.cumsum(self.counts), rank, side="left"))
        upper = GAMMA ** (b + _LO)
        return float(2.0 * upper / (GAMMA + 1.0))  # the bucket's midpoint in relative terms

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None
