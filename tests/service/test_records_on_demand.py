"""Records on demand, over real gRPC on loopback: a finish nobody waits for waits with the steps
(step_wait_ms); a lookup or a WatchFinished watcher gets its record at once; --prompt-records writes
every record at once."""

from __future__ import annotations

import threading
import time

import pytest
from sidecar_testkit import Stream, identity, make_config, steps_message, until

from llmco2_sidecar._proto import sidecar_pb2 as spb
from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.service import lookups as lookups_mod
from llmco2_sidecar.service.server import SidecarThread

STEP_WAIT_MS = 4000.0  # far longer than any wait below: a record that comes sooner was not held out


@pytest.fixture
def lazy(tmp_path, monkeypatch):
    """A sidecar whose lookups leave no memory of demand (DEMAND_MEMORY_S 0): each test's lookups
    then meet the held path (test_a_lookup_keeps_later_finishes_awaited_for_a_while tests the memory)."""
    monkeypatch.setattr(lookups_mod, "DEMAND_MEMORY_S", 0.0)
    sc = SidecarThread(make_config(tmp_path, step_wait_ms=STEP_WAIT_MS)).start()
    yield sc
    sc.stop()


def _stub(sc):
    import grpc

    ch = grpc.insecure_channel(sc.address)
    return ch, sidecar_pb2_grpc.CarbonSidecarStub(ch)


def _send_finished(stub, rid: str, engine: str = "engine-1") -> Stream:
    s = Stream(stub)
    s.send(identity(engine))
    s.send(steps_message(1, [(1, 0.0, 0.05, [(rid, 128, 0, 128)]), (2, 0.06, 0.08, [(rid, 1, 128, 128)])],
                         done=[(rid, 2)]))
    return s


def test_a_finish_nobody_waits_for_waits_with_the_steps(lazy):
    ch, stub = _stub(lazy)
    t0 = time.perf_counter()
    s = _send_finished(stub, "quiet")
    time.sleep(1.0)
    assert lazy.core.ledger.get_finished("quiet") is None  # held: nobody asked
    assert until(lambda: lazy.core.ledger.get_finished("quiet") is not None, timeout_s=15.0)
    assert time.perf_counter() - t0 >= STEP_WAIT_MS / 1000.0 * 0.9  # written when the steps' wait ended
    s.close()
    ch.close()


def test_a_lookup_after_the_finish_gets_its_record_at_once(lazy):
    ch, stub = _stub(lazy)
    s = _send_finished(stub, "asked")
    time.sleep(0.3)  # the finish is held by now
    t0 = time.perf_counter()
    reply = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="asked", wait_s=10.0))
    assert time.perf_counter() - t0 < 1.5
    assert reply.records[0].state == spb.RequestCarbon.STATE_FINISHED and reply.records[0].energy_j.total > 0
    # a lookup that does not wait also brings the record out (the finish was accepted)
    s2 = _send_finished(stub, "asked-now", engine="engine-2")
    time.sleep(0.3)
    t0 = time.perf_counter()
    reply = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="asked-now"))
    assert time.perf_counter() - t0 < 1.5 and reply.records[0].state == spb.RequestCarbon.STATE_FINISHED
    s.close()
    s2.close()
    ch.close()


def test_a_lookup_of_a_running_request_closes_its_steps_micro_batch(lazy):
    """Steps alone wait up to step_wait_ms for company (here 4 s); a lookup of a request they carry
    closes that micro-batch at once and answers with its running figures."""
    ch, stub = _stub(lazy)
    s = Stream(stub)
    s.send(identity())
    s.send(steps_message(1, [(1, 0.0, 0.05, [("busy-1", 64, 0, 64)]), (2, 0.06, 0.08, [("busy-1", 1, 64, 64)])]))
    time.sleep(0.3)
    assert lazy.core.ledger.totals("busy-1") is None  # still waiting for company
    t0 = time.perf_counter()
    reply = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="busy-1"))
    assert time.perf_counter() - t0 < 1.0
    assert reply.records[0].state == spb.RequestCarbon.STATE_RUNNING and reply.records[0].energy_j.total > 0
    s.close()
    ch.close()


def test_a_lookup_waiting_before_the_finish_and_a_prefix_lookup(lazy):
    ch, stub = _stub(lazy)
    s = Stream(stub)
    s.send(identity())
    s.send(steps_message(1, [(1, 0.0, 0.05, [("early-1", 64, 0, 64), ("early-2", 64, 0, 64)])]))
    got = {}

    def ask(key, **kw):
        got[key] = stub.GetRequestCarbon(spb.RequestCarbonQuery(**kw))

    threads = [threading.Thread(target=ask, args=("one",), kwargs=dict(request_id="early-1", wait_s=10.0)),
               threading.Thread(target=ask, args=("prefix",), kwargs=dict(request_id="early-", prefix=True, wait_s=10.0))]
    for t in threads:
        t.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    s.send(steps_message(2, [(2, 0.06, 0.08, [("early-1", 1, 64, 64), ("early-2", 1, 64, 64)])],
                         done=[("early-1", 2), ("early-2", 2)]))
    for t in threads:
        t.join(10)
    assert time.perf_counter() - t0 < 2.0
    assert got["one"].records[0].state == spb.RequestCarbon.STATE_FINISHED
    assert sorted(r.request_id for r in got["prefix"].records) == ["early-1", "early-2"]
    assert all(r.state == spb.RequestCarbon.STATE_FINISHED for r in got["prefix"].records)
    s.close()
    ch.close()


def test_a_watcher_gets_every_record_at_once(lazy):
    ch, stub = _stub(lazy)
    watch = stub.WatchFinished(spb.WatchRequest(request_id_prefix="w-"))
    got = []

    def reader():
        for rec in watch:
            got.append((time.perf_counter(), rec.request_id))
            return

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.3)  # the watcher is connected
    t0 = time.perf_counter()
    s = _send_finished(stub, "w-1")
    t.join(10)
    watch.cancel()
    assert got and got[0][1] == "w-1" and got[0][0] - t0 < 1.5
    s.close()
    ch.close()


def test_a_lookup_keeps_later_finishes_awaited_for_a_while(tmp_path, monkeypatch):
    """Where responses are held, every request gets a lookup just after its finish: after one lookup,
    finishes close their micro-batch at once for DEMAND_MEMORY_S, so the record is ready when the
    next lookup comes; past it, they wait with the steps again."""
    monkeypatch.setattr(lookups_mod, "DEMAND_MEMORY_S", 1.5)
    sc = SidecarThread(make_config(tmp_path, step_wait_ms=STEP_WAIT_MS)).start()
    try:
        ch, stub = _stub(sc)
        s1 = _send_finished(stub, "first", engine="m-1")
        stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="first", wait_s=10.0))
        t0 = time.perf_counter()
        s2 = _send_finished(stub, "second", engine="m-2")  # nobody waits for it, but a lookup came just now
        assert until(lambda: sc.core.ledger.get_finished("second") is not None, timeout_s=10.0)
        assert time.perf_counter() - t0 < 1.0
        time.sleep(1.6)  # the memory is over
        s3 = _send_finished(stub, "third", engine="m-3")
        time.sleep(1.0)
        assert sc.core.ledger.get_finished("third") is None  # held with the steps again
        for s in (s1, s2, s3):
            s.close()
        ch.close()
    finally:
        sc.stop()


def test_prompt_records_writes_every_record_at_once(tmp_path):
    sc = SidecarThread(make_config(tmp_path, step_wait_ms=STEP_WAIT_MS, prompt_records=True)).start()
    try:
        ch, stub = _stub(sc)
        t0 = time.perf_counter()
        s = _send_finished(stub, "prompt")
        assert until(lambda: sc.core.ledger.get_finished("prompt") is not None, timeout_s=10.0)
        assert time.perf_counter() - t0 < 1.5
        s.close()
        ch.close()
    finally:
        sc.stop()


def _latency_count(core) -> float:
    return next(s.value for m in core.metrics.latency.collect() for s in m.samples if s.name.endswith("_count"))


def test_record_latency_metric_counts_awaited_records_only(tmp_path):
    """llmco2_record_latency_seconds: a record nobody waited for waits with the steps by design; it is
    not a latency anyone saw, so it is not observed."""
    import asyncio

    from llmco2_sidecar.service.server import SidecarCore

    core = SidecarCore(make_config(tmp_path, step_wait_ms=50.0))
    loop = asyncio.new_event_loop()
    core.start(loop)
    try:
        st = core.open_stream(identity("lat").identity)
        core.handle_events(st, steps_message(1, [(1, 0.0, 0.05, [("nobody", 64, 0, 64)])], done=[("nobody", 1)]).events)
        assert core.pipeline.barrier()
        assert core.ledger.get_finished("nobody") is not None and _latency_count(core) == 0
        core._record_waits += 1  # a lookup waits (what _wait_begins counts)
        try:
            core.handle_events(st, steps_message(2, [(2, 0.1, 0.15, [("asked", 64, 0, 64)])], done=[("asked", 1)]).events)
            assert core.pipeline.barrier()
        finally:
            core._record_waits -= 1
        assert core.ledger.get_finished("asked") is not None and _latency_count(core) == 1
    finally:
        core.pipeline.stop()
        core.carbon_log.close()
        core.journal.close()
        loop.close()


def test_record_latency_of_a_held_finish_counts_from_the_waiter(tmp_path):
    import asyncio

    from llmco2_sidecar.service.server import SidecarCore

    core = SidecarCore(make_config(tmp_path, step_wait_ms=STEP_WAIT_MS))
    loop = asyncio.new_event_loop()
    core.start(loop)
    try:
        st = core.open_stream(identity("held").identity)
        core.handle_events(st, steps_message(1, [(1, 0.0, 0.05, [("later", 64, 0, 64)])], done=[("later", 1)]).events)
        time.sleep(0.5)  # held: nobody waits
        assert core.ledger.get_finished("later") is None
        core._wait_begins()  # a lookup comes
        try:
            assert until(lambda: core.ledger.get_finished("later") is not None, timeout_s=2.0)
        finally:
            core._record_waits -= 1
        (m,) = core.metrics.latency.collect()
        count = next(s.value for s in m.samples if s.name.endswith("_count"))
        total = next(s.value for s in m.samples if s.name.endswith("_sum"))
        assert count == 1 and total < 0.4  # from the waiter's arrival, not the finish's (0.5 s before)
    finally:
        core.pipeline.stop()
        core.carbon_log.close()
        core.journal.close()
        loop.close()


def test_a_lookup_answers_only_once_the_record_is_in_the_log(tmp_path):
    """The e2e contract (a response carrying carbon finds its record in the log): the pipeline's log
    write is held back; a waiting lookup must not answer before it."""
    from llmco2_sidecar.service.carbon_log import read_records

    sc = SidecarThread(make_config(tmp_path, prompt_records=True)).start()
    gate = threading.Event()
    write = sc.core.carbon_log.write_lines

    def slow_write(lines):
        gate.wait(10)
        return write(lines)

    sc.core.carbon_log.write_lines = slow_write
    try:
        ch, stub = _stub(sc)
        s = _send_finished(stub, "gated")
        # the pipeline has the record (in the ledger) and waits to write it to the log: ask now
        assert until(lambda: "gated" in sc.core.ledger.finished, timeout_s=10.0)
        got = {}
        t = threading.Thread(target=lambda: got.setdefault("r", stub.GetRequestCarbon(
            spb.RequestCarbonQuery(request_id="gated", wait_s=10.0))))
        t.start()
        time.sleep(0.5)
        assert t.is_alive()  # not in the log yet: the lookup waits
        gate.set()
        t.join(10)
        assert got["r"].records[0].request_id == "gated"
        assert [r["request_id"] for r in read_records(sc.config.log)] == ["gated"]
        s.close()
        ch.close()
    finally:
        gate.set()
        sc.stop()
