"""Ingest never raises on arbitrary (well-typed) messages: every item is accepted or rejected, and the
accepted columns are consistent."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar_testkit import identity

from llmco2_sidecar._proto import events_pb2 as pb
from llmco2_sidecar.service import ingest as ing

u32 = st.integers(0, 2**32 - 1)
small = st.integers(0, 3000)
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
rid = st.sampled_from(["a", "b", "c", "", "x" * 600, "d"])


@st.composite
def batches(draw):
    n = draw(st.integers(0, 6))
    r = draw(st.integers(0, 12))
    ev = pb.EventBatch(seq=draw(st.integers(0, 2**64 - 1)))
    cols = ev.steps
    cols.step_id.extend(draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n + draw(st.integers(0, 1)))))
    cols.start_s.extend(draw(st.lists(floats, min_size=n, max_size=n)))
    cols.end_s.extend(draw(st.lists(floats, min_size=n, max_size=n)))
    cols.slice_count.extend(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)))
    cols.request_id.extend(draw(st.lists(rid, min_size=r, max_size=r)))
    cols.new_tokens.extend(draw(st.lists(st.one_of(small, u32), min_size=r, max_size=r)))
    cols.context_tokens.extend(draw(st.lists(st.one_of(small, u32), min_size=r, max_size=r)))
    cols.prompt_tokens.extend(draw(st.lists(st.one_of(small, u32), min_size=r, max_size=r)))
    if draw(st.booleans()):
        cols.phase.extend(draw(st.lists(st.integers(0, 5), min_size=r, max_size=r)))
    for _ in range(draw(st.integers(0, 3))):
        ev.done.add(request_id=draw(rid), output_tokens=draw(u32), time_s=draw(floats))
    for _ in range(draw(st.integers(0, 2))):
        k = draw(st.integers(0, 3))
        ev.static_batches.add(batch_id=draw(st.integers(0, 2**64 - 1)), start_s=draw(floats), end_s=draw(floats),
                              request_id=draw(st.lists(rid, min_size=k, max_size=k)),
                              prompt_tokens=draw(st.lists(u32, min_size=k, max_size=k + 1)),
                              output_tokens=draw(st.lists(u32, min_size=k, max_size=k)))
    return ev


@settings(max_examples=150, deadline=None)
@given(st.lists(batches(), min_size=1, max_size=5))
def test_ingest_never_raises(messages):
    streams: dict = {}
    stream = ing.open_stream(identity("fuzz").identity, streams)
    for ev in messages:
        res = ing.ingest(stream, ev)
        ack = res.ack
        n_steps = len(ev.steps.step_id)
        if res.steps is not None:
            s = res.steps
            assert ack.steps_accepted == s.n_steps >= 1
            assert int(s.slice_count.sum()) == len(s.request_id) == s.new_tokens.size == s.phase.size
            assert (s.new_tokens >= 1).all() and np.isfinite(s.start_s).all() and (s.end_s >= s.start_s).all()
            assert (np.diff(s.step_id) > 0).all() and set(s.phase.tolist()) <= {1, 2, 3}
            assert all(r and len(r) <= ing.MAX_REQUEST_ID_LEN for r in s.request_id)
        else:
            assert ack.steps_accepted == 0
        if n_steps and len(ev.steps.start_s) == n_steps:
            assert ack.steps_accepted + ack.steps_rejected >= min(n_steps, 1)
        assert ack.done_accepted + ack.done_rejected == len(ev.done)
        assert ack.batches_accepted + ack.batches_rejected == len(ev.static_batches)
        assert len(ack.rejections) <= ing.MAX_LISTED_REJECTIONS
        for d in res.done:
            assert math.isfinite(d.time_s)
