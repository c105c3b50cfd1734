"""Cumulative acks (EngineIdentity.cumulative_acks): one Ack for several journaled messages, sent
within --ack-interval-ms; emitters that do not ask keep one Ack per message. Real gRPC on loopback."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from sidecar_testkit import identity, make_config, steps_message

from llmco2_sidecar._proto import events_pb2 as pb
from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo
from llmco2_sidecar.service.acks import merge_ack
from llmco2_sidecar.service.ingest import MAX_LISTED_REJECTIONS
from llmco2_sidecar.service.server import SidecarThread


def _steps(n, first_seq=1):
    return [steps_message(first_seq + k, [(first_seq + k, k * 0.1, k * 0.1 + 0.05, [(f"r{k}", 16, 0, 16)])])
            for k in range(n)]


def _collect(stub, msgs, gap_s=0.0):
    """Send ``msgs`` on one stream (``gap_s`` apart), half-close, return every Ack received."""
    def gen():
        for m in msgs:
            yield m
            if gap_s:
                time.sleep(gap_s)

    return list(stub.StreamEvents(gen()))


def test_merge_sums_counts_and_keeps_the_last_seq():
    a = pb.Ack(seq=3, stream_id="e", steps_accepted=2, flagged=1)
    for i in range(10):
        a.rejections.add(field="steps.end_s", reason=str(i))
    b = pb.Ack(seq=4, stream_id="e", steps_accepted=5, steps_rejected=1, done_accepted=2)
    for i in range(10):
        b.rejections.add(field="done.request_id", reason=str(i))
    merge_ack(a, b)
    assert (a.seq, a.acked_through_seq, a.steps_accepted, a.steps_rejected, a.done_accepted, a.flagged) == \
        (4, 4, 7, 1, 2, 1)
    assert len(a.rejections) == MAX_LISTED_REJECTIONS and a.rejections[-1].field == "done.request_id"


def test_cumulative_stream_gets_fewer_acks_covering_every_message(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=200.0)) as sc:
        ch = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(ch)
        acks = _collect(stub, [identity(cumulative_acks=True), *_steps(12)])
        ch.close()
    assert acks[0].seq == 0 and acks[0].acked_through_seq == 0
    rest = acks[1:]
    assert 1 <= len(rest) < 12  # twelve messages sent at once: acknowledged together
    assert rest[-1].acked_through_seq == 12 and rest[-1].seq == 12  # the stream's end flushed the rest
    assert [a.acked_through_seq for a in rest] == sorted({a.acked_through_seq for a in rest})
    assert sum(a.steps_accepted for a in rest) == 12


def test_the_timer_sends_a_pending_ack_while_the_stream_stays_open(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=30.0)) as sc:
        ch = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(ch)
        gate = threading.Event()

        def gen():
            yield identity(cumulative_acks=True)
            yield from _steps(3)
            gate.wait(10)  # keep the stream open: only the timer can send the ack

        call = stub.StreamEvents(gen())
        first = next(call)
        t0 = time.perf_counter()
        ack = next(call)
        waited = time.perf_counter() - t0
        gate.set()
        call.cancel()
        ch.close()
    assert first.seq == 0
    assert ack.acked_through_seq == 3 and ack.steps_accepted == 3 and waited < 5.0


def test_a_steady_stream_is_acknowledged_about_once_an_interval(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=40.0)) as sc:
        ch = grpc.insecure_channel(sc.address)
        acks = _collect(sidecar_pb2_grpc.CarbonSidecarStub(ch), [identity(cumulative_acks=True), *_steps(30)],
                        gap_s=0.01)
        ch.close()
    rest = acks[1:]
    assert 2 <= len(rest) <= 15  # ~0.3 s of messages 10 ms apart, an ack every ~40 ms (a busy box: fewer)
    assert rest[-1].acked_through_seq == 30 and sum(a.steps_accepted for a in rest) == 30


def test_old_emitters_get_one_ack_per_message(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=200.0)) as sc:
        ch = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(ch)
        acks = _collect(stub, [identity(), *_steps(5)])
        ch.close()
    assert [a.seq for a in acks] == [0, 1, 2, 3, 4, 5]
    assert all(a.acked_through_seq == 0 and a.steps_accepted == 1 for a in acks[1:])


def test_ack_interval_zero_turns_cumulative_acks_off(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=0.0)) as sc:
        ch = grpc.insecure_channel(sc.address)
        acks = _collect(sidecar_pb2_grpc.CarbonSidecarStub(ch), [identity(cumulative_acks=True), *_steps(4)])
        ch.close()
    assert [a.seq for a in acks] == [0, 1, 2, 3, 4]


def test_a_bad_message_ends_the_stream_after_acknowledging_what_was_journaled(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=500.0)) as sc:
        ch = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(ch)
        acks = []
        with pytest.raises(grpc.RpcError) as info:
            for a in stub.StreamEvents(iter([identity(cumulative_acks=True), *_steps(3), identity()])):
                acks.append(a)
        ch.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "identity" in info.value.details()
    assert acks[-1].acked_through_seq == 3  # the three journaled messages were acknowledged first


def test_emitter_flushes_with_cumulative_acks(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=20.0)) as sc:
        em = Emitter(EngineInfo(engine_name="t", model_name="meta-llama/Llama-2-7b-hf", gpu="A100-SXM4-80GB",
                                instance_id="cum-1"), EmitterConfig(target=sc.address, min_send_interval_s=0.0))
        for k in range(200):
            em.emit_step(k + 1, k * 0.01, k * 0.01 + 0.005, [f"q{k % 4}"], [1 if k >= 4 else 16], [16 + k if k >= 4 else 0],
                         [16])
            if k % 50 == 0:
                time.sleep(0.01)
        assert em.flush(10.0)
        st = em.stats()
        em.close()
    assert st.inflight_messages == 0 and st.acked_messages == st.sent_messages
    assert st.steps_accepted == 200 and st.steps_rejected == 0
