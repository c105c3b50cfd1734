"""The sidecar's gRPC server (``grpc.aio``): ingest, journal, pipeline, lookups, health, reflection.

:class:`SidecarCore` is the part without gRPC (streams, journal, pipeline, ledger, sinks);
:class:`CarbonSidecarService` maps the ``llmco2.v1.CarbonSidecar`` RPCs onto it; :func:`build_server`
assembles a ``grpc.aio`` server with the standard health service, server reflection, an optional
bearer-token interceptor and optional TLS; :class:`SidecarThread` runs all of it on a background
thread (tests, the demo, benchmarks).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import grpc
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .._proto import events_pb2 as pb
from .._proto import sidecar_pb2 as spb
from .._proto import sidecar_pb2_grpc
from ..config import SidecarConfig
from ..errors import InputError
from . import ingest as ing
from .carbon_log import CarbonLog
from .journal import KIND_EVENTS, KIND_IDENTITY, Journal
from .ledger import RequestLedger
from .metrics import SidecarMetrics
from .pipeline import Barrier, Pipeline

log = logging.getLogger("llmco2.server")
SERVICE_NAME = "llmco2.v1.CarbonSidecar"
MAX_WAIT_S = 30.0
SWITCH_INTERVAL_S = 0.001


def make_predictor(name: str):
    if name == "roofline":
        from ..predictor.roofline import RooflinePredictor

        return RooflinePredictor()
    if name == "default":
        from ..predictor.default import default_predictor

        return default_predictor()
    raise InputError("predictor", f"unknown predictor {name!r}", "default, roofline")


GRID_FIRST_WAIT_S = 3.0  # at start, wait this long for a live grid source's first reading


class SidecarCore:
    """Everything but the RPC layer. Methods run on the event loop thread unless noted."""

    def __init__(self, config: SidecarConfig, predictor=None, metrics: SidecarMetrics | None = None):
        self.config = config
        self.metrics = metrics or SidecarMetrics()
        self.predictor = predictor or make_predictor(config.predictor)
        if "torch" in sys.modules:  # a learned predictor: keep its intra-op threads off the event loop's core
            sys.modules["torch"].set_num_threads(int(config.predictor_threads))
        self.carbon_log = CarbonLog(config.log, config.log_max_bytes, config.log_backups)
        self.journal = Journal(config.journal_dir, config.fsync, config.fsync_interval_s, config.journal_max_bytes)
        self.ledger = RequestLedger(config.ledger_max_finished, config.ledger_ttl_s)
        self.pipeline = Pipeline(config, self.predictor, self.carbon_log, self.metrics, self.ledger, self._on_records)
        from ..config import open_grid_source

        self.grid = self.pipeline.grid = open_grid_source(config)  # --grid: polled off the hot path
        self.grid.bind_metrics(self.metrics)
        self.otlp = None
        if config.otlp:  # --otlp: metrics and one log record per finished request to an OTLP collector
            from .. import __version__
            from .otel import OtlpExporter

            self.otlp = OtlpExporter(config.otlp, self.metrics, config.otlp_interval_s, __version__,
                                     config.otlp_timeout_s)
        self.streams: dict[str, ing.StreamState] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._watchers: list[tuple[str, asyncio.Queue]] = []
        self._prefix_waiters: list[tuple[str, asyncio.Future]] = []
        self.open_streams = 0
        self.replayed_messages = 0
        self.meter_reasons: dict[str, str] = {}
        self.started_at = time.time()

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the sinks, replay the journal, start the pipeline (call on the loop thread)."""
        self.loop = loop
        self.carbon_log.open()
        if self.carbon_log.repaired_bytes:
            log.warning("carbon log %s: removed a torn last line (%d bytes)", self.carbon_log.path,
                        self.carbon_log.repaired_bytes)
        self._open_meters()
        self.grid.start()
        if getattr(self.grid, "live", False) and not self.grid.wait_first(GRID_FIRST_WAIT_S):
            log.warning("grid: no first reading from %s within %.0f s: records use the static region until it answers",
                        self.config.grid, GRID_FIRST_WAIT_S)
        self.pipeline.start()
        replayed = self._recover()
        self.journal.open()
        if replayed:  # compact: checkpoint the recovered state, drop the replayed segments
            self._checkpoint()
            self.pipeline.barrier(None, timeout_s=600)

    def _open_meters(self) -> None:
        """``--measure nvml,rapl``: sample the meters; window records carry measured energy."""
        if not self.config.measure:
            if self.config.calibrate:
                log.warning("--calibrate needs --measure: records stay predicted")
            return
        from ..measure import MeterSampler, open_meters

        reasons: dict[str, str] = {}
        meters = open_meters(self.config.measure, rapl_root=self.config.rapl_root, skip_unavailable=True,
                             reasons=reasons)
        for name, why in reasons.items():
            log.warning("meter %s unavailable: %s", name, why)
        if meters:
            self.pipeline.sampler = MeterSampler(meters, hz=10.0)
            log.info("measuring with %s", ", ".join(m.name for m in meters))
        self.meter_reasons = reasons

    def _recover(self) -> bool:
        ckpt = self.journal.read_checkpoint()
        segs = self.journal.segments()
        if not segs and ckpt is None:
            return False
        start_seg = 0
        if ckpt is not None:
            start_seg = int(ckpt["segment"])
            self._restore_checkpoint(ckpt)
        self.pipeline.suppress_ids = self.carbon_log.logged_request_ids()
        self.pipeline.replaying = True
        n = 0
        for kind, key, payload in self.journal.replay(start_seg):
            try:
                if kind == KIND_IDENTITY:
                    ident = pb.EngineIdentity.FromString(payload)
                    ing.open_stream(ident, self.streams, self.config.hardware)
                elif kind == KIND_EVENTS and key in self.streams:
                    res = ing.ingest(self.streams[key], pb.EventBatch.FromString(payload))
                    self.pipeline.submit(res)
                    n += 1
            except Exception as exc:  # a frame that no longer validates (catalog changed, ...)
                log.warning("journal replay: skipped a frame of %s (%s)", key, exc)
        self.replayed_messages = n

        def done() -> None:
            self.pipeline.replaying = False
            self.pipeline.suppress_ids = set()

        self.pipeline.barrier(done, timeout_s=600)
        if self.journal.truncated_bytes:
            log.warning("journal: removed %d bytes of a torn frame", self.journal.truncated_bytes)
        log.info("journal replay: %d messages", n)
        return True

    def _restore_checkpoint(self, ckpt: dict) -> None:
        for s in ckpt.get("streams", []):
            ident = pb.EngineIdentity.FromString(base64.b64decode(s["identity"]))
            try:
                st = ing.open_stream(ident, self.streams, self.config.hardware)
            except InputError as exc:
                log.warning("checkpoint: stream %s no longer valid (%s)", s["stream_id"], exc)
                continue
            st.last_step_id = s["last_step_id"]
            st.last_end_s = s["last_end_s"] if s["last_end_s"] is not None else -math.inf
            st.last_batch_id = s["last_batch_id"]
            st.live = set(s["live"])
            for r in s["recently_done"]:
                st.recently_done[r] = None
        self.ledger.restore_running(ckpt.get("running", []))
        self.pipeline._last_end.update(ckpt.get("last_end", {}))

    def _checkpoint(self) -> None:
        """Roll the journal and checkpoint the state at the start of the new segment."""
        seg = self.journal.roll()
        streams = [{"stream_id": s.stream_id, "identity": base64.b64encode(s.identity.SerializeToString()).decode(),
                    "last_step_id": s.last_step_id,
                    "last_end_s": s.last_end_s if math.isfinite(s.last_end_s) else None,
                    "last_batch_id": s.last_batch_id, "live": sorted(s.live),
                    "recently_done": list(s.recently_done)[-10000:]} for s in self.streams.values()]

        def write() -> None:  # on the pipeline thread, after everything before the roll
            state = {"segment": seg, "written_at": time.time(), "streams": streams,
                     "running": self.ledger.snapshot_running(), "last_end": dict(self.pipeline._last_end)}
            self.journal.write_checkpoint(state)

        self.pipeline._q.put(Barrier(write))

    async def stop(self) -> None:
        self.grid.stop()
        self.journal.close()
        await asyncio.get_running_loop().run_in_executor(None, self.pipeline.stop)
        if self.otlp is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.otlp.shutdown)
        self.carbon_log.close()
        if self.pipeline.sampler is not None:
            self.pipeline.sampler.close(close_meters=True)

    # ---- ingest (loop thread) ------------------------------------------------------------------
    def open_stream(self, ident: pb.EngineIdentity) -> ing.StreamState:
        if not ident.instance_id:
            ident.instance_id = uuid.uuid4().hex
        st = ing.open_stream(ident, self.streams, self.config.hardware)
        self.journal.append(KIND_IDENTITY, st.stream_id, ident.SerializeToString())
        return st

    async def wait_for_room(self) -> None:
        """Backpressure: stop reading engine messages while too many accepted steps await the predictor."""
        limit = self.config.max_pending_steps
        while self.pipeline.pending_steps > limit:
            await asyncio.sleep(0.0005)

    def handle_events(self, stream: ing.StreamState, batch: pb.EventBatch) -> pb.Ack:
        res = ing.ingest(stream, batch)
        ack = res.ack
        if res.steps is not None or res.done or res.batches:
            self.journal.append(KIND_EVENTS, stream.stream_id, batch.SerializeToString())
            res.arrival = time.perf_counter()
            self.pipeline.submit(res)
            if res.done:
                self.metrics.observe_finish_lag(res.done, stream.clock_offset_s, time.time())
            if self.journal.needs_roll:
                self._checkpoint()
        self.metrics.observe_ack(ack)
        self.metrics.queue_depth.set(self.pipeline.pending)
        return ack

    # ---- announcements (pipeline thread -> loop) -----------------------------------------------
    def _on_records(self, records: list[dict]) -> None:
        if self.otlp is not None:
            suppress = self.pipeline.suppress_ids  # journal replay: records already in the log were exported
            self.otlp.on_records([r for r in records if r["request_id"] not in suppress] if suppress else records)
        loop = self.loop
        if loop is not None and (self._waiters or self._watchers or self._prefix_waiters):
            try:
                loop.call_soon_threadsafe(self._announce, records)
            except RuntimeError:  # loop closed
                pass

    def _announce(self, records: list[dict]) -> None:
        for prefix, fut in self._prefix_waiters:
            if not fut.done() and any(rec["request_id"].startswith(prefix)
                                      or (rec.get("client_request_id") or "").startswith(prefix) for rec in records):
                fut.set_result(None)
        for rec in records:
            client = rec.get("client_request_id") or ""
            for key in (rec["request_id"], client) if client else (rec["request_id"],):
                futs = self._waiters.pop(key, None)
                if futs:
                    for f in futs:
                        if not f.done():
                            f.set_result(rec)
            if self._watchers:
                msg = None
                for prefix, q in self._watchers:
                    if rec["request_id"].startswith(prefix) or (client and client.startswith(prefix)):
                        msg = msg or record_to_proto(rec)
                        try:
                            q.put_nowait(msg)
                        except asyncio.QueueFull:
                            self.metrics.watch_dropped.inc()

    # ---- lookups (loop thread) -----------------------------------------------------------------
    def running_record(self, rid: str) -> dict | None:
        with self.ledger.lock:
            t = self.ledger.totals(rid)
        if t is None:
            return None
        stream = self.streams.get(t.stream_id)
        acc = self.pipeline._accounting.get(t.stream_id)
        if stream is None or acc is None:
            return None
        rec = self.pipeline._record(stream, acc, rid, t.last_wall_s, t.prompt_tokens, t.decode_slices, t.prefill_j,
                                    t.decode_j, t.serving_j, t.gpu_s, t.steps, False)
        rec["state"] = "running"
        return rec

    def _finished(self, rid: str) -> list[dict]:
        """The finished record of engine id ``rid``, else every finished record the client knows as ``rid``."""
        rec = self.ledger.get_finished(rid)
        if rec is not None:
            return [rec]
        with self.ledger.lock:
            return self.ledger.get_by_client(rid)

    async def lookup(self, rid: str, wait_s: float, prefix: bool) -> list[dict]:
        wait_s = min(max(wait_s, 0.0), MAX_WAIT_S)
        if prefix:
            deadline = time.monotonic() + wait_s
            while True:
                # register first, then look: a record that lands in between still wakes us (the
                # pipeline thread only schedules an announcement while some waiter is registered)
                fut = self.loop.create_future()  # woken by a matching record (or re-checked every 50 ms)
                entry = (rid, fut)
                self._prefix_waiters.append(entry)
                try:
                    with self.ledger.lock:
                        done, running = self.ledger.find(rid)
                    left = deadline - time.monotonic()
                    if (done and not running) or left <= 0:
                        return done + [r for r in (self.running_record(x) for x in running) if r]
                    await asyncio.wait_for(fut, min(left, 0.05))
                except asyncio.TimeoutError:
                    pass
                finally:
                    self._prefix_waiters.remove(entry)
        found = self._finished(rid)
        if found:
            return found
        if wait_s > 0:
            fut = self.loop.create_future()
            self._waiters.setdefault(rid, []).append(fut)
            found = self._finished(rid)  # finished between the check and the registration
            if found:
                return found
            try:
                rec = await asyncio.wait_for(fut, wait_s)
                return self._finished(rid) or [rec]
            except asyncio.TimeoutError:
                pass
            finally:
                lst = self._waiters.get(rid)
                if lst and fut in lst:
                    lst.remove(fut)
                    if not lst:
                        self._waiters.pop(rid, None)
        found = self._finished(rid)
        if found:
            return found
        running = self.running_record(rid)
        if running is None and any(rid in s.live or rid in s.recently_done for s in self.streams.values()):
            # accepted (acknowledged) but the pipeline has not reached it yet: wait for it, briefly
            deadline = time.monotonic() + 1.0
            while running is None and self.pipeline.pending > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
                rec = self.ledger.get_finished(rid)
                if rec is not None:
                    return [rec]
                running = self.running_record(rid)
        return [running] if running else []


def record_to_proto(rec: dict) -> spb.RequestCarbon:
    state = rec.get("state")
    if state == "running":
        st = spb.RequestCarbon.STATE_RUNNING
    else:
        st = spb.RequestCarbon.STATE_ABORTED if rec.get("aborted") else spb.RequestCarbon.STATE_FINISHED
    e, c = rec["energy_j"], rec["carbon_g"]
    return spb.RequestCarbon(
        request_id=rec["request_id"], state=st, ts=rec["ts"], model=rec["model"], gpu=rec["gpu"],
        prompt_tokens=rec["prompt_tokens"], output_tokens=rec["output_tokens"],
        energy_j=spb.EnergyBreakdown(prefill=e["prefill"], decode=e["decode"], serving=e["serving"], total=e["total"]),
        carbon_g=spb.CarbonBreakdown(operational=c["operational"], embodied=c["embodied"], total=c["total"]),
        source=rec["source"], pue=rec["pue"], carbon_intensity_g_per_kwh=rec["carbon_intensity_g_per_kwh"],
        engine=rec.get("engine", ""), steps=rec.get("steps", 0),
        client_request_id=rec.get("client_request_id") or "",
        carbon_intensity_kind=rec.get("carbon_intensity_kind") or "",
        carbon_intensity_source=rec.get("carbon_intensity_source") or "",
        carbon_intensity_ts=rec.get("carbon_intensity_ts") or 0.0,
        sci_g_per_1k_output_tokens=(rec.get("sci") or {}).get("g_per_1k_output_tokens") or 0.0,
    )


class CarbonSidecarService(sidecar_pb2_grpc.CarbonSidecarServicer):
    def __init__(self, core: SidecarCore):
        self.core = core

    async def StreamEvents(self, request_iterator, context):
        core = self.core
        stream = None
        core.open_streams += 1
        core.metrics.streams.set(core.open_streams)
        try:
            async for msg in request_iterator:
                body = msg.WhichOneof("body")
                if stream is None:
                    if body != "identity":
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                            "identity: the first message of a stream must carry the engine identity")
                    try:
                        stream = core.open_stream(msg.identity)
                    except InputError as exc:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                    yield pb.Ack(seq=0, stream_id=stream.stream_id)
                    continue
                if body == "identity":
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        "identity: sent twice on one stream (open a new stream instead)")
                if body != "events":
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "body: empty message")
                await core.wait_for_room()
                yield core.handle_events(stream, msg.events)
        finally:
            core.open_streams -= 1
            core.metrics.streams.set(core.open_streams)

    async def Estimate(self, request, context):
        try:
            from ..estimate import estimate
        except ImportError:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "estimate: not available in this build")
        from ..workload import BatchQuery

        cfg = self.core.config
        try:
            if not request.model:
                raise InputError("model", "missing")
            if not request.gpu:
                raise InputError("gpu", "missing")
            if request.observed_latency_s < 0 or not math.isfinite(request.observed_latency_s):
                raise InputError("observed_latency_s", "must be positive", "> 0")
            query = BatchQuery(model=request.model, gpu=request.gpu, batch=int(request.batch),
                               prompt_len=int(request.prompt_len), output_len=int(request.output_len),
                               tp=int(request.tp or 1), pp=int(request.pp or 1),
                               observed_latency_s=request.observed_latency_s or None)
            from ..energy import carbon, embodied
            from ..estimate import CarbonSettings

            settings = CarbonSettings(
                pue=request.pue or (cfg.pue if cfg.pue is not None else carbon.DEFAULT_PUE),
                carbon_intensity_g_per_kwh=request.carbon_intensity_g_per_kwh or cfg.carbon_intensity_g_per_kwh,
                region=cfg.region,
                lifetime_years=cfg.lifetime_years or embodied.DEFAULT_LIFETIME_YEARS)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(None, lambda: estimate(query, settings, self.core.predictor))
        except InputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        s = struct_pb2.Struct()
        json_format.ParseDict(json.loads(json.dumps(result, default=_jsonable)), s)
        return spb.EstimateResponse(result=s)

    async def GetRequestCarbon(self, request, context):
        if not request.request_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request_id: missing")
        if not math.isfinite(request.wait_s) or request.wait_s < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"wait_s: must be 0..{MAX_WAIT_S}")
        recs = await self.core.lookup(request.request_id, request.wait_s, request.prefix)
        if not recs:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"request_id: no request {request.request_id!r} is known")
        return spb.RequestCarbonReply(records=[record_to_proto(r) for r in recs])

    async def WatchFinished(self, request, context):
        q: asyncio.Queue = asyncio.Queue(maxsize=10_000)
        entry = (request.request_id_prefix, q)
        self.core._watchers.append(entry)
        try:
            while True:
                yield await q.get()
        finally:
            self.core._watchers.remove(entry)


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer TOKEN`` (the health service stays open)."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}"

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(self, continuation, details):
        if details.method.startswith("/grpc.health.v1.Health/"):
            return await continuation(details)
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and value == self._expected:
                return await continuation(details)
        return self._deny


@dataclass
class Listening:
    address: str  # what a client dials: "127.0.0.1:PORT" or "unix:/path"
    metrics_port: int | None


async def build_server(config: SidecarConfig, core: SidecarCore) -> tuple[grpc.aio.Server, Listening, object]:
    interceptors = [BearerTokenInterceptor(config.token)] if config.token else []
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", 64 << 20), ("grpc.so_reuseport", 0)])
    sidecar_pb2_grpc.add_CarbonSidecarServicer_to_server(CarbonSidecarService(core), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if config.unix:
        target = f"unix:{config.unix}"
    else:
        host = f"[{config.host}]" if ":" in config.host else config.host
        target = f"{host}:{config.port}"
    if config.tls_cert:
        with open(config.tls_key, "rb") as fh:
            key = fh.read()
        with open(config.tls_cert, "rb") as fh:
            cert = fh.read()
        port = server.add_secure_port(target, grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port(target)
    if not config.unix and port == 0:
        raise InputError("port", f"cannot listen on {target}")
    address = target if config.unix else f"{config.host}:{port}"
    metrics_port = None
    if config.metrics_port:
        from .metrics import start_http

        metrics_port = start_http(core.metrics, config.host, config.metrics_port).server_port
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, Listening(address, metrics_port), health_servicer


async def serve_forever(config: SidecarConfig, ready=None, stop_event: asyncio.Event | None = None,
                        predictor=None) -> SidecarCore:
    """Run until ``stop_event`` is set (or cancelled). ``ready(listening, core)`` is called once listening."""
    core = SidecarCore(config, predictor=predictor)
    loop = asyncio.get_running_loop()
    # The event loop and the pipeline thread share the GIL: with Python's default 5 ms switch
    # interval a message arriving while the pipeline computes waits up to 5 ms for the loop (1 ms measured best in benchmarks/sidecar.py).
    if sys.getswitchinterval() > SWITCH_INTERVAL_S:
        sys.setswitchinterval(SWITCH_INTERVAL_S)
    await loop.run_in_executor(None, lambda: None)
    core.start(loop)
    server, listening, health_servicer = await build_server(config, core)
    await server.start()
    if ready is not None:
        ready(listening, core)
    sync_task = asyncio.create_task(_periodic_sync(core))
    lag_task = asyncio.create_task(_watch_loop_lag(core.metrics))
    try:
        if stop_event is None:
            await server.wait_for_termination()
        else:
            await stop_event.wait()
    finally:
        sync_task.cancel()
        lag_task.cancel()
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace=1.0)
        await core.stop()
    return core


async def _periodic_sync(core: SidecarCore) -> None:
    """fsync the journal on the ``interval`` policy even when no message arrives."""
    while True:
        await asyncio.sleep(core.config.fsync_interval_s)
        if core.config.fsync == "interval":
            core.journal.sync()


LOOP_LAG_PERIOD_S = 0.1


async def _watch_loop_lag(metrics, period_s: float = LOOP_LAG_PERIOD_S) -> None:
    """``llmco2_event_loop_lag_seconds``: how late a ``period_s`` sleep wakes. The loop ingests every
    message and answers every lookup: a starved process (no CPU, or the GIL held elsewhere) shows here
    first. Ten wake-ups per second."""
    loop = asyncio.get_running_loop()
    while True:
        t0 = loop.time()
        await asyncio.sleep(period_s)
        metrics.loop_lag.observe(max(loop.time() - t0 - period_s, 0.0))


class SidecarThread:
    """A sidecar on a background thread with its own event loop (tests, demo, benchmarks)."""

    def __init__(self, config: SidecarConfig, predictor=None):
        self.config = config
        self.predictor = predictor
        self.listening: Listening | None = None
        self.core: SidecarCore | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="llmco2-sidecar", daemon=True)

    def start(self, timeout_s: float = 60.0) -> "SidecarThread":
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("sidecar did not start in time")
        if self._error is not None:
            raise self._error
        return self

    @property
    def address(self) -> str:
        return self.listening.address

    def _main(self) -> None:
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(listening, core):
                self.listening, self.core = listening, core
                self._ready.set()

            await serve_forever(self.config, ready, self._stop, self.predictor)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until the pipeline processed everything accepted so far."""
        return self.core.pipeline.barrier(None, timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)

    def __enter__(self) -> "SidecarThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
