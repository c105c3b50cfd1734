"""The pipeline thread: micro-batched prediction, attribution, the ledger and the sinks.

The server's event loop only validates, journals and acknowledges (:mod:`.ingest`); it hands each
accepted message to :meth:`Pipeline.submit` and goes on. This thread takes whatever is queued (up
to ``micro_batch_steps`` steps, waiting at most ``micro_batch_ms`` for more once it holds something a
record is awaited for, ``step_wait_ms`` otherwise), calls the predictor
ONCE per deployment per micro-batch, splits energy over requests (:mod:`.attribution`), updates the
ledger, and for every finished request writes its record to the carbon log, the metrics and the
watchers -- in message order per engine.

Failure isolation (issue 13): a prediction call shared by several engines that fails is retried per
engine, and an engine's call that fails is retried per message, so a failure costs at most the
messages that caused it and never another engine's. Each engine is attributed and committed on its
own; a static batch or a finish that fails costs only itself. What fails goes to the dead-letter
file (:mod:`.dead_letter`) and its requests still get a record (``source: "error"``, ``error``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..energy.accounting import account_steps
from ..threadnames import name_os_thread
from .attribution import PredictionError
from .carbon_log import CarbonLog
from .dead_letter import DeadLetter
from .ingest import (
    PHASE_DECODE,
    AcceptedSteps,
    DoneEvent,
    Ingested,
    StreamState,
)
from .finishing import FinishingMixin
from .inbox import AWAITED, FULL, Inbox
from .isolation import IsolationMixin
from .ledger import RequestLedger
from .metrics import SidecarMetrics
from .prediction import predict_steps  # noqa: F401  (re-exported)
from .records import Accounting, make_accounting, with_predictor
from .windows import WindowsMixin, _Window  # noqa: F401  (_Window: re-exported for tests)

log = logging.getLogger("llmco2.pipeline")


@dataclass
class Barrier:
    """A control item: ``fn`` runs on the pipeline thread after everything submitted before it."""

    fn: Callable[[], Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)


#: an inbox marker from :meth:`Pipeline.expedite`: a record is now awaited (a lookup, a watcher)
EXPEDITE = object()


class Pipeline(FinishingMixin, IsolationMixin, WindowsMixin):
    STOP = object()

    def __init__(self, config, predictor, carbon_log: CarbonLog, metrics: SidecarMetrics,
                 ledger: RequestLedger | None = None, on_records: Callable[[list], None] | None = None,
                 dead_letter: DeadLetter | None = None):
        self.config = config
        self.predictor = predictor
        self.log = carbon_log
        self.metrics = metrics
        self.ledger = ledger or RequestLedger(config.ledger_max_finished, config.ledger_ttl_s)
        self.on_records = on_records
        from .dead_letter import dead_letter_path

        self.dead_letter = dead_letter or DeadLetter(dead_letter_path(config.log), metrics)
        self._q = Inbox()  # wakes this thread only when it must (see .inbox)
        self._thread = threading.Thread(target=self._run, name="llmco2-pipeline", daemon=True)
        self._accounting: dict[str, Accounting] = {}
        self._last_end: dict[str, float] = {}
        self._windows: dict[str, _Window] = {}
        self._errored: "OrderedDict[tuple[str, str], str]" = OrderedDict()  # (engine, request) -> why
        self.suppress_ids: set[str] = set()  # request ids already in the carbon log (journal replay)
        self.sampler = None  # a measure.MeterSampler when --measure is on
        self.calibrate = bool(getattr(config, "calibrate", False))
        self._deferred: dict[str, dict[str, DoneEvent]] = {}  # calibrated mode: finishes awaiting their window
        self._ready: list[dict] = []  # records finalised when a window closed
        self._last_housekeeping = time.monotonic()
        self.stale_closed = 0
        self.replaying = False
        self.error: BaseException | None = None
        self.submitted = 0  # written by the submitting thread only
        self.done_messages = 0  # written by the pipeline thread only
        self.submitted_steps = 0
        self.done_steps = 0
        # backpressure without polling: ingest, waiting for room, sets ``room_at`` (a backlog in steps);
        # once the backlog is down to it this thread calls ``on_room`` (the core wakes the waiters)
        self.room_at: int | None = None
        self.on_room: Callable[[], None] | None = None
        self._streams_by_id: dict[str, StreamState] = {}
        self.grid = None  # --grid source (set by the core; opened from the config on first use otherwise)
        # Records on demand (unless --prompt-records): ``demand()`` says whether anyone waits for a
        # record now (a lookup, a WatchFinished watcher, a lookup in the last 10 s; the core sets it).
        # A finish nobody waits for is held like steps alone (step_wait_ms), so that at low step
        # rates several finishes share one prediction call, whose fixed cost is paid with the CPU's
        # caches cold (benchmarks/results/pipeline_cold.md); :meth:`expedite` closes such a micro-batch
        # within micro_batch_ms once someone does wait. None (--prompt-records): every finish is awaited.
        self.demand: Callable[[], bool] | None = None
        self._lazy_in = 0  # messages submitted with finishes nobody waited for (the submitting thread)
        self._lazy_out = 0  # ... of them processed (this thread)
        self._awaited_since: float | None = None  # when a waiter came for the micro-batch being formed

    # ---- control -------------------------------------------------------------------------------
    @property
    def calibrating(self) -> bool:
        """Calibrated mode: ``--calibrate`` with at least one meter open."""
        return self.calibrate and self.sampler is not None

    @property
    def pending(self) -> int:
        """Messages submitted and not yet processed."""
        return self.submitted - self.done_messages

    @property
    def pending_steps(self) -> int:
        return self.submitted_steps - self.done_steps

    def start(self) -> "Pipeline":
        self._thread.start()
        return self

    def submit(self, item: Ingested) -> None:
        """Queue an accepted message (the submitting thread: the event loop, or the journal replay)."""
        self.submitted += 1
        n = item.steps.n_steps if item.steps is not None else 0
        self.submitted_steps += n
        wanted = self._wanted(item)
        if item.done and not wanted:
            item.lazy_done = True
            self._lazy_in += 1
        self._q.put(item, n, wanted)

    def _wanted(self, item: Ingested) -> bool:
        """Is a record awaited on ``item`` now: a static batch, or a finish that someone waits for?"""
        return bool(item.batches) or (bool(item.done) and self._wanted_now())

    def expedite(self) -> None:
        """Someone now waits for a record (the loop thread, after registering the waiter, so that
        ``demand()`` says so): a micro-batch held with finishes nobody waited for closes within
        micro_batch_ms. While such finishes are in hand, a marker wakes this thread (held in the inbox,
        or the micro-batch being formed: it looks at ``demand()`` again before it sleeps); without,
        nothing is held back (the next finish is submitted as awaited)."""
        if self._lazy_in != self._lazy_out:
            self._q.put_control(EXPEDITE)

    def put_control(self, item) -> None:
        """Queue a control item (a :class:`Barrier`): it runs after everything submitted before it."""
        self._q.put_control(item)

    def barrier(self, fn: Callable[[], Any] | None = None, timeout_s: float = 30.0) -> bool:
        """Wait until everything submitted so far is processed (then run ``fn`` on the pipeline thread)."""
        b = Barrier(fn)
        self._q.put_control(b)
        return b.done.wait(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread.is_alive():
            self.barrier(self._close_windows, timeout_s)
            self._q.put_control(self.STOP)
            self._thread.join(timeout_s)

    # ---- thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        name_os_thread("llmco2-pipeline")
        max_steps = int(self.config.micro_batch_steps)
        wait_s = float(self.config.micro_batch_ms) / 1000.0
        # steps alone wait longer for company (nothing waits on them); a finish or abort closes the
        # micro-batch within wait_s (its record is awaited: a held response, a lookup)
        steps_wait_s = max(wait_s, float(self.config.step_wait_ms) / 1000.0)
        inbox = self._q
        while True:
            if time.monotonic() - self._last_housekeeping >= 1.0:
                try:
                    self._housekeeping()
                except Exception:  # never let housekeeping stop the pipeline
                    self._last_housekeeping = time.monotonic()
                    log.exception("pipeline housekeeping failed")
            item = inbox.take(1.0)
            if item is None or item is EXPEDITE:
                continue
            if item is self.STOP:
                return
            if isinstance(item, Barrier):
                self._run_barrier(item)
                continue
            items = [item]
            n = item.steps.n_steps if item.steps is not None else 1
            urgent = self._wanted(item)
            held_done = bool(item.done)  # finishes held (nobody waited for them while not urgent)
            deadline = time.perf_counter() + (wait_s if urgent else steps_wait_s)
            ctl = None
            while n < max_steps:
                nxt = inbox.pop()
                if nxt is None:
                    if held_done and not urgent and self._wanted_now():  # a waiter came (expedite)
                        urgent = True
                        self._awaited_since = time.perf_counter()
                        deadline = min(deadline, self._awaited_since + wait_s)
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    # woken early only by what changes the plan: an awaited record, a full micro-batch
                    inbox.wait(left, FULL if urgent else AWAITED, max_steps - n)
                    continue
                if nxt is EXPEDITE:
                    continue
                if nxt is self.STOP or isinstance(nxt, Barrier):
                    ctl = nxt
                    break
                items.append(nxt)
                n += nxt.steps.n_steps if nxt.steps is not None else 1
                held_done = held_done or bool(nxt.done)
                if not urgent and self._wanted(nxt):
                    urgent = True
                    deadline = min(deadline, time.perf_counter() + wait_s)
            try:
                self._process(items)
            except Exception as exc:  # a bug outside the isolated parts: never lose the items silently
                self.error = exc
                self._last_resort(items, exc)
            self.done_steps += sum(it.steps.n_steps for it in items if it.steps is not None)
            self.done_messages += len(items)
            self._lazy_out += sum(it.lazy_done for it in items)
            self._awaited_since = None
            room_at = self.room_at
            if room_at is not None and self.submitted_steps - self.done_steps <= room_at:
                self.room_at = None  # one wake-up per request (the waiter asks again if it must)
                on_room = self.on_room
                if on_room is not None:
                    on_room()
            if ctl is self.STOP:
                return
            if ctl is not None:
                self._run_barrier(ctl)

    def _wanted_now(self) -> bool:
        """Does anyone wait for records now (always, without a ``demand``: --prompt-records)?"""
        demand = self.demand
        return demand is None or demand()

    def _run_barrier(self, b: Barrier) -> None:
        try:
            if b.fn is not None:
                b.fn()
        except Exception:
            log.exception("pipeline barrier failed")
        finally:
            b.done.set()

    # ---- accounting ------------------------------------------------------------------------------
    def accounting(self, stream: StreamState) -> Accounting:
        acc = self._accounting.get(stream.stream_id)
        if acc is None:
            if self.grid is None:
                from ..config import open_grid_source

                self.grid = open_grid_source(self.config).start()
            acc = self._accounting[stream.stream_id] = with_predictor(
                make_accounting(self.config, stream.deployment, self.grid), self.predictor, stream.deployment,
                stream.model_label)
        return acc

    # ---- processing ------------------------------------------------------------------------------
    def _process(self, items: list[Ingested]) -> None:
        by_stream: dict[str, list[Ingested]] = {}
        for it in items:
            by_stream.setdefault(it.stream.stream_id, []).append(it)
        # Per engine, all steps of the micro-batch are accounted before its finish events. That is
        # exact unless a request id finishes and is used again by a later message of the same
        # micro-batch: then take the messages one at a time (rare; slower, same results).
        if len(items) > 1 and any(_reuses_finished_id(its) for its in by_stream.values()):
            for it in items:
                self._process([it])
            return
        units = self._predict_units(by_stream)
        records: list[dict] = []
        extra: list[dict] = []
        with self.ledger.lock:
            for sid, its in by_stream.items():
                stream = its[0].stream
                self._streams_by_id[sid] = stream
                for unit_items, steps, pred in units[sid]:
                    self._account_unit(stream, unit_items, steps, pred, records, extra)
            records.extend(self._ready)
            self._ready = []
            now = time.monotonic()
            lines = [self._dumps(r) for r in records]
            for rec, line in zip(records, lines):
                self.ledger.put_finished(rec, now, line, logged=False)
        self._emit(records, lines, extra, items)

    def _emit(self, records: list[dict], lines: list[str], extra: list[dict], items: list[Ingested]) -> None:
        if self.suppress_ids:
            lines = [ln for r, ln in zip(records, lines) if r["request_id"] not in self.suppress_ids]
        if self.replaying:
            extra = []
        try:
            if lines or extra:
                self.log.write_lines([self._dumps(r) for r in extra] + lines)
        finally:  # in the log (or its backlog) now: lookups may answer with them
            if records:
                with self.ledger.lock:
                    self.ledger.mark_logged([r["request_id"] for r in records])
        if self.metrics is not None:
            self.metrics.observe_records(records)
            if records:
                now = time.perf_counter()
                since = self._awaited_since
                for it in items:  # awaited records only: from the finish's arrival or, for a finish held
                    arrival = getattr(it, "arrival", None)  # until a waiter came, from the waiter's arrival
                    if it.done and arrival:
                        if not it.lazy_done:
                            self.metrics.latency.observe(now - arrival)
                        elif since is not None:
                            self.metrics.latency.observe(now - max(arrival, since))
        if records and self.on_records is not None:
            self.on_records(records)

    def _process_steps(self, stream: StreamState, st: AcceptedSteps, predicted: tuple) -> list[dict]:
        acc = self.accounting(stream)
        S = st.n_steps
        step_of = np.repeat(np.arange(S, dtype=np.int64), st.slice_count)
        energy_j, prefill_energy_j, duration_s, shares = predicted
        is_prefill = st.phase != PHASE_DECODE
        # the same function accounts a replayed trace (llmco2 replay): one code path
        e = account_steps(step_of, st.context_tokens, is_prefill, st.start_s, st.end_s,
                          (energy_j, prefill_energy_j, duration_s, shares),
                          self._last_end.get(stream.stream_id, math.inf), acc)
        if not (np.isfinite(e.slice_total_j).all() and np.isfinite(e.step_total_j).all()):
            raise PredictionError("attribution gave non-finite energy")
        # nothing is changed above this line: a failure leaves the books as they were
        self._last_end[stream.stream_id] = float(max(self._last_end.get(stream.stream_id, -math.inf), st.end_s.max()))
        source = "predicted"
        wall_end = st.end_s + stream.clock_offset_s
        slots = self.ledger.slots(st.request_id, stream.stream_id, st.distinct)
        is_decode = ~is_prefill
        self.ledger.add(slots, prefill_j=e.prefill_j, decode_j=e.decode_j, serving_j=e.serving_j, gpu_s=e.gpu_s,
                        steps=np.ones_like(slots), decode_slices=is_decode.astype(np.int64),
                        prefill_tokens=np.where(is_prefill, st.new_tokens, 0))
        self.ledger.maximum(slots, prompt_tokens=st.prompt_tokens, last_wall_s=wall_end[step_of])
        self.ledger.touch(slots, time.monotonic())
        if self.metrics is not None:
            m = self.metrics.energy
            m.labels("prefill", source).inc(float(e.prefill_j.sum()))
            m.labels("decode", source).inc(float(e.decode_j.sum()))
            m.labels("serving", source).inc(float(e.serving_j.sum()))
            idle = float(e.idle_j.sum())
            if idle:
                m.labels("idle", source).inc(idle)
                ci = acc.intensity(float(st.end_s[-1] + stream.clock_offset_s)).g_per_kwh
                self.metrics.carbon.labels("operational").inc(idle * acc.pue / 3.6e6 * ci)
        wall_start = st.start_s + stream.clock_offset_s
        out = self._windows_add(stream, acc, wall_start, wall_end, e, step_of, slots)
        if self.config.log_steps and not self.replaying:
            tot = e.step_total_j
            step_tokens = np.bincount(step_of, weights=st.new_tokens, minlength=S).astype(np.int64)
            for i in range(S):
                out.append({"type": "step", "ts": float(wall_end[i]), "engine": stream.stream_id,
                            "step_id": int(st.step_id[i]), "requests": int(st.slice_count[i]),
                            "tokens": int(step_tokens[i]), "duration_s": float(e.duration_s[i]),
                            "energy_j": {"gpu": float(e.gpu_j[i]), "serving": float(e.busy_host_j[i] + e.gap_attributed_j[i]),
                                         "idle": float(e.idle_j[i]), "total": float(tot[i])},
                            "source": source, "predictor": acc.predictor_name or self.predictor.name})
        return out

def _reuses_finished_id(its: list[Ingested]) -> bool:
    """Whether a request finished in one message appears in the steps of a later message."""
    later: set = set()
    for it in reversed(its):
        if it.done and later and any(d.request_id in later for d in it.done):
            return True
        if it.steps is not None:
            later.update(it.steps.request_id if it.steps.distinct is None else it.steps.distinct)
    return False
