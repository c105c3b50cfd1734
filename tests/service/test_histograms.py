"""observe_many gives a Histogram exactly what one observe per value gives it."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.openmetrics.exposition import generate_latest

from llmco2_sidecar.service.histograms import SMALL_BATCH, observe_many

BUCKETS = (0.1, 0.5, 1, 2, 5, 10)


def _pair():
    ra, rb = CollectorRegistry(), CollectorRegistry()
    return (ra, Histogram("x_joules", "x", buckets=BUCKETS, registry=ra)), (rb, Histogram("x_joules", "x", buckets=BUCKETS, registry=rb))


def _samples(reg) -> list:
    return [(s.name, tuple(sorted(s.labels.items())), s.value, s.exemplar.labels if s.exemplar else None,
             s.exemplar.value if s.exemplar else None)
            for m in reg.collect() for s in m.samples if not s.name.endswith("_created")]


def test_same_counts_sum_and_exemplars_as_one_observe_per_value():
    rng = np.random.default_rng(3)
    values = list(rng.lognormal(0, 1.5, 500)) + [0.1, 0.5, 1.0, 10.0, 11.0, 0.0]  # bounds themselves too
    ex = [{"request_id": f"r{i}"} for i in range(len(values))]
    (ra, a), (rb, b) = _pair()
    for v, e in zip(values, ex):
        a.observe(v, e)
    for k in range(0, len(values), 37):  # micro-batches of 37
        observe_many(b, values[k:k + 37], ex[k:k + 37])
    sa, sb = _samples(ra), _samples(rb)
    # counts exact; the sum equal up to the order of the float additions
    assert [s[:3] for s in sa] == [(n, lab, pytest.approx(v, rel=1e-12)) for n, lab, v, *_ in sb]
    assert [s[3:] for s in sa] == [s[3:] for s in sb]  # each bucket's exemplar: its last value
    assert b"request_id" in generate_latest(rb)


def test_no_exemplars_and_empty_batches():
    (ra, a), (rb, b) = _pair()
    for v in (3, 7, 0.2):
        a.observe(v)
    observe_many(b, [])
    observe_many(b, [3, 7, 0.2])
    assert _samples(ra) == _samples(rb)


def test_falls_back_to_observe_without_the_internals():
    seen = []

    class Plain:
        def observe(self, v, exemplar=None):
            seen.append((v, exemplar))

    observe_many(Plain(), [1.0, 2.0], [{"request_id": "a"}, {"request_id": "b"}])
    assert seen == [(1.0, {"request_id": "a"}), (2.0, {"request_id": "b"})]


def test_small_batches_are_one_observe_each_exactly():
    rng = np.random.default_rng(5)
    values = list(rng.lognormal(0, 1.5, 40))
    ex = [{"request_id": f"r{i}"} for i in range(len(values))]
    (ra, a), (rb, b) = _pair()
    for v, e in zip(values, ex):
        a.observe(v, e)
    k = 0
    for n in (1, 2, SMALL_BATCH, 1, 3, SMALL_BATCH):  # every batch at or below the threshold
        observe_many(b, values[k:k + n], ex[k:k + n])
        k += n
    for v, e in zip(values[k:], ex[k:]):
        observe_many(b, [v], [e])
    sa, sb = _samples(ra), _samples(rb)
    assert [s[:3] for s in sa] == [s[:3] for s in sb]  # the sum too, to the last bit: same additions
    assert [s[3:] for s in sa] == [s[3:] for s in sb]
