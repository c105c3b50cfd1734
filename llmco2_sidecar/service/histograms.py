"""Many observations of one ``prometheus_client`` Histogram at once.

``Histogram.observe`` walks its buckets in Python and takes a lock per call; the sidecar observes
four histograms per finished request, a few per cent of its CPU at full load. :func:`observe_many`
bins a micro-batch's values with NumPy and adds each bucket's count once (a few values: one ``observe``
each, :data:`SMALL_BATCH`): the same counts and sum
as one ``observe`` per value (tested against it), and per bucket the exemplar of the last value
that fell in it, as ``observe`` leaves it. It uses the Histogram's bucket and sum children
(``_upper_bounds``, ``_buckets``, ``_sum``: prometheus_client 0.20-0.26); where a version lacks
them (or for any other object), it calls ``observe`` per value; an object with an ``observe_many`` method
of its own (the OTLP tee) gets the call.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from prometheus_client import Histogram

try:
    from prometheus_client.samples import Exemplar
except ImportError:  # pragma: no cover - every supported version has it
    Exemplar = None


#: up to this many values, one ``observe`` each: at low step rates a micro-batch finishes one or two
#: requests, and NumPy's binning (ten array calls, each slow with the caches cold) cost ~130 us a
#: micro-batch for the four histograms (perf3's timing, 2026-12-07)
SMALL_BATCH = 8


def observe_many(hist, values: Sequence[float], exemplars: Sequence[dict] | None = None) -> None:
    """``hist.observe(v, exemplar)`` for every value (``exemplars``: one label dict per value, or None)."""
    if not len(values):
        return
    own = getattr(type(hist), "observe_many", None)  # a wrapper that tees observations (--otlp)
    if own is not None:
        own(hist, values, exemplars)
        return
    if len(values) <= SMALL_BATCH:  # a few values: the reference itself is cheaper than NumPy's binning
        for i, v in enumerate(values):
            hist.observe(v, exemplars[i] if exemplars is not None else None)
        return
    bounds = getattr(hist, "_upper_bounds", None) if isinstance(hist, Histogram) else None
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None or Exemplar is None or len(bounds) != len(buckets):
        for i, v in enumerate(values):
            hist.observe(v, exemplars[i] if exemplars is not None else None)
        return
    v = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(np.asarray(bounds, dtype=np.float64), v, side="left")  # first bound >= value
    total.inc(float(v.sum()))
    counts = np.bincount(idx, minlength=len(bounds) + 1)  # len(bounds): NaN, counted in no bucket
    now = time.time() if exemplars is not None else 0.0
    for b in np.flatnonzero(counts[:len(bounds)]).tolist():
        buckets[b].inc(int(counts[b]))
        if exemplars is not None:
            last = int(np.flatnonzero(idx == b)[-1])
            buckets[b].set_exemplar(Exemplar(exemplars[last], float(v[last]), now))
