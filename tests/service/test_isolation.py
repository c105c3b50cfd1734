"""Issue 13: one bad engine must never cost another engine its records (real gRPC on loopback)."""

from __future__ import annotations

import json

import grpc
import pytest
from isolation_kit import POISON_PROMPT, Engine, PoisonPredictor
from sidecar_testkit import Stream, identity, make_config

from llmco2_sidecar._proto import events_pb2 as pb
from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread

pytestmark = pytest.mark.timeout(120)


def _sidecar(tmp_path, predictor=None, **kw):
    return SidecarThread(make_config(tmp_path, **kw), predictor=predictor).start()


def _records(sc):
    sc.flush()
    return {r["request_id"]: r for r in read_records(sc.config.log)}


def _dead_letters(sc):
    path = sc.core.dead_letter.path
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_identity_with_tp_not_dividing_heads_is_refused_and_the_healthy_engine_keeps_every_record(tmp_path):
    """The reported case: engine B's TP (3) does not divide Llama-2-7B's 32 heads. It used to be
    acknowledged, journaled, and then fail every micro-batch it shared with engine A."""
    sc = _sidecar(tmp_path, micro_batch_ms=20.0)
    try:
        stub = sidecar_pb2_grpc.CarbonSidecarStub(grpc.insecure_channel(sc.address))
        good = Engine(stub, "good")
        with pytest.raises(grpc.RpcError) as info:
            Stream(stub).send(identity("bad", tp=3, gpu_count=3))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("identity.tp"), info.value.details()
        for _ in range(20):
            good.send(good.message())
        good.close()
        recs = _records(sc)
        assert sorted(recs) == sorted(good.acked_done) and len(recs) == 60
        assert all(r["source"] == "predicted" for r in recs.values())
    finally:
        sc.stop()


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_predictor_failure_on_one_engine_costs_only_its_culprit_messages(tmp_path, mode):
    """Two engines of ONE deployment (their steps share a predictor call); engine B sends a step the
    predictor fails on (an exception, or NaN energy) every third message. Engine A keeps every
    record; B loses only the poisoned messages' requests, which still get a record saying why, and
    whose events land in the dead-letter file."""
    sc = _sidecar(tmp_path, predictor=PoisonPredictor(mode), micro_batch_ms=20.0, step_wait_ms=20.0)
    try:
        stub = sidecar_pb2_grpc.CarbonSidecarStub(grpc.insecure_channel(sc.address))
        a, b = Engine(stub, "a"), Engine(stub, "b")
        poisoned: list[str] = []
        for m in range(30):
            a.send(a.message())
            if m % 3 == 1:
                msg = b.message(prompt=lambda k: POISON_PROMPT if k == 1 else 64 + k)
                poisoned.extend(d.request_id for d in msg.events.done)
            else:
                msg = b.message()
            b.send(msg)
        a.close()
        b.close()
        recs = _records(sc)
        assert sorted(r for r in recs if r.startswith("a-")) == sorted(a.acked_done)
        assert all(recs[r]["source"] == "predicted" for r in a.acked_done)
        assert sorted(r for r in recs if r.startswith("b-")) == sorted(b.acked_done)  # none missing
        bad = {r for r in b.acked_done if recs[r]["source"] == "error"}
        assert bad == set(poisoned)  # at most the culprit messages
        assert all("predict" in recs[r]["error"] for r in bad)
        dl = _dead_letters(sc)
        assert dl and all(d["engine"] == "b" and d["error"] for d in dl)
        assert sum(d["steps"] for d in dl) == 10 * 2 * 3
        text = sc.core.metrics.registry.get_sample_value("llmco2_dead_letter_total", {"reason": "predict"})
        assert text == len(dl)
    finally:
        sc.stop()


@pytest.mark.parametrize("kw, field", [
    ({"tp": 3, "gpu_count": 3}, "identity.tp"),  # 32 heads
    ({"pp": 64}, "identity.pp"),  # 32 layers
    ({"model_name": "meta-llama/Llama-2-70b-hf", "gpu": "L4"}, "identity.gpu"),  # 138 GB of weights on 24 GB
    ({"model_name": "custom", "tp": 2, "architecture": pb.ModelArchitecture(
        model_type="llama", hidden_size=4096, intermediate_size=11007, num_layers=32, num_heads=32,
        num_kv_heads=32, vocab_size=32000)}, "identity.tp"),  # intermediate_size not divisible
])
def test_identities_the_pipeline_would_refuse_are_refused_up_front(tmp_path, kw, field):
    sc = _sidecar(tmp_path)
    try:
        stub = sidecar_pb2_grpc.CarbonSidecarStub(grpc.insecure_channel(sc.address))
        good = Engine(stub, "good")
        good.send(good.message())
        with pytest.raises(grpc.RpcError) as info:
            Stream(stub).send(identity("bad", **kw))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith(field), info.value.details()
        assert info.value.details().count("(allowed:") <= 1, info.value.details()
        good.send(good.message())
        good.close()
        assert sorted(_records(sc)) == sorted(good.acked_done) and len(good.acked_done) == 6
        assert "bad" not in sc.core.streams and not _dead_letters(sc)
    finally:
        sc.stop()


def _static(msg, batch_id, rids, prompt, output, t0=0.0, t1=0.5):
    msg.events.static_batches.add(batch_id=batch_id, start_s=t0, end_s=t1, request_id=rids, prompt_tokens=prompt,
                                  output_tokens=output)
    return msg


def test_static_batch_poison_costs_only_its_batch(tmp_path):
    sc = _sidecar(tmp_path, predictor=PoisonPredictor("raise"))
    try:
        stub = sidecar_pb2_grpc.CarbonSidecarStub(grpc.insecure_channel(sc.address))
        a, b = Engine(stub, "a"), Engine(stub, "b")
        msg = b.message()
        _static(msg, 1, ["s1", "s2"], [100, 120], [4, 5])
        _static(msg, 2, ["p1", "p2"], [POISON_PROMPT, 50], [3, 3], 1.0, 1.4)
        _static(msg, 3, ["s3"], [90], [2], 2.0, 2.2)
        ack = b.send(msg)
        assert ack.batches_accepted == 3
        a.send(a.message())
        # a batch the pipeline cannot hold (requests x longest output) is refused in the Ack
        big = _static(b.message(), 4, [f"x{i}" for i in range(64)], [10] * 64, [1 << 19] * 64)
        ack = b.send(big)
        assert ack.batches_rejected == 1 and ack.rejections[0].field == "static_batches.output_tokens"
        a.close()
        b.close()
        recs = _records(sc)
        assert all(recs[r]["source"] == "predicted" for r in a.acked_done)
        assert all(recs[r]["source"] == "predicted" for r in b.acked_done)
        assert {r: recs[r]["source"] for r in ("s1", "s2", "s3", "p1", "p2")} == {
            "s1": "predicted", "s2": "predicted", "s3": "predicted", "p1": "error", "p2": "error"}
        assert recs["p1"]["error"].startswith("static_batch: RuntimeError") and recs["p2"]["output_tokens"] == 3
        assert [d["reason"] for d in _dead_letters(sc)] == ["static_batch"]
        assert not any(r.startswith("x") for r in recs)
    finally:
        sc.stop()


def test_a_failing_finish_costs_only_its_request(tmp_path, monkeypatch):
    """A fault injected where a finish is turned into a record (the ledger): that request gets an
    error record, everything else its usual one."""
    sc = _sidecar(tmp_path, micro_batch_ms=20.0)
    try:
        ledger = sc.core.ledger
        close = ledger.close

        def flaky_close(rid):
            if rid == "b-m2-r1":
                raise OSError("injected ledger failure")
            return close(rid)

        monkeypatch.setattr(ledger, "close", flaky_close)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(grpc.insecure_channel(sc.address))
        a, b = Engine(stub, "a"), Engine(stub, "b")
        for _ in range(3):
            a.send(a.message())
            b.send(b.message())
        a.close()
        b.close()
        recs = _records(sc)
        assert len(recs) == 18
        assert [r for r in recs if recs[r]["source"] == "error"] == ["b-m2-r1"]
        assert recs["b-m2-r1"]["error"] == "finish: OSError: injected ledger failure"
        assert [(d["reason"], d["request_ids"]) for d in _dead_letters(sc)] == [("finish", ["b-m2-r1"])]
    finally:
        sc.stop()


def test_bytes_that_do_not_parse_end_the_stream_with_invalid_argument(tmp_path, caplog):
    sc = _sidecar(tmp_path)
    try:
        channel = grpc.insecure_channel(sc.address)
        raw = channel.stream_stream("/llmco2.v1.CarbonSidecar/StreamEvents", request_serializer=lambda b: b,
                                    response_deserializer=pb.Ack.FromString)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        good = Engine(stub, "good")
        for k in range(3):  # as the first message, and after a valid identity
            msgs = [b"\xff\xff\xff garbage"] if k == 0 else [identity(f"x{k}").SerializeToString(), b"\x0a\xff\x01"]
            with pytest.raises(grpc.RpcError) as info:
                list(raw(iter(msgs)))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details().startswith("message: does not parse"), info.value.details()
        good.send(good.message())
        good.close()
        assert sorted(_records(sc)) == sorted(good.acked_done)
        assert sc.core.metrics.registry.get_sample_value("llmco2_bad_messages_total") == 3
        lines = [r for r in caplog.records if "does not parse" in r.getMessage()]
        assert len(lines) == 1 and lines[0].exc_info is None  # one line, no traceback
    finally:
        sc.stop()


def test_bad_wire_events_are_refused_in_the_ack_and_cost_no_one_else(tmp_path):
    """Engine b's bad steps, finishes and static batches are refused in its Acks (naming the field);
    engine a, streaming in between, keeps every record; nothing reaches the dead-letter file."""
    from sidecar_testkit import steps_message

    sc = _sidecar(tmp_path, micro_batch_ms=20.0)
    try:
        stub = sidecar_pb2_grpc.CarbonSidecarStub(grpc.insecure_channel(sc.address))
        a, b = Engine(stub, "a"), Engine(stub, "b")
        bad = [
            steps_message(1, [(5, 0.0, 0.01, [("z", 0, 0, 5)])]),  # a slice of zero tokens
            steps_message(2, [(6, 0.5, 0.4, [("z", 1, 0, 5)])]),  # ends before it starts
            steps_message(3, [(7, 0.0, 0.01, [("z", 3, 0, 3)])], done=[("never-seen", 1), ("z", 1), ("z", 1)]),
            _static(steps_message(4, []), 9, ["s", "s"], [3, 3], [1, 1]),  # a request twice in a batch
            steps_message(5, [(7, 0.0, 0.01, [("y", 3, 0, 3)])]),  # a duplicate step id
        ]
        fields = []
        for msg in bad:
            a.send(a.message())
            fields += [r.field for r in b.send(msg).rejections]
        a.close()
        b.close()
        assert fields == ["steps.new_tokens", "steps.end_s", "done.request_id", "done.request_id",
                          "static_batches.request_id", "steps.step_id"]
        recs = _records(sc)
        assert sorted(r for r in recs if r.startswith("a-")) == sorted(a.acked_done)
        assert all(recs[r]["source"] == "predicted" for r in recs)
        assert set(recs) == set(a.acked_done) | {"z"}
        assert not _dead_letters(sc)
    finally:
        sc.stop()


def test_a_bug_outside_the_isolated_parts_still_gives_records(tmp_path, monkeypatch):
    """The last resort: a failure where no isolation applies (injected into the micro-batch's
    grouping) dead-letters the micro-batch's messages and still writes their finishes' records."""
    sc = _sidecar(tmp_path)
    try:
        stub = sidecar_pb2_grpc.CarbonSidecarStub(grpc.insecure_channel(sc.address))
        good = Engine(stub, "good")
        good.send(good.message())
        sc.flush()

        def broken(by_stream):
            raise KeyError("injected bug")

        monkeypatch.setattr(sc.core.pipeline, "_predict_units", broken)
        good.send(good.message())
        sc.flush()
        monkeypatch.undo()
        good.send(good.message())
        good.close()
        recs = _records(sc)
        assert sorted(recs) == sorted(good.acked_done) and len(recs) == 9
        errs = sorted(r for r in recs if recs[r]["source"] == "error")
        assert errs == ["good-m2-r0", "good-m2-r1", "good-m2-r2"]
        assert recs["good-m2-r0"]["error"] == "pipeline: KeyError: 'injected bug'"
        assert [d["reason"] for d in _dead_letters(sc)] == ["pipeline"]
    finally:
        sc.stop()
