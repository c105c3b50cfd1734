"""The one-step fast path of ingest (plain Python, no numpy until the accepted columns) gives exactly
what the columnar path gives: the same Ack, the same accepted columns, the same stream state."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar_testkit import identity

from llmco2_sidecar._proto import events_pb2 as pb
from llmco2_sidecar.service import ingest as ing

tokens = st.one_of(st.integers(0, 3000), st.sampled_from([0, ing.MAX_NEW_TOKENS, ing.MAX_NEW_TOKENS + 1,
                                                           ing.MAX_CONTEXT_TOKENS, ing.MAX_CONTEXT_TOKENS + 1,
                                                           2**32 - 1]))
times = st.one_of(st.floats(-10, 5000, allow_nan=False), st.sampled_from([math.nan, math.inf, -math.inf]))
rid = st.sampled_from(["a", "b", "c", "", "x" * 600, "d", "e"])


@st.composite
def one_step(draw):
    """A valid one-step message, then (mostly) one field made bad or borderline."""
    r = draw(st.integers(1, 5))
    ev = pb.EventBatch(seq=1)
    c = ev.steps
    c.step_id.append(draw(st.integers(0, 45)))
    t0 = draw(st.sampled_from([0.0, 99.0, 100.0, 100.0005, 3999.0, 4000.0]))
    c.start_s.append(t0)
    c.end_s.append(t0 + draw(st.sampled_from([0.0, 0.01, 1.0])))
    c.slice_count.append(r)
    c.request_id.extend(draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=r, max_size=r)))
    prompt = draw(st.lists(st.integers(1, 3000), min_size=r, max_size=r))
    ctx = [draw(st.sampled_from([0, p // 2, p, p + 7])) for p in prompt]
    c.prompt_tokens.extend(prompt)
    c.context_tokens.extend(ctx)
    c.new_tokens.extend(draw(st.lists(st.integers(1, 600), min_size=r, max_size=r)))
    if draw(st.booleans()):
        c.phase.extend(draw(st.lists(st.integers(0, 3), min_size=r, max_size=r)))
    bad = draw(st.sampled_from(["none", "none", "none", "tokens", "times", "long", "step_id", "slices", "empty",
                                "rid", "phase"]))
    k = draw(st.integers(0, r - 1))
    if bad == "tokens":
        col = (c.new_tokens, c.context_tokens, c.prompt_tokens)[draw(st.integers(0, 2))]
        col[k] = draw(st.sampled_from([0, 5, ing.MAX_NEW_TOKENS, ing.MAX_NEW_TOKENS + 1, ing.MAX_CONTEXT_TOKENS,
                                       ing.MAX_CONTEXT_TOKENS + 1, 2**32 - 1]))
    elif bad == "times":
        c.start_s[0] = draw(times)
        c.end_s[0] = draw(times)
    elif bad == "long":
        c.end_s[0] = c.start_s[0] + draw(st.sampled_from([3600.0, 3600.5]))
    elif bad == "empty":
        c.slice_count[0] = 0
        for col in (c.request_id, c.new_tokens, c.context_tokens, c.prompt_tokens, c.phase):
            del col[:]
    elif bad == "step_id":
        c.step_id[0] = draw(st.sampled_from([(1 << 62) + 1, 2**64 - 1, 1 << 62]))
    elif bad == "slices":
        c.slice_count[0] = draw(st.integers(0, 6))
    elif bad == "rid":
        c.request_id[k] = draw(rid)
    elif bad == "phase":
        if not len(c.phase):
            c.phase.extend([0] * r)
        c.phase[k] = draw(st.integers(-2, 5))
    return ev


def _stream(draw_state):
    last_id, last_end, live, done = draw_state
    s = ing.open_stream(identity("e").identity, {})
    s.last_step_id, s.last_end_s = last_id, last_end
    s.live = set(live)
    for r in done:
        s.recently_done[r] = None
    return s


state = st.tuples(st.integers(-1, 40), st.sampled_from([-math.inf, 0.0, 100.0, 100.0015, 4000.0]),
                  st.lists(rid, max_size=3), st.lists(rid, max_size=3))


def _both(ev, st_):
    fast_stream, slow_stream = _stream(st_), _stream(st_)
    fast = ing.ingest(fast_stream, ev)
    saved = ing.FAST_PATH_MAX_SLICES
    ing.FAST_PATH_MAX_SLICES = -1  # the columnar path only
    try:
        slow = ing.ingest(slow_stream, copy.deepcopy(ev))
    finally:
        ing.FAST_PATH_MAX_SLICES = saved
    assert fast.ack.SerializeToString() == slow.ack.SerializeToString()
    assert (fast.steps is None) == (slow.steps is None)
    if fast.steps is not None:
        for name in ("step_id", "start_s", "end_s", "slice_count", "phase", "new_tokens", "context_tokens",
                     "prompt_tokens"):
            a, b = getattr(fast.steps, name), getattr(slow.steps, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert fast.steps.request_id == slow.steps.request_id
    for name in ("last_step_id", "last_end_s", "live", "recently_done"):
        assert getattr(fast_stream, name) == getattr(slow_stream, name), name
    return fast.ack


@settings(max_examples=500, deadline=None)
@given(ev=one_step(), st_=state)
def test_fast_path_matches_the_columnar_path(ev, st_):
    _both(ev, st_)


def _msg(step_id=10, t0=100.0, t1=100.01, slices=(("a", 5, 0, 5),), phase=None, count=None):
    ev = pb.EventBatch(seq=1)
    c = ev.steps
    c.step_id.append(step_id)
    c.start_s.append(t0)
    c.end_s.append(t1)
    c.slice_count.append(len(slices) if count is None else count)
    for r, n, x, p in slices:
        c.request_id.append(r)
        c.new_tokens.append(n)
        c.context_tokens.append(x)
        c.prompt_tokens.append(p)
    if phase is not None:
        c.phase.extend(phase)
    return ev


M, C = ing.MAX_NEW_TOKENS, ing.MAX_CONTEXT_TOKENS
CASES = {
    1: _msg(slices=(("a", 0, 0, 5),)), 2: _msg(slices=(("a", M + 1, 0, 5),)), 3: _msg(slices=(("a", 1, C + 1, 5),)),
    4: _msg(slices=(("a", 1, 3, C + 1),)), 5: _msg(phase=[4]), 6: _msg(slices=(("", 1, 0, 5),)),
    7: _msg(slices=(), count=0), 9: _msg(t0=math.nan), 10: _msg(t1=99.0), 11: _msg(t1=100.0 + 3600.5),
    12: _msg(step_id=3), 13: _msg(t0=50.0, t1=60.0),
}


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_rejection_reason_matches(code):
    ack = _both(CASES[code], (5, 100.0, [], []))
    assert ack.steps_rejected == 1 and ack.rejections[0].reason == ing._STEP_REASONS[code][1]


@pytest.mark.parametrize("slices, phase", [
    ((("a", 5, 0, 5), ("b", 1, 7, 7), ("c", 4, 8, 20)), None),  # new, flagged decode, flagged chunk
    ((("a", 5, 0, 5), ("b", 1, 7, 7), ("c", 4, 8, 20)), [0, 3, 2]),
    ((("z", 1, 9, 9),), None),
])
def test_accepted_steps_match(slices, phase):
    ack = _both(_msg(slices=slices, phase=phase), (5, 100.0, ["z"], ["c"]))
    assert ack.steps_accepted == 1


def test_multi_step_message_flags_by_each_requests_first_slice():
    """A continuing request never seen before is flagged by its FIRST slice of the message (context
    above 0), whatever its later slices say; a new one (first slice a prefill) is not. The columnar
    path finds first slices through one id -> first index map (ingest._first_index)."""
    ev = pb.EventBatch(seq=1)
    c = ev.steps
    # step 1: x continues (ctx 7), y starts (ctx 0); step 2: x again with ctx 0, y decodes, z continues;
    # step 3: w starts; step 4: w decodes, v continues, x again
    steps = [[("x", 1, 7, 7), ("y", 5, 0, 5)], [("x", 3, 0, 3), ("y", 1, 5, 5), ("z", 1, 9, 4)],
             [("w", 4, 0, 4)], [("w", 1, 4, 4), ("v", 1, 20, 8), ("x", 1, 3, 3)]]
    for k, sl in enumerate(steps):
        c.step_id.append(10 + k)
        c.start_s.append(100.0 + k)
        c.end_s.append(100.5 + k)
        c.slice_count.append(len(sl))
        for r, n, x, p in sl:
            c.request_id.append(r)
            c.new_tokens.append(n)
            c.context_tokens.append(x)
            c.prompt_tokens.append(p)
    assert ing._first_index(list(c.request_id)) == {"x": 0, "y": 1, "z": 4, "w": 5, "v": 7}
    s = ing.open_stream(identity("e").identity, {})
    s.live = {"z"}  # z is known: not flagged
    res = ing.ingest(s, ev)
    assert res.ack.steps_accepted == 4
    assert res.ack.flagged == 2  # x and v
    assert s.live == {"x", "y", "z", "w", "v"}


def test_accepted_steps_carry_their_distinct_ids_through_concatenation():
    """Columnar ingest keeps the message's distinct request ids (AcceptedSteps.distinct); a micro-batch's
    concatenation keeps their union (prediction._concat), or None when a part has none."""
    from llmco2_sidecar.service.prediction import _concat

    def msg(step0, rids):
        ev = pb.EventBatch(seq=1)
        c = ev.steps
        for k, r in enumerate(rids):
            c.step_id.append(step0 + k)
            c.start_s.append(100.0 + step0 + k)
            c.end_s.append(100.5 + step0 + k)
            c.slice_count.append(2)
            c.request_id.extend([r, "z"])
            c.new_tokens.extend([1, 1])
            c.context_tokens.extend([5, 5])
            c.prompt_tokens.extend([5, 5])
        return ev

    s = ing.open_stream(identity("e").identity, {})
    one = ing.ingest(s, msg(1, ["a", "b", "a"])).steps
    two = ing.ingest(s, msg(10, ["c", "a"])).steps
    assert set(one.distinct) == {"a", "b", "z"} and set(two.distinct) == {"c", "a", "z"}
    assert _concat([one, two]).distinct == {"a", "b", "c", "z"}
    fast = ing.ingest(s, _msg(step_id=20, t0=130.0, t1=130.5, slices=(("q", 1, 5, 5),))).steps
    assert fast.distinct is None and _concat([one, fast]).distinct is None
