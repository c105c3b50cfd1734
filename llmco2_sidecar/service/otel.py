"""OpenTelemetry export (``llmco2 serve --otlp ENDPOINT``): the sidecar's metrics and one log record
per finished request, over OTLP/gRPC, for an OpenTelemetry collector.

Needs the ``[otel]`` extra (``opentelemetry-sdk``, ``opentelemetry-exporter-otlp-proto-grpc``).
Names follow the OpenTelemetry GenAI semantic conventions where one exists
(``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``, ``gen_ai.operation.name``, ``gen_ai.token.type``) and ``llmco2.*`` for the rest (semconv has no
carbon names yet); the full list is docs/otel.md and :data:`METRICS` / :func:`log_attributes` here.

* Counters and gauges: observable instruments read from the Prometheus registry at each export
  (one source of truth; every ``--otlp-interval-s``).
* Histograms: every observation of the Prometheus histograms (per-request energy, carbon, tokens,
  the latency histograms) is recorded in an OpenTelemetry histogram too.
* Logs: one record per finished request (event ``llmco2.request``), emitted on the pipeline thread
  into a batch processor (the export runs on the SDK's own thread).

The endpoint follows the OTLP exporter's rules: ``http://host:4317`` is plaintext, ``https://`` is
TLS, and without a scheme TLS unless ``OTEL_EXPORTER_OTLP_INSECURE=true``. ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES`` and the ``OTEL_EXPORTER_OTLP_*`` headers/timeouts apply as usual: a
``service.name`` set by either wins over the default ``llmco2-sidecar`` (:func:`resource_attributes`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("llmco2.otel")

INSTALL_HINT = "pip install 'llmco2-sidecar[otel]' (opentelemetry-sdk, opentelemetry-exporter-otlp-proto-grpc)"


@dataclass(frozen=True)
class MetricName:
    prom: str  # Prometheus family name (counters without _total)
    otel: str
    unit: str
    kind: str  # "counter", "gauge", "histogram"
    attrs: tuple[str, ...] = ()  # OpenTelemetry attribute name of each Prometheus label, in order


# Every metric of SidecarMetrics (tests/service/test_otel.py checks that none is missing).
METRICS = (
    MetricName("llmco2_energy_joules", "llmco2.energy", "J", "counter", ("llmco2.phase", "llmco2.source")),
    MetricName("llmco2_carbon_grams", "llmco2.carbon", "g", "counter", ("llmco2.carbon.kind",)),
    MetricName("llmco2_requests_finished", "llmco2.requests.finished", "{request}", "counter", ("llmco2.outcome",)),
    MetricName("llmco2_ingest_steps", "llmco2.ingest.steps", "{step}", "counter", ("llmco2.outcome",)),
    MetricName("llmco2_ingest_done", "llmco2.ingest.done", "{event}", "counter", ("llmco2.outcome",)),
    MetricName("llmco2_ingest_batches", "llmco2.ingest.batches", "{batch}", "counter", ("llmco2.outcome",)),
    MetricName("llmco2_ingest_flagged", "llmco2.ingest.flagged", "{item}", "counter"),
    MetricName("llmco2_ingest_rejections", "llmco2.ingest.rejections", "{item}", "counter", ("llmco2.field",)),
    MetricName("llmco2_watch_dropped", "llmco2.watch.dropped", "{record}", "counter"),
    MetricName("llmco2_measured_windows", "llmco2.measured_windows", "{window}", "counter"),
    MetricName("llmco2_grid_polls", "llmco2.grid.polls", "{poll}", "counter", ("llmco2.outcome",)),
    MetricName("llmco2_dead_letter", "llmco2.dead_letter", "{unit}", "counter", ("llmco2.reason",)),
    MetricName("llmco2_bad_messages", "llmco2.bad_messages", "{message}", "counter"),
    MetricName("llmco2_disk_errors", "llmco2.disk.errors", "{error}", "counter", ("llmco2.file",)),
    MetricName("llmco2_disk_ok", "llmco2.disk.ok", "1", "gauge"),
    MetricName("llmco2_log_backlog_records", "llmco2.log.backlog", "{record}", "gauge"),
    MetricName("llmco2_streams_open", "llmco2.streams.open", "{stream}", "gauge"),
    MetricName("llmco2_pipeline_queue_depth", "llmco2.pipeline.queue_depth", "{message}", "gauge"),
    MetricName("llmco2_grid_intensity_g_per_kwh", "llmco2.grid.intensity", "g/kWh", "gauge"),
    MetricName("llmco2_grid_fallback", "llmco2.grid.fallback", "1", "gauge"),
    MetricName("llmco2_grid_reading_timestamp_seconds", "llmco2.grid.reading_time", "s", "gauge"),
    MetricName("llmco2_grid_source", "llmco2.grid.source", "1", "info", ("llmco2.grid.kind", "llmco2.grid.source",
                                                                         "llmco2.grid.state")),
    MetricName("llmco2_request_energy_joules", "llmco2.request.energy", "J", "histogram"),
    MetricName("llmco2_request_carbon_grams", "llmco2.request.carbon", "g", "histogram"),
    MetricName("llmco2_request_tokens", "llmco2.request.tokens", "{token}", "histogram", ("gen_ai.token.type",)),
    MetricName("llmco2_record_latency_seconds", "llmco2.record.latency", "s", "histogram"),
    MetricName("llmco2_finish_lag_seconds", "llmco2.finish.lag", "s", "histogram"),
    MetricName("llmco2_event_loop_lag_seconds", "llmco2.event_loop.lag", "s", "histogram"),
)
# Prometheus label values mapped to GenAI names (gen_ai.token.type is "input" / "output")
_VALUE_MAP = {("gen_ai.token.type", "prompt"): "input"}
# SidecarMetrics attribute -> Prometheus family, for the histograms teed into OpenTelemetry
_HISTOGRAM_ATTRS = {"req_energy": "llmco2_request_energy_joules", "req_carbon": "llmco2_request_carbon_grams",
                    "req_tokens": "llmco2_request_tokens", "latency": "llmco2_record_latency_seconds",
                    "finish_lag": "llmco2_finish_lag_seconds", "loop_lag": "llmco2_event_loop_lag_seconds"}


def _operation(engine_id: str) -> str | None:
    """gen_ai.operation.name from a vLLM engine id (cmpl-: text_completion, chatcmpl-: chat)."""
    if engine_id.startswith("chatcmpl-"):
        return "chat"
    if engine_id.startswith("cmpl-"):
        return "text_completion"
    return None


DEFAULT_SERVICE_NAME = "llmco2-sidecar"


def resource_attributes(env: dict, service_version: str = "") -> dict[str, str]:
    """What the sidecar adds to the OpenTelemetry resource: ``service.name`` = ``llmco2-sidecar``
    only where neither ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` names the service (the
    SDK's environment detector reads both, and attributes passed here would override them), and
    ``service.version``."""
    named = bool(env.get("OTEL_SERVICE_NAME", "").strip()) or any(
        part.split("=", 1)[0].strip() == "service.name" and part.split("=", 1)[1].strip()
        for part in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",") if "=" in part)
    attrs = {} if named else {"service.name": DEFAULT_SERVICE_NAME}
    if service_version:
        attrs["service.version"] = service_version
    return attrs


def log_attributes(rec: dict, provider: str | None = None) -> dict[str, Any]:
    """The attributes of a finished request's log record (None values left out). ``provider``: the
    serving engine that ran it, as its identity names it (``gen_ai.provider.name``: the GenAI
    conventions' list has no self-hosted engine, so the engine's own name, e.g. ``vllm``)."""
    e, c, sci = rec["energy_j"], rec["carbon_g"], rec.get("sci") or {}
    client = rec.get("client_request_id")
    attrs = {
        "gen_ai.provider.name": provider or None,
        "gen_ai.request.model": rec.get("model"),
        "gen_ai.operation.name": _operation(rec["request_id"]),
        "gen_ai.usage.input_tokens": rec.get("prompt_tokens"),
        "gen_ai.usage.output_tokens": rec.get("output_tokens"),
        "http.request.header.x-request-id": [client] if client else None,
        "llmco2.request.id": client or rec["request_id"],
        "llmco2.engine.request_id": rec["request_id"],
        "llmco2.engine.id": rec.get("engine"),
        "llmco2.gpu": rec.get("gpu"),
        "llmco2.aborted": bool(rec.get("aborted")),
        "llmco2.stale": bool(rec.get("stale")),
        "llmco2.steps": rec.get("steps"),
        "llmco2.gpu_s": rec.get("gpu_s"),
        "llmco2.energy.prefill_j": e.get("prefill"),
        "llmco2.energy.decode_j": e.get("decode"),
        "llmco2.energy.serving_j": e.get("serving"),
        "llmco2.energy.total_j": e.get("total"),
        "llmco2.carbon.operational_g": c.get("operational"),
        "llmco2.carbon.embodied_g": c.get("embodied"),
        "llmco2.carbon.total_g": c.get("total"),
        "llmco2.source": rec.get("source"),
        "llmco2.predictor": rec.get("predictor"),
        "llmco2.expected_error_pct": rec.get("expected_error_pct"),
        "llmco2.pue": rec.get("pue"),
        "llmco2.grid.intensity_g_per_kwh": rec.get("carbon_intensity_g_per_kwh"),
        "llmco2.grid.kind": rec.get("carbon_intensity_kind"),
        "llmco2.grid.source": rec.get("carbon_intensity_source"),
        "llmco2.grid.reading_time_s": rec.get("carbon_intensity_ts"),
        "llmco2.grid.region": rec.get("region"),
        "llmco2.sci.g_per_request": sci.get("g_per_request"),
        "llmco2.sci.g_per_1k_output_tokens": sci.get("g_per_1k_output_tokens"),
        "llmco2.sci.g_per_1k_tokens": sci.get("g_per_1k_tokens"),
    }
    return {k: v for k, v in attrs.items() if v is not None}


class _TeeHistogram:
    """A Prometheus histogram (or one labelled child) whose observations also go to OpenTelemetry."""

    def __init__(self, prom, otel, attrs: dict | None = None, label_attrs: tuple[str, ...] = ()):
        self._prom, self._otel, self._attrs, self._label_attrs = prom, otel, attrs, label_attrs

    def observe(self, amount, exemplar=None):
        self._prom.observe(amount, exemplar) if exemplar is not None else self._prom.observe(amount)
        self._otel.record(amount, self._attrs)

    def observe_many(self, values, exemplars=None):
        from .histograms import observe_many

        observe_many(self._prom, values, exemplars)
        for v in values:
            self._otel.record(v, self._attrs)

    def labels(self, *values):
        attrs = {a: _VALUE_MAP.get((a, v), v) for a, v in zip(self._label_attrs, values)}
        return _TeeHistogram(self._prom.labels(*values), self._otel, attrs)

    def __getattr__(self, name):  # anything else (collect, _samples, ...) is the Prometheus object's
        return getattr(self._prom, name)


class OtlpExporter:
    """Exports a :class:`~.metrics.SidecarMetrics` and finished requests' records over OTLP/gRPC."""

    def __init__(self, endpoint: str, metrics, interval_s: float = 10.0, service_version: str = "",
                 timeout_s: float = 5.0, provider_of=None):
        try:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk._logs import LoggerProvider
            from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.resources import Resource
        except ImportError as exc:
            from ..errors import InputError

            raise InputError("otlp", f"OpenTelemetry is not installed ({exc.name}): {INSTALL_HINT}") from None
        self.endpoint = endpoint
        insecure = True if endpoint.startswith("http://") else (False if endpoint.startswith("https://") else None)
        resource = Resource.create(resource_attributes(os.environ, service_version))
        # engine id -> the engine's name (gen_ai.provider.name); None: not known
        self._provider_of = provider_of or (lambda engine_id: None)
        self.timeout_s = float(timeout_s)
        self._reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=endpoint, insecure=insecure, timeout=self.timeout_s),
            export_interval_millis=float(interval_s) * 1000.0, export_timeout_millis=self.timeout_s * 1000.0)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self._reader])
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=insecure, timeout=self.timeout_s),
                                    export_timeout_millis=self.timeout_s * 1000.0))
        self._logger = self.logger_provider.get_logger("llmco2_sidecar")
        self.metrics = metrics
        self._bind(metrics)
        self.records_exported = 0
        self._failed_once = False

    # ---- metrics ---------------------------------------------------------------------------------
    def _bind(self, metrics) -> None:
        from opentelemetry.metrics import Observation

        meter = self.meter_provider.get_meter("llmco2_sidecar")
        registry = metrics.registry
        by_prom = {m.prom: m for m in METRICS}
        for attr, fam in _HISTOGRAM_ATTRS.items():
            m = by_prom[fam]
            prom = getattr(metrics, attr)
            buckets = list(getattr(prom, "_upper_bounds", [])[:-1]) or None
            h = meter.create_histogram(m.otel, unit=m.unit, description=prom._documentation,
                                       explicit_bucket_boundaries_advisory=buckets)
            setattr(metrics, attr, _TeeHistogram(prom, h, None, m.attrs))
        # the labelled children SidecarMetrics cached at construction
        for cached, kind in (("_tok_prompt", "prompt"), ("_tok_output", "output")):
            if hasattr(metrics, cached):
                setattr(metrics, cached, metrics.req_tokens.labels(kind))

        def reader(m: MetricName):
            def observe(options) -> list:
                out = []
                for fam in registry.collect():
                    if fam.name != m.prom:
                        continue
                    for s in fam.samples:
                        if m.kind == "counter" and not s.name.endswith("_total"):
                            continue  # _created
                        labels = tuple(s.labels.get(k) for k in s.labels) if m.attrs else ()
                        out.append(Observation(s.value, dict(zip(m.attrs, labels)) if labels else None))
                return out
            return observe

        for m in METRICS:
            if m.kind == "counter":
                meter.create_observable_counter(m.otel, [reader(m)], unit=m.unit)
            elif m.kind in ("gauge", "info"):
                meter.create_observable_gauge(m.otel, [reader(m)], unit=m.unit)

    # ---- logs ------------------------------------------------------------------------------------
    def on_records(self, records: list[dict]) -> None:
        """One log record per finished request (called on the pipeline thread; never raises)."""
        try:
            from opentelemetry._logs import LogRecord, SeverityNumber

            for rec in records:
                ts = int(float(rec["ts"]) * 1e9)
                self._logger.emit(LogRecord(
                    timestamp=ts, severity_number=SeverityNumber.INFO, severity_text="INFO",
                    body=f"request {rec.get('client_request_id') or rec['request_id']}: "
                         f"{rec['carbon_g']['total']:.6g} gCO2e, {rec['energy_j']['total']:.6g} J",
                    attributes=log_attributes(rec, self._provider_of(rec.get("engine"))),
                    event_name="llmco2.request"))
                self.records_exported += 1
        except Exception as exc:  # telemetry must never cost a record
            if not self._failed_once:
                self._failed_once = True
                log.warning("otlp: could not emit a request log record: %r", exc)

    def shutdown(self) -> None:
        """Flush and stop both providers (pending logs and a last metrics export), waiting at most
        about ``timeout_s``: an unreachable collector must not hold the sidecar's exit."""
        import threading

        def run() -> None:
            for provider in (self.logger_provider, self.meter_provider):
                try:
                    provider.force_flush(int(self.timeout_s * 1000))
                    provider.shutdown()
                except Exception as exc:
                    log.warning("otlp: flush to %s failed: %r", self.endpoint, exc)

        t = threading.Thread(target=run, name="llmco2-otlp-shutdown", daemon=True)
        t.start()
        t.join(self.timeout_s + 1.0)
        if t.is_alive():
            log.warning("otlp: %s did not take the last export within %.0f s; exiting without it", self.endpoint,
                        self.timeout_s)
