"""Request ids as the client sees them: the carbon log, `llmco2 tail --request`, GetRequestCarbon,
WatchFinished and the metrics' exemplars carry the client's id (vLLM: its X-Request-Id) beside the
engine's id, through a real emitter and a real loopback sidecar."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import grpc
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client import generate_latest

from llmco2_sidecar._proto import sidecar_pb2 as spb
from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.cli.main import main
from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integrations" / "vllm"))
from llmco2_vllm.ids import client_request_id  # noqa: E402

from sidecar_testkit import GPU, MODEL, make_config  # noqa: E402


def test_vllm_engine_ids_to_client_ids():
    assert client_request_id("cmpl-my-stream-1-0-9bf73448") == "my-stream-1"
    assert client_request_id("cmpl-my-stream-1-1-0c1d2e3f") == "my-stream-1"  # second prompt of the same request
    assert client_request_id("chatcmpl-my-stream-1-9bf73448") == "my-stream-1"
    assert client_request_id("chatcmpl-req-5-9bf73448") == "req-5"  # a chat id has no prompt index
    assert client_request_id("cmpl-req-5-0-9bf73448") == "req-5"
    assert client_request_id("cmpl-3f2a9c0d1e2b4f5a8c7d6e5f4a3b2c1d-0-a1b2c3d4") == "3f2a9c0d1e2b4f5a8c7d6e5f4a3b2c1d"
    for other in ("0", "cmpl-x-0", "embd-x-9bf73448", "chatcmpl-x-NOTHEX12", ""):
        assert client_request_id(other) == ""


def _serve_two(sc, clock):
    em = Emitter(EngineInfo(engine_name="vllm", model_name=MODEL, gpu=GPU, instance_id="e1"),
                 EmitterConfig(target=sc.address, clock=lambda: clock[0], client_request_id=client_request_id))
    ids = ["cmpl-my-stream-1-0-9bf73448", "cmpl-my-stream-1-1-0c1d2e3f", "chatcmpl-other-9bf73449"]
    em.emit_step(1, 0.0, 0.05, ids, [50, 50, 40], [0, 0, 0], [50, 50, 40])
    em.emit_step(2, 0.06, 0.07, ids, [1, 1, 1], [50, 50, 40], [50, 50, 40])
    for rid in ids:
        em.emit_done(rid, output_tokens=2, time_s=0.07)
    assert em.flush(timeout_s=10)
    em.close()


def test_client_ids_in_log_tail_lookup_watch_and_exemplars(tmp_path, capsys):
    cfg = make_config(tmp_path)
    with SidecarThread(cfg) as sc:
        channel = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        watch = stub.WatchFinished(spb.WatchRequest(request_id_prefix="my-stream"))
        _serve_two(sc, [0.0])
        sc.flush()
        by_client = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="my-stream-1"))
        by_prefix = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="my-str", prefix=True))
        by_engine = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="chatcmpl-other-9bf73449"))
        watched = [next(watch), next(watch)]
        watch.cancel()
        om = openmetrics_latest(sc.core.metrics.registry).decode()
        plain = generate_latest(sc.core.metrics.registry).decode()
        channel.close()
    recs = {r["request_id"]: r for r in read_records(cfg.log)}
    assert recs["cmpl-my-stream-1-0-9bf73448"]["client_request_id"] == "my-stream-1"
    assert recs["cmpl-my-stream-1-1-0c1d2e3f"]["client_request_id"] == "my-stream-1"
    assert recs["chatcmpl-other-9bf73449"]["client_request_id"] == "other"
    # GetRequestCarbon by the client's id: both engine requests of the HTTP request, each naming both ids
    assert sorted(r.request_id for r in by_client.records) == ["cmpl-my-stream-1-0-9bf73448", "cmpl-my-stream-1-1-0c1d2e3f"]
    assert {r.client_request_id for r in by_client.records} == {"my-stream-1"}
    assert len(by_prefix.records) == 2
    assert by_engine.records[0].client_request_id == "other"
    assert {w.client_request_id for w in watched} == {"my-stream-1"}
    # llmco2 tail --request with the client's id finds them (and shows the client's id)
    assert main(["tail", cfg.log, "--once", "--request", "my-stream-1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all("my-stream-1" in line for line in out[1:]), out
    assert main(["tail", cfg.log, "--once", "--request", "cmpl-my-stream-1-1"]) == 0  # the engine's id still works
    assert len(capsys.readouterr().out.splitlines()) == 2
    # exemplars name the client's id (OpenMetrics only; the plain text format has no request ids)
    shown = set(re.findall(r'# \{request_id="([^"]*)"\}', om))  # a bucket keeps its latest exemplar
    assert shown and shown <= {"my-stream-1", "other"}, shown
    assert "my-stream-1" not in plain


def test_long_client_ids_are_dropped_not_the_finish_and_exemplars_fit(tmp_path):
    long_id = "x" * 600  # over the 512-character id limit
    cfg = make_config(tmp_path)
    with SidecarThread(cfg) as sc:
        em = Emitter(EngineInfo(engine_name="t", model_name=MODEL, gpu=GPU, instance_id="e1"),
                     EmitterConfig(target=sc.address, clock=time.monotonic))
        em.emit_step(1, 0.0, 0.05, ["a"], [10], [0], [10])
        em.emit_step(2, 0.06, 0.07, ["b" * 200], [10], [0], [10])
        em.emit_done("a", output_tokens=1, client_request_id=long_id)
        em.emit_done("b" * 200, output_tokens=1)
        assert em.flush(timeout_s=10)
        em.close()
        sc.flush()
        om = openmetrics_latest(sc.core.metrics.registry).decode()
    recs = {r["request_id"]: r for r in read_records(cfg.log)}
    assert recs["a"]["client_request_id"] is None  # too long for the wire limits: dropped, the record kept
    assert recs["b" * 200]["client_request_id"] is None
    assert '{request_id="' + "b" * 117 + '~"}' in om
