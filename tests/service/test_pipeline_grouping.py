"""Engines of one deployment share a predictor call; their results must be what each gets alone."""

from __future__ import annotations

import asyncio

import pytest
from sidecar_testkit import identity, make_config, steps_message

from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarCore


def _streams():
    a = [steps_message(1, [(1, 0.0, 0.05, [("a1", 300, 0, 300), ("a2", 20, 0, 20)]),
                           (2, 0.06, 0.07, [("a1", 1, 300, 300), ("a2", 1, 20, 20)]),
                           (3, 0.5, 0.52, [("a1", 1, 301, 300)])], done=[("a1", 3), ("a2", 2)])]
    b = [steps_message(1, [(7, 10.0, 10.2, [("b1", 1000, 0, 1000)]),
                           (8, 10.3, 10.31, [("b1", 1, 1000, 1000), ("b2", 64, 0, 64), ("b3", 5, 0, 5)])],
                       done=[("b2", 1), ("b3", 1), ("b1", 2)])]
    return {"eng-a": a, "eng-b": b}


def _run(tmp_path, which, micro_batch_ms):
    core = SidecarCore(make_config(tmp_path, micro_batch_ms=micro_batch_ms))
    calls = []
    predict = core.predictor.predict_steps
    core.predictor.predict_steps = lambda dep, sb: (calls.append(sb.n_steps), predict(dep, sb))[1]
    loop = asyncio.new_event_loop()
    core.start(loop)
    streams = {name: core.open_stream(identity(name).identity) for name in which}
    calls.clear()  # the identity check's own predictions (a representative step, once per deployment)
    ok = core.pipeline.barrier(lambda: None)  # hold nothing back: now submit everything at once
    assert ok
    for name in which:
        for msg in _streams()[name]:
            core.handle_events(streams[name], msg.events)
    core.pipeline.barrier()
    core.pipeline.stop()
    core.carbon_log.close()
    core.journal.close()
    loop.close()
    return {r["request_id"]: r for r in read_records(core.config.log)}, calls


def test_shared_predictor_call_matches_separate_runs(tmp_path):
    together, calls = _run(tmp_path / "t", ["eng-a", "eng-b"], micro_batch_ms=50.0)  # one micro-batch for both
    assert calls == [5]  # both engines' steps in one predictor call
    alone = {**_run(tmp_path / "a", ["eng-a"], 50.0)[0], **_run(tmp_path / "b", ["eng-b"], 50.0)[0]}
    assert set(together) == set(alone) == {"a1", "a2", "b1", "b2", "b3"}
    for rid in alone:
        for part in ("prefill", "decode", "serving", "total"):
            assert together[rid]["energy_j"][part] == pytest.approx(alone[rid]["energy_j"][part], rel=1e-9, abs=1e-12)
        assert together[rid]["engine"] == alone[rid]["engine"]


def test_request_id_reused_within_one_micro_batch(tmp_path):
    """A request finishes and its id comes back in the next message; both land in one micro-batch."""
    core = SidecarCore(make_config(tmp_path, micro_batch_ms=100.0))
    loop = asyncio.new_event_loop()
    core.start(loop)
    st = core.open_stream(identity("reuse").identity)
    msgs = [steps_message(1, [(1, 0.0, 0.1, [("same", 10, 0, 10)])]),
            steps_message(2, [], done=[("same", 1)]),
            steps_message(3, [(2, 0.2, 0.3, [("same", 20, 0, 20)])]),
            steps_message(4, [(3, 0.4, 0.5, [("same", 1, 20, 20)])], done=[("same", 2)])]
    for m in msgs:
        assert core.handle_events(st, m.events).rejections == []
    core.pipeline.barrier()
    core.pipeline.stop()
    core.journal.close()
    core.carbon_log.close()
    loop.close()
    recs = read_records(core.config.log)
    assert [(r["request_id"], r["steps"], r["prompt_tokens"]) for r in recs] == [("same", 1, 10), ("same", 2, 20)]


def _paced(tmp_path, step_wait_ms, prompt_records=True, waiter_after_s=None):
    """Three messages of steps alone 10 ms apart, then one with a finish: predictor calls, and the
    seconds from the finish's submission to its record. ``waiter_after_s``: that long after the
    finish, someone starts waiting for a record (what a lookup does first: ``_wait_begins``)."""
    import time

    core = SidecarCore(make_config(tmp_path, micro_batch_ms=1.0, step_wait_ms=step_wait_ms,
                                   prompt_records=prompt_records))
    calls = []
    predict = core.predictor.predict_steps
    core.predictor.predict_steps = lambda dep, sb: (calls.append(sb.n_steps), predict(dep, sb))[1]
    loop = asyncio.new_event_loop()
    core.start(loop)
    st = core.open_stream(identity("paced").identity)
    calls.clear()  # the identity check's own predictions
    for k in range(3):
        core.handle_events(st, steps_message(k + 1, [(k + 1, 0.1 * k, 0.1 * k + 0.05, [("r", 64 if k == 0 else 1, 0 if k == 0 else 63 + k, 64)])]).events)
        time.sleep(0.01)
    t0 = time.perf_counter()
    core.handle_events(st, steps_message(4, [(4, 0.3, 0.35, [("r", 1, 66, 64)])], done=[("r", 4)]).events)
    waiting = False
    while core.ledger.get_finished("r") is None and time.perf_counter() - t0 < 10:
        if waiter_after_s is not None and not waiting and time.perf_counter() - t0 >= waiter_after_s:
            core._wait_begins()
            waiting = True
        time.sleep(0.002)
    waited = time.perf_counter() - t0
    core.pipeline.barrier()
    core.pipeline.stop()
    core.carbon_log.close()
    core.journal.close()
    loop.close()
    return calls, waited


def test_steps_alone_wait_for_company_and_a_finish_closes_the_micro_batch(tmp_path):
    calls, waited = _paced(tmp_path / "wait", step_wait_ms=2000.0)  # --prompt-records
    assert calls == [4]  # one prediction call for the four messages
    assert waited < 1.0  # the finish did not wait out the 2 s: it closed the micro-batch
    calls, _ = _paced(tmp_path / "nowait", step_wait_ms=0.0)
    assert len(calls) > 1 and sum(calls) == 4  # without the wait, messages 10 ms apart are predicted apart


def test_records_on_demand_a_finish_nobody_waits_for_waits_with_the_steps(tmp_path):
    calls, waited = _paced(tmp_path / "alone", step_wait_ms=600.0, prompt_records=False)
    assert calls == [4]
    assert waited >= 0.45  # held with the steps (600 ms from the first of them, 30 ms before the finish)


def test_records_on_demand_a_waiter_closes_the_held_micro_batch(tmp_path):
    calls, waited = _paced(tmp_path / "waiter", step_wait_ms=3000.0, prompt_records=False, waiter_after_s=0.1)
    assert calls == [4]
    assert 0.1 <= waited < 1.5  # held until the waiter came, then closed (not the 3 s)
