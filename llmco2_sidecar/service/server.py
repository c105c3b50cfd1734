"""The sidecar's gRPC server (``grpc.aio``): ingest, journal, pipeline, lookups, health, reflection.

:class:`~.core.SidecarCore` is the part without gRPC (streams, journal, pipeline, ledger, sinks);
:class:`CarbonSidecarService` maps the ``llmco2.v1.CarbonSidecar`` RPCs onto it; :func:`build_server`
assembles a ``grpc.aio`` server with the standard health service, server reflection, an optional
bearer-token interceptor and optional TLS; :class:`SidecarThread` runs all of it on a background
thread (tests, the demo, benchmarks).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import sys
import threading
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
from .core import DiskUnavailable, SidecarCore, make_predictor  # noqa: F401  (re-exported)
from .acks import AckBatcher
from .hold import HeldMessages
from .stream_ingest import BAD_MESSAGE_LOG_INTERVAL_S, StreamIngestMixin  # noqa: F401  (re-exported)
from .lookups import MAX_WAIT_S, record_to_proto
from .wire import BadMessage, Received, StepsOnly, events_payload, parse_engine_message, receive_engine_message  # noqa: F401

log = logging.getLogger("llmco2.server")
SERVICE_NAME = "llmco2.v1.CarbonSidecar"
SWITCH_INTERVAL_S = 0.001
DISK_PROBE_S = 0.25


class Health:
    """The gRPC health status of the sidecar: SERVING, or NOT_SERVING while the disk is in trouble."""

    def __init__(self, core: SidecarCore, servicer=None):
        self.core = core
        self.servicer = servicer
        self.serving: bool | None = None

    async def refresh(self) -> None:
        """Probe the disk (recovering when it can) and publish the status when it changed."""
        self.core.probe_disk()
        ok = not self.core.disk_degraded
        if ok != self.serving and self.servicer is not None:
            self.serving = ok
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            await self.servicer.set(SERVICE_NAME, status)
            await self.servicer.set("", status)


class CarbonSidecarService(StreamIngestMixin, sidecar_pb2_grpc.CarbonSidecarServicer):
    def __init__(self, core: SidecarCore, health: Health | None = None):
        self.core = core
        self.health = health or Health(core)
        self._bad_logged = -math.inf

    async def StreamEvents(self, request_iterator, context):
        """The engine's event stream: an Ack per message (``context.write``), or, for an emitter
        that takes cumulative acks, one Ack for the messages of up to ``ack_interval_ms``
        (:mod:`.acks`), its steps-only messages ingested together (:mod:`.hold`); every Ack is sent
        after its messages are in the journal."""
        core = self.core
        stream = None
        batcher: AckBatcher | None = None
        held: HeldMessages | None = None
        core.open_streams += 1
        core.metrics.streams.set(core.open_streams)
        try:
            async for item in request_iterator:
                if type(item) is StepsOnly:  # steps alone, not parsed yet
                    if held is not None:
                        if held.keep(item):
                            continue  # held: journaled and ingested with the next ones (see .hold)
                        await self._ingest_held(context, stream, batcher, held)  # due, this one last
                        continue
                    item = item.parse()
                if isinstance(item, BadMessage):
                    await self._ingest_held(context, stream, batcher, held)
                    await self._abort(context, batcher, grpc.StatusCode.INVALID_ARGUMENT,
                                      self._bad_message(item, stream))
                msg = item.msg
                body = msg.WhichOneof("body")
                if stream is None:
                    if body != "identity":
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                            "identity: the first message of a stream must carry the engine identity")
                    try:
                        stream = core.open_stream(msg.identity)
                    except InputError as exc:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                    except DiskUnavailable as exc:
                        await self._unavailable(context, exc)
                    await context.write(pb.Ack(seq=0, stream_id=stream.stream_id))
                    interval_s = float(core.config.ack_interval_ms) / 1000.0
                    if msg.identity.cumulative_acks and interval_s > 0:
                        batcher = AckBatcher(context.write, interval_s)
                        # never longer than the ack interval: the emitter is promised its acks within it
                        hold_s = min(float(core.config.ingest_hold_ms) / 1000.0, interval_s)
                        if hold_s > 0:
                            held = HeldMessages(hold_s, functools.partial(self._ingest_due, stream, batcher))
                    continue
                if body != "events":
                    await self._ingest_held(context, stream, batcher, held)
                    await self._abort(context, batcher, grpc.StatusCode.INVALID_ARGUMENT,
                                      "identity: sent twice on one stream (open a new stream instead)"
                                      if body == "identity" else "body: empty message")
                await self._ingest_held(context, stream, batcher, held, decide=False)  # what is held goes first
                await self._ingest(context, stream, batcher, item)
            # the emitter closed its side: ingest and acknowledge the rest
            await self._ingest_held(context, stream, batcher, held)
            if batcher is not None:
                await batcher.flush()
        finally:
            if held is not None:
                held.close()
            if batcher is not None:
                batcher.close()
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
                               observed_latency_s=request.observed_latency_s or None,
                               ep=int(request.ep or 1), dp=int(request.dp or 1))
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
        self.core.pipeline.expedite()  # a watcher wants every record at once (records on demand)
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
    health_servicer = health.aio.HealthServicer()
    status = Health(core, health_servicer)
    _add_service(CarbonSidecarService(core, status), server)
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
    await status.refresh()
    return server, Listening(address, metrics_port), status


def _add_service(service: CarbonSidecarService, server) -> None:
    """The generated registration, with StreamEvents' request deserializer replaced by
    :func:`receive_engine_message` (bad bytes end the stream with INVALID_ARGUMENT, not UNKNOWN)."""

    class _Server:  # collects the generated handlers
        def add_generic_rpc_handlers(self, handlers):
            self.generic = handlers

        def add_registered_method_handlers(self, name, handlers):
            self.name, self.handlers = name, handlers

    probe = _Server()
    sidecar_pb2_grpc.add_CarbonSidecarServicer_to_server(service, probe)
    handlers = dict(probe.handlers)
    handlers["StreamEvents"] = grpc.stream_stream_rpc_method_handler(
        service.StreamEvents, request_deserializer=receive_engine_message,
        response_serializer=pb.Ack.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(probe.name, handlers),))
    server.add_registered_method_handlers(probe.name, handlers)


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
    server, listening, status = await build_server(config, core)
    await server.start()
    if ready is not None:
        ready(listening, core)
    sync_task = asyncio.create_task(_periodic_sync(core))
    beat_task = asyncio.create_task(_heartbeat(status, core.metrics))
    try:
        if stop_event is None:
            await server.wait_for_termination()
        else:
            await stop_event.wait()
    finally:
        sync_task.cancel()
        beat_task.cancel()
        await status.servicer.enter_graceful_shutdown()
        await server.stop(grace=1.0)
        await core.stop()
    return core


async def _periodic_sync(core: SidecarCore) -> None:
    """fsync the journal on the ``interval`` policy even when no message arrives."""
    while True:
        await asyncio.sleep(core.config.fsync_interval_s)
        if core.config.fsync == "interval":
            core.journal.sync_soon()  # on the disk worker; an error marks the journal failed (seen by _heartbeat)


HEARTBEAT_S = DISK_PROBE_S


async def _heartbeat(status: Health, metrics, period_s: float = HEARTBEAT_S) -> None:
    """The loop's one periodic wake-up (each wake-up of an idle sidecar costs it a cold start on
    its core; this one replaced a 10 Hz lag sampler and a 4 Hz disk probe):

    * ``llmco2_event_loop_lag_seconds``: how late a ``period_s`` sleep wakes. The loop ingests every
      message and answers every lookup: a starved process (no CPU, or the GIL held elsewhere) shows
      here first;
    * health follows the disk: NOT_SERVING while the journal or the carbon log cannot be written,
      SERVING again once a probe succeeds (nothing is written while all is well)."""
    loop = asyncio.get_running_loop()
    while True:
        t0 = loop.time()
        await asyncio.sleep(period_s)
        metrics.loop_lag.observe(max(loop.time() - t0 - period_s, 0.0))
        try:
            await status.refresh()
        except Exception:  # never let the heartbeat die
            log.exception("disk health check failed")


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
