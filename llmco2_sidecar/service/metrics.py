"""Prometheus metrics of the sidecar (``prometheus_client``, one registry per sidecar).

No request ids as labels: per-request figures go into histograms, whose observations carry the
request's id as an OpenMetrics exemplar (``request_id``: the id the client knows, its X-Request-Id,
else the engine's; shown to scrapers that ask for ``application/openmetrics-text``, as Prometheus
does with exemplar storage on). Names carry their units:

* ``llmco2_energy_joules_total{phase, source}``: source ``predicted``, phase ``prefill``, ``decode``,
  ``serving`` (host and attributed gaps), ``idle`` (unattributed idle gaps); with ``--measure`` also
  source ``measured``, phase ``gpu`` (NVML) and ``host`` (RAPL). The two sources describe the same
  energy: compare them, never add them (the dashboard's energy takes the measured one where it exists).
* ``llmco2_carbon_grams_total{kind}``: ``operational``, ``embodied`` (finished requests and idle energy).
* ``llmco2_request_energy_joules``, ``llmco2_request_carbon_grams``, ``llmco2_request_tokens{kind}``:
  histograms over finished requests.
* ``llmco2_ingest_{steps,done,batches}_total{outcome}`` (accepted, rejected), ``llmco2_ingest_flagged_total``,
  ``llmco2_ingest_rejections_total{field}``, ``llmco2_streams_open``, ``llmco2_pipeline_queue_depth``,
  ``llmco2_record_latency_seconds`` (a finish's arrival, or a waiter's for a finish held until one came,
  to its request records; records nobody waits for wait with the steps by design and are not observed,
  see ``--prompt-records``),
  ``llmco2_finish_lag_seconds`` (a request's finish in the engine to the finish event's arrival here: with
  the record latency, where a response held for its carbon waits), ``llmco2_event_loop_lag_seconds`` (how
  late the event loop wakes from a 0.25 s sleep: a starved sidecar), ``llmco2_requests_finished_total``,
  ``llmco2_watch_dropped_total`` (announcements a slow watcher missed), ``llmco2_measured_windows_total``.
* ``llmco2_dead_letter_total{reason}``: accepted units (a message's steps, a static batch, a finish, a
  journal frame) that could not be accounted; their requests get ``source: "error"`` records
  (counted in ``llmco2_requests_finished_total{outcome="error"}``).
* ``llmco2_bad_messages_total``: engine messages that did not parse (the stream ends with INVALID_ARGUMENT).
* ``llmco2_disk_errors_total{file}`` (``journal``, ``log``), ``llmco2_disk_ok`` (1, or 0 while the journal
  or the carbon log cannot be written: messages are then not acknowledged), ``llmco2_log_backlog_records``
  (records waiting in memory for the carbon log to be writable again).
* grid intensity (``--grid``): ``llmco2_grid_intensity_g_per_kwh`` (the figure records use now),
  ``llmco2_grid_fallback`` (1 while a live or CSV source is replaced by the static region),
  ``llmco2_grid_source_info{kind, source, state}`` (state ``static``, ``series``, ``starting``, ``live``,
  ``stale``, ``fallback``; ``source`` names the source, e.g. ``electricitymaps:DE``, or the fallback in
  use, never a time: the records carry the full description), ``llmco2_grid_polls_total{outcome}`` (ok, error),
  ``llmco2_grid_reading_timestamp_seconds`` (unix time of the last good reading).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .histograms import observe_many

_ENERGY_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
_CARBON_BUCKETS = (1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 5)
_TOKEN_BUCKETS = (1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 32768)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2)


class SidecarMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.energy = Counter("llmco2_energy_joules", "Energy accounted, by phase and source", ["phase", "source"], registry=r)
        self.carbon = Counter("llmco2_carbon_grams", "Carbon accounted (gCO2e), by kind", ["kind"], registry=r)
        self.req_energy = Histogram("llmco2_request_energy_joules", "Energy per finished request", buckets=_ENERGY_BUCKETS, registry=r)
        self.req_carbon = Histogram("llmco2_request_carbon_grams", "Carbon per finished request (gCO2e)", buckets=_CARBON_BUCKETS, registry=r)
        self.req_tokens = Histogram("llmco2_request_tokens", "Tokens per finished request", ["kind"], buckets=_TOKEN_BUCKETS, registry=r)
        self.finished = Counter("llmco2_requests_finished", "Requests finished, by outcome", ["outcome"], registry=r)
        self.steps = Counter("llmco2_ingest_steps", "Engine steps received", ["outcome"], registry=r)
        self.done = Counter("llmco2_ingest_done", "Finish/abort events received", ["outcome"], registry=r)
        self.batches = Counter("llmco2_ingest_batches", "Static batches received", ["outcome"], registry=r)
        self.flagged = Counter("llmco2_ingest_flagged", "Accepted but flagged items (unknown request ids)", registry=r)
        self.rejections = Counter("llmco2_ingest_rejections", "Rejected items (steps, finishes, static batches) by offending field", ["field"], registry=r)
        self.streams = Gauge("llmco2_streams_open", "Engine streams connected", registry=r)
        self.queue_depth = Gauge("llmco2_pipeline_queue_depth", "Ingested messages waiting for the predictor", registry=r)
        self.latency = Histogram("llmco2_record_latency_seconds",
                                 "Arrival of a finish to its request records (finishes someone waited for)",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.loop_lag = Histogram("llmco2_event_loop_lag_seconds",
                                  "How late the sidecar's event loop wakes from a 0.25 s sleep (sampled four "
                                  "times a second): the loop ingests every message and answers every lookup",
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.finish_lag = Histogram("llmco2_finish_lag_seconds",
                                    "A request's finish in the engine to the finish event's arrival at the sidecar "
                                    "(engine clock mapped by the stream identity's clocks: exact on one host)",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.watch_dropped = Counter("llmco2_watch_dropped", "Records not announced to a slow WatchFinished client "
                                     "(its queue was full; the record is still logged and queryable)", registry=r)
        self.measured_windows = Counter("llmco2_measured_windows", "Windows with a measured energy reading", registry=r)

        self.dead_letter = Counter("llmco2_dead_letter", "Accepted units that could not be accounted (see the "
                                   "dead-letter file), by the stage that failed", ["reason"], registry=r)
        self.bad_messages = Counter("llmco2_bad_messages", "Engine messages that did not parse", registry=r)
        self.disk_errors = Counter("llmco2_disk_errors", "Failed writes or syncs, by file", ["file"], registry=r)
        self.disk_ok = Gauge("llmco2_disk_ok", "1 while the journal and the carbon log can be written", registry=r)
        self.disk_ok.set(1)
        self.log_backlog = Gauge("llmco2_log_backlog_records", "Records waiting for the carbon log to be writable",
                                 registry=r)
        self.grid_intensity = Gauge("llmco2_grid_intensity_g_per_kwh", "Grid carbon intensity records use now "
                                    "(gCO2e/kWh)", registry=r)
        self.grid_fallback = Gauge("llmco2_grid_fallback", "1 while the grid source is replaced by the static region "
                                   "(a live source failing past its stale time, a CSV series not covering now)", registry=r)
        self.grid_info = Info("llmco2_grid_source", "The grid intensity in use: kind (location, marginal), source, state",
                              registry=r)
        self.grid_polls = Counter("llmco2_grid_polls", "Polls of a live grid API, by outcome", ["outcome"], registry=r)
        self.grid_reading_ts = Gauge("llmco2_grid_reading_timestamp_seconds", "Unix time of the last good grid reading",
                                     registry=r)

        self._tok_prompt = self.req_tokens.labels("prompt")
        self._tok_output = self.req_tokens.labels("output")
        self._finished = self.finished.labels("finished")
        self._aborted = self.finished.labels("aborted")
        self._carbon_op = self.carbon.labels("operational")
        self._carbon_emb = self.carbon.labels("embodied")
        self._ack_children = tuple(c.labels(outcome) for c in (self.steps, self.done, self.batches)
                                   for outcome in ("accepted", "rejected"))

    def observe_ack(self, ack, rejected_by_field: dict | None = None) -> None:
        """Count one message's outcome (per message on the event loop: label children looked up once);
        ``rejected_by_field``: every rejected item by offending field (the Ack lists 16 at most)."""
        steps_ok, steps_bad, done_ok, done_bad, batches_ok, batches_bad = self._ack_children
        if ack.steps_accepted:
            steps_ok.inc(ack.steps_accepted)
        if ack.steps_rejected:
            steps_bad.inc(ack.steps_rejected)
        if ack.done_accepted:
            done_ok.inc(ack.done_accepted)
        if ack.done_rejected:
            done_bad.inc(ack.done_rejected)
        if ack.batches_accepted:
            batches_ok.inc(ack.batches_accepted)
        if ack.batches_rejected:
            batches_bad.inc(ack.batches_rejected)
        if ack.flagged:
            self.flagged.inc(ack.flagged)
        if rejected_by_field:
            for field_, n in rejected_by_field.items():
                self.rejections.labels(field_).inc(n)

    def observe_finish_lag(self, done: list, clock_offset_s: float, now_wall_s: float) -> None:
        """``done``: accepted finish events (``time_s`` on the engine clock, 0 = unknown); the engine's wall
        clock is its clock + ``clock_offset_s``. Lags outside -1 s..1 h (an engine that sent no wall
        clock, hosts whose clocks disagree) are not observed; small negative ones (skew) count as 0."""
        for d in done:
            if d.time_s > 0:
                lag = now_wall_s - (d.time_s + clock_offset_s)
                if -1.0 <= lag <= 3600.0:
                    self.finish_lag.observe(max(lag, 0.0))

    def observe_records(self, records: list[dict]) -> None:
        """Per-request histograms; counters once per batch of records (label lookups are not free)."""
        if not records:
            return
        ex = [{"request_id": _exemplar_id(rec.get("client_request_id") or rec["request_id"])} for rec in records]
        observe_many(self.req_energy, [rec["energy_j"]["total"] for rec in records], ex)
        observe_many(self.req_carbon, [rec["carbon_g"]["total"] for rec in records], ex)
        observe_many(self._tok_prompt, [rec["prompt_tokens"] for rec in records])
        observe_many(self._tok_output, [rec["output_tokens"] for rec in records])
        op = emb = 0.0
        aborted = errors = 0
        for rec in records:
            c = rec["carbon_g"]
            op += c["operational"]
            emb += c["embodied"]
            if rec.get("source") == "error":
                errors += 1
            else:
                aborted += bool(rec.get("aborted"))
        if aborted:
            self._aborted.inc(aborted)
        if errors:
            self.finished.labels("error").inc(errors)
        if len(records) > aborted + errors:
            self._finished.inc(len(records) - aborted - errors)
        self._carbon_op.inc(op)
        self._carbon_emb.inc(emb)

    def observe_record(self, rec: dict) -> None:
        self.observe_records([rec])


_EXEMPLAR_MAX = 128 - len("request_id")  # OpenMetrics: exemplar label names + values <= 128 characters


def _exemplar_id(rid: str) -> str:
    return rid if len(rid) <= _EXEMPLAR_MAX else rid[: _EXEMPLAR_MAX - 1] + "~"


def start_http(metrics: SidecarMetrics, host: str, port: int):
    """Serve /metrics on host:port; returns the server (its ``server_port`` is the bound port)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
