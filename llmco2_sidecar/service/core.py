"""The sidecar without gRPC: streams, the journal, the pipeline, the ledger, the sinks, disk health.

Methods run on the event loop thread unless noted. Order of an engine message: the journal first
(nothing that is not journaled is acknowledged), then validation (:mod:`.ingest`), then the
pipeline. While the journal or the carbon log cannot be written (a full or unwritable disk), the
core refuses to acknowledge (:class:`DiskUnavailable`, which the server answers with UNAVAILABLE,
so that the emitter keeps the messages and sends them again) and health says NOT_SERVING; it
probes the disk and recovers by itself when space returns.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
import uuid

from .._proto import events_pb2 as pb
from ..config import SidecarConfig
from ..errors import InputError
from . import ingest as ing
from .admission import DeploymentCheck
from .carbon_log import CarbonLog
from .heap import collect_less, keep_freed_memory
from .dead_letter import DeadLetter, dead_letter_path
from .disk_worker import DiskWorker
from .journal import KIND_EVENTS, KIND_IDENTITY, Journal
from .ledger import RequestLedger
from .lookups import LookupsMixin, record_to_proto  # noqa: F401  (record_to_proto: re-exported)
from .metrics import SidecarMetrics
from .pipeline import Pipeline
from .recovery import REPLAY_ATTEMPTS, RecoveryMixin  # noqa: F401  (REPLAY_ATTEMPTS: re-exported)

log = logging.getLogger("llmco2.server")
GRID_FIRST_WAIT_S = 3.0  # at start, wait this long for a live grid source's first reading
ROOM_RECHECK_S = 0.05  # backpressure: a waiter re-checks the backlog at least this often


class DiskUnavailable(RuntimeError):
    """The journal or the carbon log cannot be written: the message is not acknowledged."""


def make_predictor(name: str):
    if name == "roofline":
        from ..predictor.roofline import RooflinePredictor

        return RooflinePredictor()
    if name == "default":
        from ..predictor.default import default_predictor

        return default_predictor()
    raise InputError("predictor", f"unknown predictor {name!r}", "default, roofline")


class SidecarCore(RecoveryMixin, LookupsMixin):
    """Everything but the RPC layer."""

    def __init__(self, config: SidecarConfig, predictor=None, metrics: SidecarMetrics | None = None):
        self.config = config
        self.metrics = metrics or SidecarMetrics()
        self.predictor = predictor or make_predictor(config.predictor)
        if "torch" in sys.modules:  # a learned predictor: keep its intra-op threads off the event loop's core
            sys.modules["torch"].set_num_threads(int(config.predictor_threads))
        self.carbon_log = CarbonLog(config.log, config.log_max_bytes, config.log_backups)
        self.journal = Journal(config.journal_dir, config.fsync, config.fsync_interval_s, config.journal_max_bytes)
        # fsyncs and checkpoints wait for the disk on a thread of their own, never on the loop or the pipeline
        self.disk = DiskWorker()
        self.journal.worker = self.carbon_log.worker = self.disk
        self.carbon_log.sync_on_rotate = config.fsync != "never"
        self.ledger = RequestLedger(config.ledger_max_finished, config.ledger_ttl_s)
        self.dead_letter = DeadLetter(dead_letter_path(config.log), self.metrics)
        self.pipeline = Pipeline(config, self.predictor, self.carbon_log, self.metrics, self.ledger, self._on_records,
                                 self.dead_letter)
        self.check_deployment = DeploymentCheck(self.predictor, config)
        self.metrics.queue_depth.set_function(lambda: self.pipeline.pending)  # read when scraped, not per message
        self.pipeline.on_room = self._wake_room  # backpressure: the pipeline wakes waiting streams
        from ..config import open_grid_source

        self.grid = self.pipeline.grid = open_grid_source(config)  # --grid: polled off the hot path
        self.grid.bind_metrics(self.metrics)
        self.otlp = None
        if config.otlp:  # --otlp: metrics and one log record per finished request to an OTLP collector
            from .. import __version__
            from .otel import OtlpExporter

            self.otlp = OtlpExporter(config.otlp, self.metrics, config.otlp_interval_s, __version__,
                                     config.otlp_timeout_s, self._engine_name)
        self.streams: dict[str, ing.StreamState] = {}
        self._checkpoint_entries: dict[str, tuple] = {}  # stream id -> (stream, version, JSON entry): recovery.py
        self.loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._watchers: list[tuple[str, asyncio.Queue]] = []
        self._prefix_waiters: list[tuple[str, asyncio.Future]] = []
        self._record_waits = 0  # lookups waiting for a record now (the loop thread's count)
        self._last_wait_at = -math.inf  # time.monotonic() of the last lookup
        # records on demand (Pipeline.expedite), unless --prompt-records: every finish awaited
        self.pipeline.demand = None if config.prompt_records else self._record_demand
        self.open_streams = 0
        self.replayed_messages = 0
        self.meter_reasons: dict[str, str] = {}
        self.started_at = time.time()
        self.disk_problem: str | None = None  # why messages are not acknowledged now (None: all is well)
        self.disk_degraded = False  # the journal or the carbon log failed (health: NOT_SERVING)
        self._journal_errors_seen = 0
        self._log_errors_seen = 0
        self._room: asyncio.Event | None = None  # backpressure waiters (wait_for_room)

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Open the sinks, replay the journal, start the pipeline (call on the loop thread)."""
        self.loop = loop
        keep_freed_memory()  # micro-batches reuse the heap instead of faulting fresh pages (.heap)
        collect_less()  # fewer young-generation collections (.heap)
        # an unwritable log or journal directory does not stop the start: health says NOT_SERVING,
        # messages are not acknowledged, and the disk probe opens them once they can be written
        if not self.carbon_log.open_or_fail():
            log.error("carbon log %s: cannot open (%s)", self.carbon_log.path, self.carbon_log.failed)
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
        if not self.journal.open_or_fail():
            log.error("journal %s: cannot open (%s)", self.journal.dir, self.journal.failed)
        if replayed:  # compact: checkpoint the recovered state, drop the replayed segments
            self._checkpoint()
            self.pipeline.barrier(None, timeout_s=600)
            self.disk.drain(600)
        try:
            (self.journal.dir / REPLAY_ATTEMPTS).unlink(missing_ok=True)
        except OSError:
            pass
        self._note_disk()

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

    async def stop(self) -> None:
        self.grid.stop()
        try:
            self.journal.close()
        except OSError as exc:
            log.warning("journal: close failed (%s)", exc)
        await asyncio.get_running_loop().run_in_executor(None, self.pipeline.stop)
        await asyncio.get_running_loop().run_in_executor(None, self.disk.close)  # its checkpoints and fsyncs
        if self.otlp is not None:  # the last log records and metrics, bounded by --otlp-timeout-s
            await asyncio.get_running_loop().run_in_executor(None, self.otlp.shutdown)
        self.carbon_log.close()
        if self.carbon_log.backlog:
            log.error("carbon log %s: %d records could not be written (%s); they are in the journal and are "
                      "written at the next start", self.carbon_log.path, len(self.carbon_log.backlog),
                      self.carbon_log.failed)
        if self.pipeline.sampler is not None:
            self.pipeline.sampler.close(close_meters=True)

    # ---- disk health ---------------------------------------------------------------------------
    def _note_disk(self) -> None:
        """Count new disk errors and set ``disk_problem`` from the journal's and the log's state."""
        j, c = self.journal, self.carbon_log
        if j.errors > self._journal_errors_seen:
            self.metrics.disk_errors.labels("journal").inc(j.errors - self._journal_errors_seen)
            self._journal_errors_seen = j.errors
        if c.errors > self._log_errors_seen:
            self.metrics.disk_errors.labels("log").inc(c.errors - self._log_errors_seen)
            self._log_errors_seen = c.errors
        self.disk_degraded = j.failed is not None or bool(c.backlog) or not c.is_open
        problem = None
        if j.failed is not None:
            problem = f"journal {j.dir}: cannot write ({j.failed.strerror or j.failed})"
        elif not c.is_open:  # could not be opened at start: nothing is taken until it can
            why = c.failed.strerror if c.failed is not None and c.failed.strerror else (c.failed or "not open")
            problem = f"carbon log {c.path}: cannot open ({why})"
        elif len(c.backlog) > int(self.config.log_backlog_max_records):
            problem = (f"carbon log {c.path}: cannot write ({c.failed.strerror if c.failed else 'error'}); "
                       f"{len(c.backlog)} records wait")
        if problem != self.disk_problem:
            if problem:
                log.error("%s: messages are not acknowledged until it can (health: NOT_SERVING)", problem)
            else:
                log.warning("disk writable again: acknowledging messages (health: SERVING)")
        self.disk_problem = problem
        self.metrics.disk_ok.set(0 if self.disk_degraded else 1)
        self.metrics.log_backlog.set(len(c.backlog))

    def probe_disk(self) -> bool:
        """Try to recover (a probe frame in the journal, the log's backlog); True when messages can be
        acknowledged. Called periodically by the server (loop thread); ``disk_degraded`` then says
        whether health is NOT_SERVING."""
        if self.journal.failed is not None:
            self.journal.recover()
        if self.carbon_log.backlog or not self.carbon_log.is_open:
            self.carbon_log.retry()
        self._note_disk()
        return self.disk_problem is None

    # ---- ingest (loop thread) ------------------------------------------------------------------
    def open_stream(self, ident: pb.EngineIdentity) -> ing.StreamState:
        if not ident.instance_id:
            ident.instance_id = uuid.uuid4().hex
        st = ing.open_stream(ident, self.streams, self.config.hardware, self.check_deployment)
        self._journal(KIND_IDENTITY, st.stream_id, ident.SerializeToString())
        return st

    def _journal(self, kind: int, key: str, payload: bytes) -> None:
        if self.disk_problem is not None and not self.probe_disk():
            raise DiskUnavailable(self.disk_problem)
        try:
            self.journal.append(kind, key, payload)
        except OSError:
            self._note_disk()
            raise DiskUnavailable(self.disk_problem or "journal: cannot write") from None

    async def wait_for_room(self) -> None:
        """Backpressure: stop reading engine messages while more than ``--max-pending-steps`` accepted
        steps await the predictor, until the backlog is down to half of it. The pipeline wakes the
        waiters (no polling: with eight streams held, a 0.5 ms poll cost ~35,000 loop wake-ups and GIL
        hand-offs per 480,000 steps); a re-check every 50 ms covers a lost wake-up."""
        limit = self.config.max_pending_steps
        pipe = self.pipeline
        resume_at = limit // 2
        while pipe.pending_steps > limit:
            room = self._room
            if room is None:  # made on the loop's thread, where it is awaited
                room = self._room = asyncio.Event()
            room.clear()
            pipe.room_at = resume_at  # before the re-check: a batch finishing meanwhile sees it
            if pipe.pending_steps <= resume_at:
                break
            try:
                await asyncio.wait_for(room.wait(), ROOM_RECHECK_S)
            except asyncio.TimeoutError:
                pass

    def _wake_room(self) -> None:
        """On the pipeline thread: the backlog is down to the level a waiter asked for."""
        loop, room = self.loop, self._room
        if loop is not None and room is not None and not loop.is_closed():
            loop.call_soon_threadsafe(room.set)

    def _engine_name(self, stream_id: str | None) -> str | None:
        """The engine software a stream's identity names (``vllm``, ``sarathi``), lower case; None if unknown."""
        st = self.streams.get(stream_id) if stream_id else None
        return st.identity.engine_name.lower() if st is not None and st.identity.engine_name else None

    def handle_events(self, stream: ing.StreamState, batch: pb.EventBatch, raw: bytes | None = None) -> pb.Ack:
        """Journal, validate, hand to the pipeline; the Ack. ``raw``: ``batch`` as it came on the wire
        (journaled as is; None: serialised here). Raises :class:`DiskUnavailable` (nothing of the
        message is then taken: the engine sends it again)."""
        if len(batch.steps.step_id) or len(batch.steps.request_id) or len(batch.done) or len(batch.static_batches):
            self._journal(KIND_EVENTS, stream.stream_id, raw if raw is not None else batch.SerializeToString())
        res = ing.ingest(stream, batch)
        ack = res.ack
        if res.steps is not None or res.done or res.batches:
            res.arrival = time.perf_counter()
            self.pipeline.submit(res)
            if res.done:
                self.metrics.observe_finish_lag(res.done, stream.clock_offset_s, time.time())
            if self.journal.needs_roll:
                self._checkpoint()
        self.metrics.observe_ack(ack, res.rejected_by_field)
        return ack
