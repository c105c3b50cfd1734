"""Property tests over random event streams sent to a real sidecar: whatever arrives, every message
gets its Ack, the server keeps serving, and energy is conserved (requests + idle = steps)."""

from __future__ import annotations

import itertools
import math
import queue

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidecar_testkit import add_step, identity, make_config

from llmco2_sidecar._proto import events_pb2 as pb
from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread

_counter = itertools.count()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("props")
    sc = SidecarThread(make_config(tmp, log_steps=True, log_windows=False, micro_batch_ms=0.5)).start()
    channel = grpc.insecure_channel(sc.address)
    yield sc, sidecar_pb2_grpc.CarbonSidecarStub(channel)
    channel.close()
    sc.stop()


GARBAGE = ("zero_tokens", "absurd_tokens", "backwards", "ends_before_start", "dup_id", "nan", "empty_id",
           "bad_columns", "unknown_done", "bad_phase")

action = st.one_of(
    st.tuples(st.just("new"), st.integers(1, 3000)),
    st.tuples(st.just("step"), st.integers(0, 2 ** 16), st.floats(0.0, 0.5), st.floats(0.001, 0.2)),
    st.tuples(st.just("done"), st.integers(0, 2 ** 16)),
    st.tuples(st.just("garbage"), st.sampled_from(GARBAGE)),
    st.tuples(st.just("flush")),
)


@settings(max_examples=int(__import__("os").environ.get("LLMCO2_PROP_EXAMPLES", "50")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(action, min_size=1, max_size=60))
def test_random_streams(shared, actions):
    sc, stub = shared
    engine = f"prop-{next(_counter)}"
    q: queue.Queue = queue.Queue()
    call = stub.StreamEvents(iter(q.get, None))
    q.put(identity(engine))
    assert next(call).stream_id == engine
    waiting: dict[str, int] = {}  # admitted, not yet scheduled: prompt length
    live: dict[str, list[int]] = {}  # rid -> [context, prompt]
    t = 0.0
    sid = 0
    seq = 0
    msg = pb.EngineMessage()
    expected_done = 0
    acked = {"steps": 0, "done": 0}

    def send():
        nonlocal msg, seq
        seq += 1
        msg.events.seq = seq
        q.put(msg)
        ack = next(call)
        assert ack.seq == seq
        n_steps = len(msg.events.steps.step_id)
        n_done = len(msg.events.done)
        if msg.events.steps.slice_count and sum(msg.events.steps.slice_count) == len(msg.events.steps.request_id):
            assert ack.steps_accepted + ack.steps_rejected == n_steps
        assert ack.done_accepted + ack.done_rejected == n_done
        acked["steps"] += ack.steps_accepted
        acked["done"] += ack.done_accepted
        msg = pb.EngineMessage()
        return ack

    for act in actions:
        kind = act[0]
        ev = msg.events
        if kind == "new":
            waiting[f"{engine}-r{sid}-{len(waiting) + len(live)}"] = act[1]
        elif kind == "step":
            slices = []
            for rid, prompt in list(waiting.items())[:3]:
                slices.append((rid, prompt, 0, prompt))
                live[rid] = [prompt, prompt]
                del waiting[rid]
            for rid, (ctx, prompt) in sorted(live.items())[: 1 + act[1] % 8]:
                if all(s[0] != rid for s in slices):
                    slices.append((rid, 1, ctx, prompt))
                    live[rid][0] += 1
            if not slices:
                continue
            sid += 1
            t += act[2]
            add_step(ev, sid, t, t + act[3], slices)
            t += act[3]
        elif kind == "done" and live:
            rid = sorted(live)[act[1] % len(live)]
            del live[rid]
            ev.done.add(request_id=rid, output_tokens=0)
            expected_done += 1
        elif kind == "garbage":
            if ev.steps.step_id or ev.done:
                send()  # garbage goes alone, so that its Ack tells about it only
            ev = msg.events
            g = act[1]
            if g == "unknown_done":
                ev.done.add(request_id="never-seen-" + engine)
            elif g == "bad_columns":
                add_step(ev, sid + 1, t, t + 0.01, [("x", 1, 0, 1)])
                ev.steps.slice_count[-1] = 5
            else:
                bad = {"zero_tokens": (sid + 1, t, t + 0.01, 0, None), "absurd_tokens": (sid + 1, t, t + 0.01, 1 << 22, None),
                       "backwards": (sid + 1, t - 10.0, t - 9.99, 1, None), "ends_before_start": (sid + 1, t + 1, t, 1, None),
                       "dup_id": (max(sid, 1), t, t + 0.01, 1, None), "nan": (sid + 1, math.nan, t, 1, None),
                       "empty_id": (sid + 1, t, t + 0.01, 1, None), "bad_phase": (sid + 1, t, t + 0.01, 1, 7)}[g]
                rid = "" if g == "empty_id" else f"{engine}-garbage"
                add_step(ev, bad[0], bad[1], bad[2], [(rid, bad[3], 5, 5)], bad[4])
            msg_sid, msg_end = list(ev.steps.step_id) or [sid], list(ev.steps.end_s) or [t]
            if send().steps_accepted:  # e.g. "backwards" before any step is valid after all
                live.setdefault(f"{engine}-garbage", [6, 5])
                sid = max(sid, int(msg_sid[0]))
                t = max(t, msg_end[0])
        elif kind == "flush" and (ev.steps.step_id or ev.done):
            send()
    if msg.events.steps.step_id or msg.events.done:
        send()
    # finish everything still running
    for rid in sorted(live):
        msg.events.done.add(request_id=rid)
        expected_done += 1
    if live:
        send()
    q.put(None)
    list(call)
    assert acked["done"] == expected_done
    sc.flush()
    recs = [r for r in read_records(sc.config.log, ("request", "step")) if r.get("engine") == engine]
    requests = [r for r in recs if r["type"] == "request"]
    step_recs = [r for r in recs if r["type"] == "step"]
    assert len(requests) == expected_done and len(step_recs) == acked["steps"]
    for r in requests:
        e = r["energy_j"]
        assert min(e.values()) >= 0 and e["total"] == pytest.approx(e["prefill"] + e["decode"] + e["serving"])
        assert math.isfinite(r["carbon_g"]["total"]) and r["carbon_g"]["total"] > 0
    steps_total = sum(r["energy_j"]["total"] for r in step_recs)
    idle = sum(r["energy_j"]["idle"] for r in step_recs)
    assert sum(r["energy_j"]["total"] for r in requests) + idle == pytest.approx(steps_total, rel=1e-9, abs=1e-9)
