"""The sidecar over real gRPC on loopback: streams, validation, lookups, watch, health, reflection, auth."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.protobuf import json_format
from sidecar_testkit import GPU, MODEL, Stream, identity, make_config, rpc_error, steps_message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmco2_sidecar._proto import events_pb2 as pb
from llmco2_sidecar._proto import sidecar_pb2 as spb
from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread


def test_stream_to_record_and_lookup(sidecar, stub):
    s = Stream(stub)
    ack0 = s.send(identity())
    assert ack0.seq == 0 and ack0.stream_id == "engine-1"
    ack = s.send(steps_message(1, [(1, 0.0, 0.05, [("r1", 128, 0, 128), ("r2", 64, 0, 64)]),
                                   (2, 0.06, 0.08, [("r1", 1, 128, 128), ("r2", 1, 64, 64)])],
                               done=[("r1", 2)]))
    assert (ack.seq, ack.steps_accepted, ack.steps_rejected, ack.done_accepted) == (1, 2, 0, 1)
    reply = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="r1", wait_s=5.0))
    rec = reply.records[0]
    assert rec.state == spb.RequestCarbon.STATE_FINISHED
    assert rec.prompt_tokens == 128 and rec.output_tokens == 2 and rec.steps == 2
    assert rec.energy_j.total == pytest.approx(rec.energy_j.prefill + rec.energy_j.decode + rec.energy_j.serving)
    assert rec.energy_j.prefill > 0 and rec.energy_j.decode > 0
    assert rec.carbon_g.total == pytest.approx(rec.carbon_g.operational + rec.carbon_g.embodied)
    assert rec.carbon_g.operational == pytest.approx(rec.energy_j.total * rec.pue / 3.6e6 * rec.carbon_intensity_g_per_kwh)
    # r2 is still running: a lookup without waiting gives its figures so far
    running = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="r2")).records[0]
    assert running.state == spb.RequestCarbon.STATE_RUNNING and running.energy_j.total > 0
    s.close()
    sidecar.flush()
    recs = read_records(sidecar.config.log)
    assert [r["request_id"] for r in recs] == ["r1"]
    r = recs[0]
    for key in ("ts", "request_id", "model", "gpu", "prompt_tokens", "output_tokens", "energy_j", "carbon_g",
                "source", "pue", "carbon_intensity_g_per_kwh"):
        assert key in r
    assert set(r["energy_j"]) == {"prefill", "decode", "serving", "total"}
    assert set(r["carbon_g"]) == {"operational", "embodied", "total"}
    assert r["model"] == MODEL and r["gpu"] == GPU and r["source"] == "predicted"
    assert r["ts"] == pytest.approx(1_700_000_000.08)  # engine clock mapped to wall clock


def test_first_message_must_be_identity(stub):
    s = Stream(stub)
    code, details = rpc_error(lambda: s.send(steps_message(1, [(1, 0, 1, [("a", 1, 0, 1)])])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("identity")


@pytest.mark.parametrize("kw, field", [
    ({"gpu": "NoSuchGPU-9000"}, "identity.gpu"),
    ({"gpu": ""}, "identity.gpu"),
    ({"model_name": ""}, "identity.model_name"),
    ({"model_name": "no/such-model-anywhere"}, "identity.model_name"),
    ({"engine_name": ""}, "identity.engine_name"),
    ({"gpu_count": 3, "tp": 2}, "identity.gpu_count"),
    ({"architecture": pb.ModelArchitecture(hidden_size=4096, num_layers=0, num_heads=32, intermediate_size=11008,
                                           vocab_size=32000)}, "identity.architecture.num_layers"),
    ({"architecture": pb.ModelArchitecture(hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=5,
                                           intermediate_size=11008, vocab_size=32000)},
     "identity.architecture.num_key_value_heads"),
])
def test_bad_identity_names_the_field(stub, kw, field):
    code, details = rpc_error(lambda: Stream(stub).send(identity(**kw)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field), details
    # the server keeps serving
    assert Stream(stub).send(identity("other")).stream_id == "other"


def test_architecture_identity_without_catalog_name(stub):
    arch = pb.ModelArchitecture(model_type="llama", hidden_size=4096, intermediate_size=11008, num_layers=32,
                                num_heads=32, num_kv_heads=32, vocab_size=32000)
    s = Stream(stub)
    assert s.send(identity(model_name="my-private-llama", architecture=arch)).stream_id == "engine-1"
    ack = s.send(steps_message(1, [(1, 0.0, 0.01, [("x", 10, 0, 10)])], done=[("x", 1)]))
    assert ack.steps_accepted == 1
    rec = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="x", wait_s=5)).records[0]
    assert rec.model == "my-private-llama"


def test_second_identity_is_rejected(stub):
    s = Stream(stub)
    s.send(identity())
    code, details = rpc_error(lambda: s.send(identity()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("identity")


def test_bad_events_are_rejected_and_the_stream_goes_on(sidecar, stub):
    s = Stream(stub)
    s.send(identity())
    ok = s.send(steps_message(1, [(5, 1.0, 1.1, [("a", 10, 0, 10)])]))
    assert ok.steps_accepted == 1
    cases = [
        (steps_message(2, [(5, 1.2, 1.3, [("a", 1, 10, 10)])]), "steps.step_id"),  # duplicate id
        (steps_message(3, [(6, 0.2, 0.3, [("a", 1, 10, 10)])]), "steps.end_s"),  # time went backwards
        (steps_message(4, [(7, 2.0, 1.9, [("a", 1, 10, 10)])]), "steps.end_s"),  # ends before it starts
        (steps_message(5, [(8, 2.0, 2.1, [("a", 0, 10, 10)])]), "steps.new_tokens"),
        (steps_message(6, [(9, 2.0, 2.1, [("a", 5_000_000, 10, 10)])]), "steps.new_tokens"),  # absurd
        (steps_message(7, [(10, 2.0, 2.1, [("a", 1, 1 << 30, 10)])]), "steps.context_tokens"),
        (steps_message(8, [(11, 2.0, 2.1, [("", 1, 10, 10)])]), "steps.request_id"),
        (steps_message(9, [(12, 2.0, 2.1, [])]), "steps.slice_count"),
        (steps_message(10, [(13, 2.0, 1e9, [("a", 1, 10, 10)])]), "steps.end_s"),  # absurd duration
        (steps_message(11, [(14, float("nan"), 2.1, [("a", 1, 10, 10)])]), "steps.start_s"),
    ]
    for msg, field in cases:
        ack = s.send(msg)
        assert ack.steps_accepted == 0 and ack.steps_rejected == 1, field
        assert ack.rejections[0].field == field, (field, ack.rejections)
    # malformed columns: one more slice count than slices
    bad = steps_message(12, [(20, 3.0, 3.1, [("a", 1, 10, 10)])])
    bad.events.steps.slice_count[0] = 2
    ack = s.send(bad)
    assert ack.steps_rejected == 1 and ack.rejections[0].field == "steps.request_id"
    bad = steps_message(13, [(21, 3.0, 3.1, [("a", 1, 10, 10)])])
    bad.events.steps.phase.append(9)
    ack = s.send(bad)
    assert ack.rejections[0].field == "steps.phase"
    # unknown and duplicate done events
    ack = s.send(steps_message(14, [], done=[("never-seen", 1)]))
    assert ack.done_rejected == 1 and ack.rejections[0].field == "done.request_id"
    # a continuing request never seen before is accepted and flagged
    ack = s.send(steps_message(15, [(30, 4.0, 4.1, [("late", 1, 500, 400)])]))
    assert ack.steps_accepted == 1 and ack.flagged == 1
    # one good and one bad step in a message: the good one is accepted
    ack = s.send(steps_message(16, [(31, 4.2, 4.3, [("a", 1, 10, 10)]), (31, 4.4, 4.5, [("a", 1, 11, 10)])],
                               done=[("a", 3)]))
    assert (ack.steps_accepted, ack.steps_rejected, ack.done_accepted) == (1, 1, 1)
    ack = s.send(steps_message(17, [], done=[("a", 3)]))
    assert ack.done_rejected == 1 and "duplicate" in ack.rejections[0].reason
    s.close()
    # and the server still serves everyone
    s2 = Stream(stub)
    assert s2.send(identity("engine-2")).stream_id == "engine-2"
    rec = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="a", wait_s=5)).records[0]
    assert rec.steps == 2


def test_reconnect_resends_are_deduplicated(sidecar, stub):
    s = Stream(stub)
    s.send(identity())
    msg = steps_message(1, [(1, 0.0, 0.1, [("d", 10, 0, 10)]), (2, 0.2, 0.3, [("d", 1, 10, 10)])], done=[("d", 2)])
    assert s.send(msg).steps_accepted == 2
    s.close()
    s = Stream(stub)  # the same engine reconnects and sends its unacknowledged message again
    s.send(identity())
    ack = s.send(msg)
    assert ack.steps_accepted == 0 and ack.steps_rejected == 2 and ack.done_rejected == 1
    sidecar.flush()
    assert [r["request_id"] for r in read_records(sidecar.config.log)] == ["d"]


def test_lookup_errors_and_wait(sidecar, stub):
    code, details = rpc_error(lambda: stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("request_id")
    code, _ = rpc_error(lambda: stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="x", wait_s=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = rpc_error(lambda: stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="nobody")))
    assert code == grpc.StatusCode.NOT_FOUND
    s = Stream(stub)
    s.send(identity())
    s.send(steps_message(1, [(1, 0.0, 0.1, [("cmpl-abc-0-1234", 10, 0, 10), ("cmpl-abc-1-5678", 10, 0, 10)])]))
    result = {}

    def waiter():
        result["reply"] = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="cmpl-abc-0-1234", wait_s=10))

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()  # waiting for the finish
    s.send(steps_message(2, [], done=[("cmpl-abc-0-1234", 1)]))
    t.join(10)
    assert result["reply"].records[0].state == spb.RequestCarbon.STATE_FINISHED
    # prefix lookup: one finished, one still running -> both returned after the bounded wait
    reply = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="cmpl-abc-", prefix=True, wait_s=0.2))
    states = sorted(r.state for r in reply.records)
    assert states == [spb.RequestCarbon.STATE_RUNNING, spb.RequestCarbon.STATE_FINISHED]


def test_watch_finished_announces_records(sidecar, stub):
    watch = stub.WatchFinished(spb.WatchRequest(request_id_prefix="w-"))
    got = []

    def reader():
        for rec in watch:
            got.append(rec)
            if len(got) == 2:
                return

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.3)
    s = Stream(stub)
    s.send(identity())
    s.send(steps_message(1, [(1, 0.0, 0.1, [("w-1", 10, 0, 10), ("w-2", 10, 0, 10), ("x-3", 5, 0, 5)])],
                         done=[("w-1", 1), ("x-3", 1), ("w-2", 1)]))
    t.join(10)
    watch.cancel()
    assert [r.request_id for r in got] == ["w-1", "w-2"]
    assert all(r.carbon_g.total > 0 for r in got)


def test_health_and_reflection(sidecar):
    channel = grpc.insecure_channel(sidecar.address)
    h = health_pb2_grpc.HealthStub(channel)
    for service in ("", "llmco2.v1.CarbonSidecar"):
        assert h.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
    r = reflection_pb2_grpc.ServerReflectionStub(channel)
    resp = next(r.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in resp.list_services_response.service}
    assert {"llmco2.v1.CarbonSidecar", "grpc.health.v1.Health"} <= names
    channel.close()


def test_bearer_token(tmp_path):
    with SidecarThread(make_config(tmp_path, token="s3cret")) as sc:
        channel = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        code, _ = rpc_error(lambda: stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="x")))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = rpc_error(lambda: Stream(stub).send(identity()))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        good = [("authorization", "Bearer s3cret")]
        code, _ = rpc_error(lambda: stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="x"), metadata=good))
        assert code == grpc.StatusCode.NOT_FOUND  # authenticated, simply unknown
        assert Stream(stub, metadata=good).send(identity()).stream_id == "engine-1"
        h = health_pb2_grpc.HealthStub(channel)  # health stays open
        assert h.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        channel.close()


def test_unix_socket(tmp_path):
    path = tmp_path / "sidecar.sock"
    with SidecarThread(make_config(tmp_path, unix=str(path))) as sc:
        assert sc.address == f"unix:{path}"
        channel = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        assert Stream(stub).send(identity()).stream_id == "engine-1"
        channel.close()


def test_static_batch_records(sidecar, stub):
    s = Stream(stub)
    s.send(identity())
    msg = pb.EngineMessage()
    msg.events.seq = 1
    msg.events.static_batches.add(batch_id=1, start_s=0.0, end_s=2.0, request_id=["s1", "s2", "s3"],
                                  prompt_tokens=[100, 200, 50], output_tokens=[10, 5, 20])
    msg.events.static_batches.add(batch_id=2, start_s=0.0, end_s=2.0, request_id=["t1"], prompt_tokens=[0],
                                  output_tokens=[1])  # refused: no prompt
    ack = s.send(msg)
    assert ack.batches_accepted == 1 and ack.batches_rejected == 1
    assert ack.rejections[0].field == "static_batches.prompt_tokens"
    recs = {r.request_id: r for r in stub.GetRequestCarbon(
        spb.RequestCarbonQuery(request_id="s", prefix=True, wait_s=5)).records}
    assert set(recs) == {"s1", "s2", "s3"}
    assert recs["s3"].steps == 20 and recs["s3"].output_tokens == 20
    assert recs["s3"].energy_j.decode > recs["s2"].energy_j.decode  # more decode steps
    assert recs["s2"].energy_j.prefill > recs["s3"].energy_j.prefill  # longer prompt


def test_estimate_rpc(stub):
    code, details = rpc_error(lambda: stub.Estimate(spb.EstimateRequest(gpu=GPU, batch=1, prompt_len=1, output_len=1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("model")
    code, details = rpc_error(lambda: stub.Estimate(spb.EstimateRequest(model=MODEL, gpu=GPU, batch=0, prompt_len=1,
                                                                    output_len=1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("batch")
    reply = stub.Estimate(spb.EstimateRequest(model=MODEL, gpu=GPU, batch=4, prompt_len=512, output_len=128))
    result = json_format.MessageToDict(reply.result)
    assert result["energy_j"]["total"] > 0 and result["carbon_g"]["total"] > 0  # the estimate JSON contract
    assert result["energy_j"]["total"] == pytest.approx(sum(result["energy_j"][k] for k in ("prefill", "decode", "serving")))


def test_requests_without_a_finish_are_closed_as_stale(tmp_path):
    with SidecarThread(make_config(tmp_path, ledger_ttl_s=0.3)) as sc:
        channel = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        s = Stream(stub)
        s.send(identity())
        s.send(steps_message(1, [(1, 0.0, 0.1, [("orphan", 10, 0, 10), ("ok", 10, 0, 10)])], done=[("ok", 1)]))
        deadline = time.time() + 10
        recs = []
        while time.time() < deadline:
            recs = read_records(sc.config.log)
            if len(recs) == 2:
                break
            time.sleep(0.1)
        channel.close()
    by_id = {r["request_id"]: r for r in recs}
    assert by_id["orphan"]["stale"] is True and by_id["orphan"]["aborted"] is True
    assert by_id["orphan"]["energy_j"]["total"] > 0 and "stale" not in by_id["ok"]


def test_default_predictor_path(tmp_path):
    """The shipped default predictor (the trained GNN when present) serves the same stream."""
    with SidecarThread(make_config(tmp_path, predictor="default")) as sc:
        channel = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        s = Stream(stub)
        s.send(identity())
        s.send(steps_message(1, [(1, 0.0, 0.05, [("g1", 256, 0, 256), ("g2", 128, 0, 128)]),
                                 (2, 0.06, 0.08, [("g1", 1, 256, 256), ("g2", 1, 128, 128)])],
                             done=[("g1", 2), ("g2", 2)]))
        recs = {r.request_id: r for r in stub.GetRequestCarbon(
            spb.RequestCarbonQuery(request_id="g", prefix=True, wait_s=10)).records}
        channel.close()
        name = sc.core.predictor.name
    assert set(recs) == {"g1", "g2"} and all(r.energy_j.total > 0 for r in recs.values())
    assert recs["g1"].energy_j.prefill > recs["g2"].energy_j.prefill  # the longer prompt
    assert read_records(sc.config.log)[0]["predictor"] == name


def test_ledger_prefix_index_and_lru(tmp_path):
    from llmco2_sidecar.service.ledger import RequestLedger

    led = RequestLedger(max_finished=5, ttl_s=3600)
    for i in range(8):
        led.put_finished({"request_id": f"cmpl-{i % 3}-{i}", "energy_j": {"total": float(i)}})
    assert list(led.finished) == [f"cmpl-{i % 3}-{i}" for i in range(3, 8)]  # the 5 newest kept
    done, running = led.find("cmpl-1-")
    assert sorted(r["request_id"] for r in done) == ["cmpl-1-4", "cmpl-1-7"] and running == []
    assert led._sorted.prefixed("") == sorted(led.finished)
    assert led.find("nothing")[0] == []
