"""--otlp: metrics and one log record per finished request, received by an OTLP collector started
here that speaks the real protocol (opentelemetry-proto's MetricsService and LogsService over gRPC)."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc  # noqa: E402
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc  # noqa: E402
from sidecar_testkit import identity, make_config, steps_message  # noqa: E402

from llmco2_sidecar._proto import sidecar_pb2_grpc  # noqa: E402
from llmco2_sidecar.service import otel  # noqa: E402
from llmco2_sidecar.service.metrics import SidecarMetrics  # noqa: E402
from llmco2_sidecar.service.server import SidecarThread  # noqa: E402


class Collector(metrics_service_pb2_grpc.MetricsServiceServicer, logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self):
        self.metrics: list = []
        self.logs: list = []
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self.server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Export(self, request, context):  # noqa: N802 - both services name their one method Export
        with self.lock:
            if isinstance(request, metrics_service_pb2.ExportMetricsServiceRequest):
                self.metrics.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()
            self.logs.append(request)
            return logs_service_pb2.ExportLogsServiceResponse()

    def stop(self):
        self.server.stop(0)


def _value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind)


def _attrs(kvs) -> dict:
    return {kv.key: _value(kv.value) for kv in kvs}


def _metrics(reqs) -> dict[str, list]:
    """metric name -> (unit, kind, [(attributes, point)]) from the last export that had it."""
    out = {}
    for req in reqs:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    pts = [(_attrs(p.attributes), p) for p in getattr(m, kind).data_points]
                    out[m.name] = (m.unit, kind, pts)
    return out


def test_otlp_exports_metrics_and_one_log_per_request(tmp_path):
    col = Collector()
    cfg = make_config(tmp_path, otlp=f"http://127.0.0.1:{col.port}", otlp_interval_s=0.2)
    try:
        with SidecarThread(cfg) as sc:
            channel = grpc.insecure_channel(sc.address)
            stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
            msgs = [identity(engine_name="vLLM"),
                    steps_message(1, [(1, 0.0, 0.05, [("chatcmpl-abc-9bf73448", 100, 0, 100), ("r2", 30, 0, 30)]),
                                      (2, 0.06, 0.07, [("chatcmpl-abc-9bf73448", 1, 100, 100), ("r2", 1, 30, 30)])],
                                  done=[("chatcmpl-abc-9bf73448", 2), ("r2", 2)])]
            list(stub.StreamEvents(iter(msgs)))
            sc.flush()
            channel.close()
        # the sidecar's stop flushed both providers
    finally:
        col.stop()
    logs = [lr for req in col.logs for rl in req.resource_logs for sl in rl.scope_logs for lr in sl.log_records]
    assert len(logs) == 2
    res = _attrs(col.logs[0].resource_logs[0].resource.attributes)
    assert res["service.name"] == "llmco2-sidecar" and res["service.version"]
    by_id = {_attrs(lr.attributes)["llmco2.engine.request_id"]: lr for lr in logs}
    lr = by_id["chatcmpl-abc-9bf73448"]
    a = _attrs(lr.attributes)
    assert a["gen_ai.request.model"] == "meta-llama/Llama-2-7b-hf"
    assert a["gen_ai.provider.name"] == "vllm"  # the engine's identity names it
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.usage.input_tokens"] == 100 and a["gen_ai.usage.output_tokens"] == 2
    assert a["llmco2.carbon.total_g"] > 0 and a["llmco2.energy.total_j"] > 0
    assert a["llmco2.grid.kind"] == "location" and a["llmco2.grid.source"].startswith("static:world")
    assert a["llmco2.sci.g_per_1k_output_tokens"] == pytest.approx(a["llmco2.carbon.total_g"] * 500)
    assert lr.severity_number == 9 and lr.event_name == "llmco2.request" and lr.time_unix_nano > 0
    assert "gen_ai.operation.name" not in _attrs(by_id["r2"].attributes)  # not a vLLM id: no operation known

    m = _metrics(col.metrics)
    unit, kind, pts = m["llmco2.energy"]
    assert (unit, kind) == ("J", "sum")
    phases = {p[0]["llmco2.phase"]: p[1].as_double for p in pts if p[0]["llmco2.source"] == "predicted"}
    assert phases["prefill"] > 0 and phases["decode"] > 0
    assert m["llmco2.carbon"][0] == "g"
    unit, kind, pts = m["llmco2.request.carbon"]
    assert (unit, kind) == ("g", "histogram") and pts[0][1].count == 2
    tok = {p[0]["gen_ai.token.type"]: p[1] for p in m["llmco2.request.tokens"][2]}
    assert tok["input"].sum == 130 and tok["output"].sum == 4
    assert m["llmco2.grid.intensity"][0] == "g/kWh" and m["llmco2.grid.intensity"][2][0][1].as_double == 481.0
    finished = {p[0]["llmco2.outcome"]: p[1].as_double for p in m["llmco2.requests.finished"][2]}
    assert finished["finished"] == 2


@pytest.mark.parametrize("env, name", [
    ({}, "llmco2-sidecar"),
    ({"OTEL_SERVICE_NAME": "carbon-eu1"}, "carbon-eu1"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, service.name=carbon-eu2"}, "carbon-eu2"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod"}, "llmco2-sidecar"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "service.name="}, "llmco2-sidecar"),  # empty: not a name
])
def test_the_service_name_set_in_the_environment_wins(env, name, monkeypatch):
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name the service as the SDK documents; the sidecar's
    default only fills the gap (through the SDK's own Resource.create, as the exporter builds it)."""
    from opentelemetry.sdk.resources import Resource

    for var in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    res = Resource.create(otel.resource_attributes(dict(env), "1.2.3")).attributes
    assert res["service.name"] == name and res["service.version"] == "1.2.3"
    if "deployment.environment" in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        assert res["deployment.environment"] == "prod"


def test_every_prometheus_metric_has_an_otel_name():
    names = {fam.name for fam in SidecarMetrics().registry.collect()}
    mapped = {m.prom for m in otel.METRICS}
    assert names == mapped, (names - mapped, mapped - names)


def test_unreachable_collector_costs_no_record(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = make_config(tmp_path, otlp=f"http://127.0.0.1:{port}", otlp_interval_s=0.2, otlp_timeout_s=1.0)
    with SidecarThread(cfg) as sc:
        channel = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        list(stub.StreamEvents(iter([identity(), steps_message(1, [(1, 0.0, 0.05, [("x", 10, 0, 10)])],
                                                                done=[("x", 1)])])))
        sc.flush()
        channel.close()
        assert sc.core.otlp.records_exported == 1
    from llmco2_sidecar.service.carbon_log import read_records

    assert [r["request_id"] for r in read_records(cfg.log)] == ["x"]


def test_a_log_record_carries_the_expected_error_of_a_predicted_figure():
    from llmco2_sidecar.service.otel import log_attributes

    rec = {"request_id": "r1", "energy_j": {"total": 1.0}, "carbon_g": {"total": 0.1}, "source": "predicted",
           "expected_error_pct": 16.4}
    assert log_attributes(rec)["llmco2.expected_error_pct"] == 16.4
    assert "llmco2.expected_error_pct" not in log_attributes(dict(rec, expected_error_pct=None))
