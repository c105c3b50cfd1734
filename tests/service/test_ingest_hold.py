"""Held messages (service/hold.py): with cumulative acks, steps-only messages are journaled and
ingested together, never acknowledged before they are in the journal; a message a record waits on
is ingested at once after them; a quiet stream's held messages go by a timer; the stream's end
ingests the rest. Real gRPC on loopback."""

from __future__ import annotations

import random
import threading
import time

import grpc
import pytest
from sidecar_testkit import identity, make_config, steps_message

from llmco2_sidecar._proto import events_pb2 as pb
from llmco2_sidecar._proto import sidecar_pb2 as spb
from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.service.server import SidecarThread
from llmco2_sidecar.service.wire import BadMessage, Received, StepsOnly, receive_engine_message, steps_only


def _step(k, rid="r0"):
    """Step k of request ``rid``: a prefill at k == 0, then decodes."""
    return steps_message(k + 1, [(k + 1, k * 0.02, k * 0.02 + 0.01, [(rid, 16 if k == 0 else 1, 0 if k == 0 else 15 + k,
                                                                       16)])])


def _finish(k, rid="r0"):
    m = _step(k, rid)
    m.events.done.add(request_id=rid, output_tokens=k + 1)
    return m


# ---- the scan that decides what may be held ----------------------------------------------------
def test_steps_only_says_true_only_for_batches_of_seq_and_steps():
    plain = _step(3).events.SerializeToString()
    assert steps_only(plain) and steps_only(b"") and steps_only(pb.EventBatch(seq=300).SerializeToString())
    assert not steps_only(_finish(3).events.SerializeToString())
    sb = pb.EventBatch(seq=1)
    sb.static_batches.add(batch_id=1, start_s=0, end_s=1, request_id=["a"], prompt_tokens=[1], output_tokens=[1])
    assert not steps_only(sb.SerializeToString())
    assert not steps_only(plain + b"\x28\x01")  # an unknown field (a newer emitter): parsed at once
    assert not steps_only(plain[:-1]) and not steps_only(b"\x08")  # cut short


def test_steps_only_never_hides_a_finish_in_random_bytes():
    """Fuzz: whatever the scan says True for parses to a batch without finishes or static batches, or
    does not parse at all (then the held message ends the stream with INVALID_ARGUMENT, as before)."""
    rnd = random.Random(7)
    base = [_step(k).events.SerializeToString() for k in range(3)] + [_finish(2).events.SerializeToString()]
    checked = 0
    for _ in range(4000):
        b = bytearray(rnd.choice(base))
        for _ in range(rnd.randint(1, 4)):
            op = rnd.random()
            if op < 0.4 and b:
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            elif op < 0.7 and b:
                del b[rnd.randrange(len(b)):]
            else:
                b += bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
        if steps_only(bytes(b)):
            checked += 1
            try:
                ev = pb.EventBatch.FromString(bytes(b))
            except Exception:
                continue
            assert not len(ev.done) and not len(ev.static_batches)
    assert checked > 50


def test_the_deserializer_defers_only_steps_only_messages():
    data = _step(1).SerializeToString()
    got = receive_engine_message(data)
    assert isinstance(got, StepsOnly)
    full = got.parse()
    assert isinstance(full, Received) and full.msg == _step(1) and full.events_bytes == _step(1).events.SerializeToString()
    assert isinstance(receive_engine_message(_finish(1).SerializeToString()), Received)
    assert isinstance(receive_engine_message(identity().SerializeToString()), Received)
    bad = StepsOnly(b"\x12\x05ab")  # scans as steps, does not parse
    assert isinstance(bad.parse_events(), BadMessage) and isinstance(bad.parse(), BadMessage)


# ---- the server --------------------------------------------------------------------------------
def _open(sc):
    ch = grpc.insecure_channel(sc.address)
    return ch, sidecar_pb2_grpc.CarbonSidecarStub(ch)


def _gated_stream(n_steps: int, finish: bool = False):
    """``(messages, sent, gate)``: the identity and ``n_steps`` steps-only messages (``sent`` set after
    them), then, once ``gate`` is set, r0's finish if asked; the stream stays open until ``gate``."""
    gate, sent = threading.Event(), threading.Event()

    def gen():
        yield identity(cumulative_acks=True)
        for k in range(n_steps):
            yield _step(k)
        sent.set()
        gate.wait(10)
        if finish:
            yield _finish(n_steps)
            gate.wait(10)
    return gen(), sent, gate


def test_held_messages_are_acknowledged_only_once_journaled_and_a_finish_sees_every_step(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=1000.0, ingest_hold_ms=400.0)) as sc:
        ch, stub = _open(sc)
        messages, sent, gate = _gated_stream(5, finish=True)
        call = stub.StreamEvents(messages)
        assert next(call).seq == 0
        sent.wait(5)
        time.sleep(0.15)  # the hold (400 ms) is not over: nothing journaled, nothing acknowledged
        assert sc.core.pipeline.submitted == 0  # (journal first, then the pipeline: neither yet)
        gate.set()  # the finish: the five held messages, then it, at once
        ack = next(call)
        assert ack.acked_through_seq == 6 and ack.steps_accepted == 6 and ack.done_accepted == 1
        rec = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="r0", wait_s=10)).records[0]
        assert rec.steps == 6
        call.cancel()
        ch.close()


def test_a_quiet_stream_is_ingested_and_acknowledged_by_the_timer(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=20.0, ingest_hold_ms=60.0)) as sc:
        ch, stub = _open(sc)
        messages, _, gate = _gated_stream(3)  # the stream stays open
        call = stub.StreamEvents(messages)
        next(call)
        ack = next(call)
        gate.set()
        call.cancel()
        ch.close()
    assert ack.acked_through_seq == 3 and ack.steps_accepted == 3  # one Ack for the three


def test_the_streams_end_ingests_what_is_held(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=1000.0, ingest_hold_ms=1000.0)) as sc:
        ch, stub = _open(sc)
        acks = list(stub.StreamEvents(iter([identity(cumulative_acks=True), *[_step(k) for k in range(4)]])))
        ch.close()
        assert sc.flush()
        assert sc.core.pipeline.done_steps == 4
    assert acks[-1].acked_through_seq == 4 and sum(a.steps_accepted for a in acks) == 4


def test_a_held_message_that_does_not_parse_ends_the_stream_after_the_good_ones(tmp_path):
    raw = b"\x12" + bytes([len(b"\x12\x05abcde")]) + b"\x12\x05abcde"  # events { steps: 5 bytes of garbage }
    assert isinstance(receive_engine_message(raw), StepsOnly)  # scans as steps only, does not parse
    assert isinstance(StepsOnly(raw[2:]).parse_events(), BadMessage)
    with SidecarThread(make_config(tmp_path, ack_interval_ms=1000.0, ingest_hold_ms=500.0)) as sc:
        ch = grpc.insecure_channel(sc.address)
        call = ch.stream_stream("/llmco2.v1.CarbonSidecar/StreamEvents", request_serializer=lambda b: b,
                                response_deserializer=pb.Ack.FromString)
        msgs = [identity(cumulative_acks=True).SerializeToString(), _step(0).SerializeToString(),
                _step(1).SerializeToString(), raw]
        acks = []
        with pytest.raises(grpc.RpcError) as info:
            for a in call(iter(msgs)):
                acks.append(a)
        ch.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not parse" in info.value.details()
    assert acks[-1].acked_through_seq == 2  # the two good ones were journaled and acknowledged first


def test_the_hold_never_outlasts_the_ack_interval(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=20.0, ingest_hold_ms=1000.0)) as sc:
        ch, stub = _open(sc)
        gate = threading.Event()

        def gen():
            yield identity(cumulative_acks=True)
            yield _step(0)
            gate.wait(10)

        call = stub.StreamEvents(gen())
        next(call)
        t0 = time.perf_counter()
        ack = next(call)  # by the hold's timer at 1.5 x 20 ms, not 1.5 s
        waited = time.perf_counter() - t0
        gate.set()
        call.cancel()
        ch.close()
    assert ack.acked_through_seq == 1 and waited < 0.9


def test_hold_zero_ingests_each_message_at_once(tmp_path):
    with SidecarThread(make_config(tmp_path, ack_interval_ms=500.0, ingest_hold_ms=0.0)) as sc:
        ch, stub = _open(sc)
        messages, sent, gate = _gated_stream(3)
        call = stub.StreamEvents(messages)
        next(call)
        sent.wait(5)
        deadline = time.monotonic() + 5
        while sc.core.pipeline.submitted < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sc.core.pipeline.submitted == 3  # ingested although no ack was due yet
        gate.set()
        call.cancel()
        ch.close()


def test_config_refuses_a_bad_hold(tmp_path):
    from llmco2_sidecar.errors import InputError

    for bad in (-1.0, 5000.0):
        with pytest.raises(InputError, match="ingest_hold_ms"):
            make_config(tmp_path, ingest_hold_ms=bad)
