"""The engine-side emitter against a real sidecar: delivery, coalescing, buffering while the sidecar
is away, reconnection with backoff, drops counted, close() bounded."""

from __future__ import annotations

import socket
import time

import pytest
from sidecar_testkit import GPU, MODEL, make_config, until

from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo, Phase
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread

pytestmark = pytest.mark.timeout(120)


def info(instance_id: str = "em-1") -> EngineInfo:
    return EngineInfo(engine_name="test", engine_version="0", model_name=MODEL, gpu=GPU, instance_id=instance_id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emit_requests(em: Emitter, first: int, n: int, step0: int, t0: float) -> tuple[int, float]:
    """n requests: one prefill step and two decode steps each, then their finish."""
    step, t = step0, t0
    for i in range(first, first + n):
        rid = f"req-{i}"
        em.emit_step(step, t, t + 0.02, [rid], [32], [0], [32])
        em.emit_step(step + 1, t + 0.03, t + 0.04, [rid], [1], [32], [32], phases=[Phase.DECODE])
        em.emit_step(step + 2, t + 0.05, t + 0.06, (rid,), (1,), (33,), (32,))
        em.emit_done(rid, output_tokens=3)
        step += 3
        t += 0.1
    return step, t


def test_delivers_and_coalesces(sidecar):
    em = Emitter(info(), EmitterConfig(target=sidecar.address))
    emit_requests(em, 0, 50, 1, 0.0)
    assert em.flush(10)
    s = em.stats()
    assert s.emitted == 200 and s.steps_accepted == 150 and s.done_accepted == 50 and s.dropped == 0
    assert s.sent_messages < 200  # coalesced
    assert em.close(5)
    sidecar.flush()
    recs = read_records(sidecar.config.log)
    assert sorted(r["request_id"] for r in recs) == sorted(f"req-{i}" for i in range(50))
    assert all(r["output_tokens"] == 3 and r["steps"] == 3 for r in recs)


def test_numpy_inputs_and_static_batches(sidecar):
    import numpy as np

    em = Emitter(info(), EmitterConfig(target=sidecar.address))
    em.emit_step(1, 0.0, 0.01, ["a", "b"], np.array([5, 7]), np.array([0, 0]), np.array([5, 7]))
    em.emit_done("a", 1)
    em.emit_done("b", 1, aborted=True)
    em.emit_static_batch(1, 1.0, 2.0, ["s1", "s2"], [10, 20], [4, 2])
    assert em.flush(10)
    s = em.stats()
    assert (s.steps_accepted, s.done_accepted, s.batches_accepted) == (1, 2, 1)
    em.close()
    sidecar.flush()
    recs = {r["request_id"]: r for r in read_records(sidecar.config.log)}
    assert set(recs) == {"a", "b", "s1", "s2"} and recs["b"]["aborted"] is True


def test_malformed_events_are_dropped_not_fatal(sidecar):
    em = Emitter(info(), EmitterConfig(target=sidecar.address))
    em.emit_step(1, 0.0, 0.01, ["a"], [5], [0], [5])
    em.emit_step(2, 0.02, 0.03, ["a"], [-1], [5], [5])  # negative: the wire cannot carry it
    em.emit_step(3, 0.04, 0.05, ["a"], [1], [5], [5])
    em.emit_done("a", 2)
    assert em.flush(10)
    s = em.stats()
    assert s.dropped == 1 and s.steps_accepted == 2 and s.done_accepted == 1
    em.close()


def test_deferred_steps_are_read_on_the_sender_thread_and_a_broken_reader_costs_one_step(sidecar):
    import threading

    readers = []

    def read(src):
        readers.append(threading.current_thread().name)
        if src is None:
            raise RuntimeError("the engine's record is gone")
        return src

    em = Emitter(info(), EmitterConfig(target=sidecar.address))
    em.emit_step_deferred(1, 0.0, 0.01, read, (["a", "b"], [5, 7], [0, 0], [5, 7]))
    em.emit_step_deferred(2, 0.02, 0.03, read, None)  # the reader raises: this step is dropped
    em.emit_step_deferred(3, 0.04, 0.05, read, (("a", "b"), (1, 1), (5, 7), (5, 7)))
    em.emit_done("a", 2)
    em.emit_done("b", 2)
    assert em.flush(10)
    s = em.stats()
    assert (s.dropped, s.steps_accepted, s.done_accepted) == (1, 2, 2)
    assert len(readers) >= 3 and threading.current_thread().name not in readers  # never on the caller's thread
    em.close()
    sidecar.flush()
    recs = {r["request_id"]: r for r in read_records(sidecar.config.log)}
    assert recs["a"]["steps"] == 2 and recs["b"]["output_tokens"] == 2


def test_rejections_are_reported(sidecar):
    em = Emitter(info(), EmitterConfig(target=sidecar.address))
    em.emit_step(5, 0.0, 0.01, ["a"], [5], [0], [5])
    em.emit_step(5, 0.02, 0.03, ["a"], [1], [5], [5])  # duplicate step id
    em.emit_done("nobody", 1)
    assert em.flush(10)
    s = em.stats()
    assert s.steps_rejected == 1 and s.done_rejected == 1
    assert any(k.startswith("steps.step_id") for k in s.rejection_reasons)
    em.close()


def test_never_blocks_without_a_sidecar_and_drops_beyond_the_bound():
    port = free_port()  # nobody listens there
    em = Emitter(info(), EmitterConfig(target=f"127.0.0.1:{port}", max_buffered_events=100, backoff_max_s=0.2,
                                       log_interval_s=1000))
    t0 = time.perf_counter()
    results = [em.emit_step(i + 1, i * 0.1, i * 0.1 + 0.05, ["a"], [1], [i], [1]) for i in range(1000)]
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5  # 1000 emits, no waiting on the network (generous bound for loaded CI machines)
    assert results.count(True) == 100 and em.stats().dropped == 900
    time.sleep(0.5)
    s = em.stats()
    assert not s.connected and s.connection_errors >= 2  # it keeps retrying, with backoff
    t0 = time.perf_counter()
    assert em.close(timeout_s=0.5) is False  # nothing could be delivered
    assert time.perf_counter() - t0 < 3.0


def test_buffers_while_the_sidecar_is_away_and_reconnects(tmp_path):
    port = free_port()
    cfg = make_config(tmp_path, port=port)
    sc = SidecarThread(cfg).start()
    em = Emitter(info(), EmitterConfig(target=f"127.0.0.1:{port}", backoff_initial_s=0.02, backoff_max_s=0.2))
    step, t = emit_requests(em, 0, 10, 1, 0.0)
    assert em.flush(10)
    sc.stop()  # the sidecar goes away
    step, t = emit_requests(em, 10, 10, step, t)  # buffered meanwhile
    time.sleep(0.5)
    s = em.stats()
    assert s.queued + s.inflight_messages > 0 and not s.connected and s.dropped == 0
    sc = SidecarThread(cfg).start()  # back, on the same port, same log and journal
    try:
        assert em.flush(20), em.stats()
        step, t = emit_requests(em, 20, 5, step, t)
        assert em.flush(10)
        s = em.stats()
        assert s.connects >= 2 and s.dropped == 0
        em.close()
        sc.flush()
        ids = [r["request_id"] for r in read_records(cfg.log)]
        assert sorted(ids) == sorted(f"req-{i}" for i in range(25))  # every one, exactly once
    finally:
        sc.stop()


def test_bearer_token_and_unix_socket(tmp_path):
    path = tmp_path / "s.sock"
    with SidecarThread(make_config(tmp_path, unix=str(path), token="tok")) as sc:
        bad = Emitter(info("bad"), EmitterConfig(target=sc.address, token="wrong", backoff_max_s=0.1))
        good = Emitter(info("good"), EmitterConfig(target=sc.address, token="tok"))
        emit_requests(bad, 0, 1, 1, 0.0)
        emit_requests(good, 0, 1, 1, 0.0)
        assert good.flush(10)
        assert not bad.flush(0.5) and "UNAUTHENTICATED" in bad.stats().last_error
        bad.close(0.1)
        good.close()


def test_close_is_bounded_when_the_sidecar_hangs():
    hung = socket.socket()  # accepts TCP connections and never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    try:
        em = Emitter(info(), EmitterConfig(target=f"127.0.0.1:{hung.getsockname()[1]}", log_interval_s=1000))
        em.emit_step(1, 0.0, 0.01, ["a"], [1], [0], [1])
        time.sleep(0.2)
        t0 = time.perf_counter()
        assert em.close(timeout_s=0.5) is False
        assert time.perf_counter() - t0 < 3.0
    finally:
        hung.close()


# ---- steps alone are held for company (steps_hold_s); finishes, batches, flush and close are not ----
def test_steps_alone_are_held_and_a_finish_sends_them_at_once(sidecar):
    em = Emitter(info("hold-1"), EmitterConfig(target=sidecar.address, steps_hold_s=30.0))
    for k in range(5):
        em.emit_step(k + 1, k * 0.01, k * 0.01 + 0.005, ["h1"], [8 if k == 0 else 1], [0 if k == 0 else 8 + k],
                     [8])
        time.sleep(0.02)  # slower than the 5 ms linger: without the hold, several messages
    time.sleep(0.3)
    assert em.stats().sent_messages == 0  # held: nothing waits on steps alone
    t0 = time.monotonic()
    em.emit_done("h1", output_tokens=5)
    assert until(lambda: em.stats().done_accepted == 1, 10.0)
    assert time.monotonic() - t0 < 5.0  # not the 30 s hold
    s = em.stats()
    assert s.sent_messages == 1 and s.steps_accepted == 5  # the steps went with the finish, in one message
    assert em.close(5)


def test_a_static_batch_is_not_held(sidecar):
    em = Emitter(info("hold-2"), EmitterConfig(target=sidecar.address, steps_hold_s=30.0))
    em.emit_step(1, 0.0, 0.01, ["x"], [4], [0], [4])
    time.sleep(0.05)
    em.emit_static_batch(1, 1.0, 2.0, ["s1"], [10], [4])
    assert until(lambda: em.stats().batches_accepted == 1, 10.0)
    assert em.stats().steps_accepted == 1
    em.close(5)


def test_held_steps_go_when_the_hold_ends_or_the_message_is_full(sidecar):
    em = Emitter(info("hold-3"), EmitterConfig(target=sidecar.address, steps_hold_s=0.1))
    em.emit_step(1, 0.0, 0.01, ["y"], [4], [0], [4])
    assert until(lambda: em.stats().steps_accepted == 1, 10.0)  # no finish, no flush: the hold ran out
    em.close(5)
    em = Emitter(info("hold-4"), EmitterConfig(target=sidecar.address, steps_hold_s=30.0, max_message_steps=4))
    for k in range(4):
        em.emit_step(k + 1, k * 0.01, k * 0.01 + 0.005, ["z"], [4 if k == 0 else 1], [0 if k == 0 else 4 + k],
                     [4])
    assert until(lambda: em.stats().steps_accepted == 4, 10.0)  # a full message is not held
    em.close(5)


def test_flush_and_close_send_held_steps_at_once(sidecar):
    em = Emitter(info("hold-5"), EmitterConfig(target=sidecar.address, steps_hold_s=30.0))
    em.emit_step(1, 0.0, 0.01, ["f"], [4], [0], [4])
    time.sleep(0.1)
    t0 = time.monotonic()
    assert em.flush(10) and time.monotonic() - t0 < 5.0
    assert em.stats().steps_accepted == 1
    em.emit_step(2, 0.02, 0.03, ["f"], [1], [4], [4], phases=[Phase.DECODE])
    time.sleep(0.1)
    t0 = time.monotonic()
    assert em.close(10) and time.monotonic() - t0 < 5.0  # nothing left unsent


def test_without_the_hold_every_drain_is_a_message(sidecar):
    """The hold is what coalesces a slow engine's steps: with it off, a step every 20 ms is a message
    each (the 5 ms linger cannot join them)."""
    em = Emitter(info("hold-6"), EmitterConfig(target=sidecar.address, steps_hold_s=0.0))
    for k in range(5):
        em.emit_step(k + 1, k * 0.01, k * 0.01 + 0.005, ["n"], [8 if k == 0 else 1], [0 if k == 0 else 8 + k], [8])
        time.sleep(0.02)
    assert em.flush(10)
    assert em.stats().sent_messages >= 4
    em.close(5)
