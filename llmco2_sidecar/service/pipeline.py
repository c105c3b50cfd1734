"""The pipeline thread: micro-batched prediction, attribution, the ledger and the sinks.

The server's event loop only validates, journals and acknowledges (:mod:`.ingest`); it hands each
accepted message to :meth:`Pipeline.submit` and goes on. This thread takes whatever is queued (up
to ``micro_batch_steps`` steps, waiting at most ``micro_batch_ms`` for more once a finish is in the
micro-batch, ``step_wait_ms`` while it holds steps alone), calls the predictor
ONCE per engine per micro-batch, splits energy over requests (:mod:`.attribution`), updates the
ledger, and for every finished request writes its record to the carbon log, the metrics and the
watchers -- in message order per engine.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..energy.sci import request_sci
from ..workload import StepBatch
from .attribution import attribute, idle_gaps
from .carbon_log import CarbonLog, dumps
from .ingest import PHASE_DECODE, AcceptedSteps, DoneEvent, Ingested, StaticBatchEvent, StreamState
from .ledger import RequestLedger
from .metrics import SidecarMetrics

log = logging.getLogger("llmco2.pipeline")


@dataclass
class Barrier:
    """A control item: ``fn`` runs on the pipeline thread after everything submitted before it."""

    fn: Callable[[], Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class Accounting:
    """Carbon settings resolved for one engine."""

    pue: float
    ci_g_per_kwh: float
    region: str
    idle_power_w: float
    host_busy_w: float
    formation_j: float
    embodied_g_per_gpu_s: float
    n_gpus: int
    grid: Any = None  # an energy.grid GridSource: the intensity at a time (never blocks)

    def intensity(self, unix_s: float | None = None):
        """The grid reading (g_per_kwh, kind, source, ts) for energy at ``unix_s``."""
        return self.grid.reading(unix_s)


@dataclass
class _Window:
    index: int
    steps: int = 0
    gpu_j: float = 0.0
    serving_j: float = 0.0
    idle_j: float = 0.0
    requests_j: float = 0.0
    gpu_s: float = 0.0
    predicted_j: float = 0.0  # before calibration
    first_wall_s: float = math.inf  # start of the first step
    last_wall_s: float = -math.inf  # end of the last step
    touched_mono_s: float = 0.0  # time.monotonic() when a step last landed in the window (sidecar clock)


def _awaited(item: Ingested) -> bool:
    """Does a record wait on this item (a finish, an abort, a static batch)?"""
    return bool(item.done or item.batches)


class Pipeline:
    STOP = object()

    def __init__(self, config, predictor, carbon_log: CarbonLog, metrics: SidecarMetrics,
                 ledger: RequestLedger | None = None, on_records: Callable[[list], None] | None = None):
        self.config = config
        self.predictor = predictor
        self.log = carbon_log
        self.metrics = metrics
        self.ledger = ledger or RequestLedger(config.ledger_max_finished, config.ledger_ttl_s)
        self.on_records = on_records
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="llmco2-pipeline", daemon=True)
        self._accounting: dict[str, Accounting] = {}
        self._last_end: dict[str, float] = {}
        self._windows: dict[str, _Window] = {}
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
        self._streams_by_id: dict[str, StreamState] = {}
        self.grid = None  # GridSource (set by the server; opened from the config on first use otherwise)

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
        self.submitted += 1
        if item.steps is not None:
            self.submitted_steps += item.steps.n_steps
        self._q.put(item)

    def barrier(self, fn: Callable[[], Any] | None = None, timeout_s: float = 30.0) -> bool:
        """Wait until everything submitted so far is processed (then run ``fn`` on the pipeline thread)."""
        b = Barrier(fn)
        self._q.put(b)
        return b.done.wait(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread.is_alive():
            self.barrier(self._close_windows, timeout_s)
            self._q.put(self.STOP)
            self._thread.join(timeout_s)

    # ---- thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        max_steps = int(self.config.micro_batch_steps)
        wait_s = float(self.config.micro_batch_ms) / 1000.0
        # steps alone wait longer for company (nothing waits on them); a finish or abort closes the
        # micro-batch within wait_s (its record is awaited: a held response, a lookup)
        steps_wait_s = max(wait_s, float(self.config.step_wait_ms) / 1000.0)
        while True:
            if time.monotonic() - self._last_housekeeping >= 1.0:
                try:
                    self._housekeeping()
                except Exception:  # never let housekeeping stop the pipeline
                    self._last_housekeeping = time.monotonic()
                    log.exception("pipeline housekeeping failed")
            try:
                item = self._q.get(timeout=1.0)
            except queue.Empty:
                continue
            if item is self.STOP:
                return
            if isinstance(item, Barrier):
                self._run_barrier(item)
                continue
            items = [item]
            n = item.steps.n_steps if item.steps is not None else 1
            urgent = _awaited(item)
            deadline = time.perf_counter() + (wait_s if urgent else steps_wait_s)
            ctl = None
            while n < max_steps:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    try:
                        nxt = self._q.get(timeout=left)
                    except queue.Empty:
                        break
                if nxt is self.STOP or isinstance(nxt, Barrier):
                    ctl = nxt
                    break
                items.append(nxt)
                n += nxt.steps.n_steps if nxt.steps is not None else 1
                if not urgent and _awaited(nxt):
                    urgent = True
                    deadline = min(deadline, time.perf_counter() + wait_s)
            try:
                self._process(items)
            except Exception as exc:  # the sidecar keeps serving; the failure is logged
                self.error = exc
                log.exception("pipeline failed on a micro-batch of %d messages", len(items))
            self.done_steps += sum(it.steps.n_steps for it in items if it.steps is not None)
            self.done_messages += len(items)
            if self.metrics is not None:
                self.metrics.queue_depth.set(self.pending)
            if ctl is self.STOP:
                return
            if ctl is not None:
                self._run_barrier(ctl)

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
        if acc is not None:
            return acc
        from ..energy import carbon, embodied, serving

        cfg = self.config
        dep = stream.deployment
        n = dep.n_gpus
        power = serving.serving_power(dep.gpu, n, cfg.host_idle_w_per_gpu,
                                      serving.DEFAULT_FORMATION_J if cfg.formation_j is None else cfg.formation_j)
        pue = carbon.check_pue(carbon.DEFAULT_PUE if cfg.pue is None else cfg.pue)
        if cfg.carbon_intensity_g_per_kwh is not None:
            region = "configured"
        else:
            region = carbon.region(cfg.region).code
        if self.grid is None:
            from ..config import open_grid_source

            self.grid = open_grid_source(cfg).start()
        ci = self.grid.reading().g_per_kwh
        lifetime = embodied.DEFAULT_LIFETIME_YEARS if cfg.lifetime_years is None else cfg.lifetime_years
        acc = Accounting(pue=pue, ci_g_per_kwh=ci, region=region, idle_power_w=power.idle_w,
                         host_busy_w=power.host_idle_w, formation_j=power.formation_j,
                         embodied_g_per_gpu_s=float(embodied.embodied_carbon_g(dep.gpu, 1.0, lifetime)), n_gpus=n,
                         grid=self.grid)
        self._accounting[stream.stream_id] = acc
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
        records: list[dict] = []
        extra: list[dict] = []
        # one predictor call per deployment: engines running the same model on the same GPUs share it
        stream_steps: dict[str, AcceptedSteps] = {}
        groups: list[tuple[object, list[str]]] = []
        for sid, its in by_stream.items():
            steps = [it.steps for it in its if it.steps is not None]
            if not steps:
                continue
            stream_steps[sid] = _concat(steps)
            dep = its[0].stream.deployment
            for gdep, members in groups:
                if gdep == dep:
                    members.append(sid)
                    break
            else:
                groups.append((dep, [sid]))
        predicted: dict[str, tuple] = {}
        for dep, members in groups:
            for sid, pr in zip(members, self._predict(dep, [stream_steps[m] for m in members])):
                predicted[sid] = pr
        with self.ledger.lock:
            for sid, its in by_stream.items():
                stream = its[0].stream
                self._streams_by_id[stream.stream_id] = stream
                if sid in stream_steps:
                    extra.extend(self._process_steps(stream, stream_steps[sid], predicted[sid]))
                for it in its:
                    for b in it.batches:
                        records.extend(self._process_static(stream, b))
                for it in its:
                    for d in it.done:
                        if self.calibrating and self.ledger.in_open_window(d.request_id):
                            # its energy in the open window is calibrated when the window closes
                            self._deferred.setdefault(stream.stream_id, {})[d.request_id] = d
                            continue
                        rec = self._finish(stream, d)
                        if rec is not None:
                            records.append(rec)
            records.extend(self._ready)
            self._ready = []
            now = time.monotonic()
            lines = [dumps(r) for r in records]
            for rec, line in zip(records, lines):
                self.ledger.put_finished(rec, now, line)
        self._emit(records, lines, extra, items)

    def _emit(self, records: list[dict], lines: list[str], extra: list[dict], items: list[Ingested]) -> None:
        if self.suppress_ids:
            lines = [ln for r, ln in zip(records, lines) if r["request_id"] not in self.suppress_ids]
        if self.replaying:
            extra = []
        if lines or extra:
            self.log.write_lines([dumps(r) for r in extra] + lines)
        if self.metrics is not None:
            self.metrics.observe_records(records)
            if records:
                now = time.perf_counter()
                for it in items:
                    if it.done and getattr(it, "arrival", None):
                        self.metrics.latency.observe(now - it.arrival)
        if records and self.on_records is not None:
            self.on_records(records)

    def _predict(self, dep, parts: list[AcceptedSteps]) -> list[tuple]:
        """Predict the steps of several engines of one deployment in ONE call; split per engine:
        (energy_j [S], prefill_energy_j [S], duration_s [S], shares [R]) each."""
        st = _concat(parts)
        step_of = np.repeat(np.arange(st.n_steps, dtype=np.int64), st.slice_count)
        dur = st.end_s - st.start_s
        dur = np.where(dur > 0, dur, np.nan)
        sb = StepBatch(step_of, st.context_tokens, st.new_tokens, dur)
        pred = self.predictor.predict_steps(dep, sb)
        from ..graph import request_shares

        shares = request_shares(dep, sb)
        energy = np.asarray(pred.energy_j, dtype=np.float64)
        prefill = np.asarray(pred.prefill_energy_j, dtype=np.float64)
        duration = np.asarray(pred.duration_s, dtype=np.float64)
        out = []
        s0 = r0 = 0
        for p in parts:
            s1, r1 = s0 + p.n_steps, r0 + int(p.slice_count.sum())
            out.append((energy[s0:s1], prefill[s0:s1], duration[s0:s1], shares[r0:r1]))
            s0, r0 = s1, r1
        return out

    def _process_steps(self, stream: StreamState, st: AcceptedSteps, predicted: tuple) -> list[dict]:
        acc = self.accounting(stream)
        S = st.n_steps
        step_of = np.repeat(np.arange(S, dtype=np.int64), st.slice_count)
        energy_j, prefill_energy_j, duration_s, shares = predicted
        gap = idle_gaps(st.start_s, st.end_s, self._last_end.get(stream.stream_id, math.inf))
        continuing = np.bincount(step_of, weights=(st.context_tokens > 0), minlength=S) > 0
        is_prefill = st.phase != PHASE_DECODE
        e = attribute(step_of, shares, is_prefill, continuing, energy_j, prefill_energy_j, duration_s,
                      gap, acc.idle_power_w, acc.host_busy_w, acc.formation_j, acc.n_gpus)
        self._last_end[stream.stream_id] = float(max(self._last_end.get(stream.stream_id, -math.inf), st.end_s.max()))
        source = "predicted"
        wall_end = st.end_s + stream.clock_offset_s
        slots = self.ledger.slots(st.request_id, stream.stream_id)
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
                            "source": source, "predictor": self.predictor.name})
        return out

    def _windows_add(self, stream: StreamState, acc: Accounting, wall_start: np.ndarray, wall_end: np.ndarray, e,
                     step_of: np.ndarray, slots: np.ndarray) -> list[dict]:
        """Accumulate the steps into their accounting windows; close a window when a later one starts."""
        if not (self.config.log_windows or self.calibrating):
            return []
        ws = float(self.config.window_s)
        widx = np.floor(wall_end / ws).astype(np.int64)
        slice_tot = np.bincount(step_of, weights=e.slice_total_j, minlength=wall_end.shape[0])
        serving = e.busy_host_j + e.gap_attributed_j
        step_total = e.step_total_j
        out = []
        for w in np.unique(widx):
            sel = widx == w
            cur = self._windows.get(stream.stream_id)
            if cur is not None and cur.index != w:
                rec = self._close_window(stream, acc, cur)
                if rec is not None:
                    out.append(rec)
                cur = None
            if cur is None:
                cur = self._windows[stream.stream_id] = _Window(int(w))
            cur.steps += int(sel.sum())
            cur.gpu_j += float(e.gpu_j[sel].sum())
            cur.serving_j += float(serving[sel].sum())
            cur.idle_j += float(e.idle_j[sel].sum())
            cur.requests_j += float(slice_tot[sel].sum())
            cur.gpu_s += float((e.duration_s[sel] * acc.n_gpus).sum())
            cur.predicted_j += float(step_total[sel].sum())
            cur.first_wall_s = min(cur.first_wall_s, float(wall_start[sel].min()))
            cur.last_wall_s = max(cur.last_wall_s, float(wall_end[sel].max()))
            cur.touched_mono_s = time.monotonic()
            if self.calibrating:
                m = sel[step_of]
                self.ledger.add(slots[m], win_prefill_j=e.prefill_j[m], win_decode_j=e.decode_j[m],
                                win_serving_j=e.serving_j[m])
        return out

    def _close_window(self, stream: StreamState, acc: Accounting, w: _Window) -> dict | None:
        """The window's record (None when window records are off). In calibrated mode the window's
        measured energy replaces its predicted energy: every request's energy in the window (and the
        unattributed idle energy) is scaled by measured / predicted, i.e. the measurement is spread
        over the requests by their predicted shares; finishes held for the window are finalised."""
        ws = float(self.config.window_s)
        measured = self._measure_window(w) if self.sampler is not None and not self.replaying else None
        factor = None
        if self.calibrating:
            ok = (measured is not None and measured.get("complete") and w.predicted_j > 0
                  and measured.get("energy_j", 0) > 0)
            factor = measured["energy_j"] / w.predicted_j if ok else None
            self._apply_calibration(stream, factor)
        f = factor if factor is not None else 1.0
        total = (w.gpu_j + w.serving_j + w.idle_j) * f
        grid = acc.intensity(w.last_wall_s)
        op = total * acc.pue / 3.6e6 * grid.g_per_kwh
        emb = w.gpu_s * acc.embodied_g_per_gpu_s
        if not self.config.log_windows:
            return None
        rec = {"type": "window", "ts": w.last_wall_s, "engine": stream.stream_id, "model": stream.model_label,
               "gpu": stream.gpu_label, "window_start": w.index * ws, "window_end": (w.index + 1) * ws,
               "steps": w.steps,
               "energy_j": {"gpu": w.gpu_j * f, "serving": w.serving_j * f, "idle": w.idle_j * f,
                            "requests": w.requests_j * f, "unattributed": w.idle_j * f, "total": total},
               "carbon_g": {"operational": op, "embodied": emb, "total": op + emb},
               "source": "measured" if factor is not None else "predicted",
               "predictor": self.predictor.name, "predicted_j": w.predicted_j, "calibration_factor": factor,
               "pue": acc.pue, **_grid_fields(grid)}
        if measured is not None:
            rec["measured"] = measured
        return rec

    def _apply_calibration(self, stream: StreamState, factor: float | None) -> None:
        led = self.ledger
        with led.lock:
            slots = led.window_slots(stream.stream_id)
            c = led.cols
            if slots.size:
                if factor is None:
                    c["uncalibrated"][slots] += 1
                else:
                    for col, win in (("prefill_j", "win_prefill_j"), ("decode_j", "win_decode_j"),
                                     ("serving_j", "win_serving_j")):
                        c[col][slots] += (factor - 1.0) * c[win][slots]
                for win in ("win_prefill_j", "win_decode_j", "win_serving_j"):
                    c[win][slots] = 0.0
            for d in self._deferred.pop(stream.stream_id, {}).values():
                rec = self._finish(stream, d)
                if rec is not None:
                    self._ready.append(rec)

    def _measure_window(self, w: _Window) -> dict:
        """The meters' energy over the window's steps."""
        try:
            mw = self.sampler.window(w.first_wall_s, max(w.last_wall_s, w.first_wall_s))
        except Exception as exc:  # a meter problem must not stop accounting
            return {"error": str(exc), "complete": False}
        gpu = sum(v for d, v in mw.energy_j.items() if d.startswith("gpu"))
        host = mw.total_j - gpu
        if self.metrics is not None:
            if gpu:
                self.metrics.energy.labels("gpu", "measured").inc(gpu)
            if host:
                self.metrics.energy.labels("host", "measured").inc(host)
            self.metrics.measured_windows.inc()
        return {"energy_j": mw.total_j, "gpu_j": gpu, "host_j": host, "domains": mw.energy_j,
                "complete": mw.complete, "meters": list(mw.meters), "start": w.first_wall_s, "end": w.last_wall_s}

    def _housekeeping(self) -> None:
        """Close windows that ended a while ago (an engine that went quiet); close requests that no
        step has touched for ``ledger_ttl_s`` (their engine went away without finishing them) with
        a record marked ``stale`` so that their energy is not lost from the books."""
        self._last_housekeeping = time.monotonic()
        out = []
        stale = self.ledger.stale_ids(self._last_housekeeping - float(self.config.ledger_ttl_s))
        if stale and not self.replaying:
            records = []
            with self.ledger.lock:
                for rid, sid in stale:
                    stream = self._streams_by_id.get(sid)
                    if stream is None:
                        continue
                    rec = self._finish(stream, DoneEvent(rid, True, 0, 0, 0.0))
                    if rec is not None:
                        rec["stale"] = True
                        records.append(rec)
                lines = [dumps(r) for r in records]
                for rec, line in zip(records, lines):
                    self.ledger.put_finished(rec, None, line)
            self.stale_closed += len(records)
            if records:
                log.warning("closed %d requests without a finish event for %.0f s (marked stale)", len(records),
                            self.config.ledger_ttl_s)
                self._emit(records, lines, [], [])
        if not self._windows:
            return
        ws = float(self.config.window_s)
        # "quiet" is judged on the sidecar's own clock, not the engine's: an engine whose clock is not
        # wall time (a replayed trace, a simulator) must not see its open window closed under it
        now = time.monotonic()
        for sid, w in list(self._windows.items()):
            if now - w.touched_mono_s > ws + 1.0 and sid in self._streams_by_id and not self.replaying:
                rec = self._close_window(self._streams_by_id[sid], self._accounting[sid], w)
                del self._windows[sid]
                if rec is not None:
                    out.append(rec)
        self._flush_ready(out)

    def _flush_ready(self, extra: list[dict]) -> None:
        """Emit window records and the requests finalised by closing windows (outside _process)."""
        with self.ledger.lock:
            records, self._ready = self._ready, []
            lines = [dumps(r) for r in records]
            for rec, line in zip(records, lines):
                self.ledger.put_finished(rec, None, line)
        if records or extra:
            self._emit(records, lines, extra, [])

    def _close_windows(self) -> None:
        """At shutdown: close every open window (and finalise the finishes held for them)."""
        out = []
        for sid, w in list(self._windows.items()):
            stream = self._streams_by_id.get(sid)
            if stream is not None:
                rec = self._close_window(stream, self._accounting[sid], w)
                if rec is not None and not self.replaying:
                    out.append(rec)
        self._windows.clear()
        self._flush_ready(out)

    def _record(self, stream: StreamState, acc: Accounting, rid: str, ts: float, prompt: int, output: int,
                prefill_j: float, decode_j: float, serving_j: float, gpu_s: float, steps: int, aborted: bool,
                source: str = "predicted", client_id: str = "") -> dict:
        total = prefill_j + decode_j + serving_j
        grid = acc.intensity(ts)
        op = total * acc.pue / 3.6e6 * grid.g_per_kwh
        emb = gpu_s * acc.embodied_g_per_gpu_s
        return {"type": "request", "ts": ts, "request_id": rid, "client_request_id": client_id or None,
                "engine": stream.stream_id,
                "model": stream.model_label, "gpu": stream.gpu_label, "prompt_tokens": int(prompt),
                "output_tokens": int(output), "steps": int(steps), "aborted": bool(aborted),
                "energy_j": {"prefill": prefill_j, "decode": decode_j, "serving": serving_j, "total": total},
                "carbon_g": {"operational": op, "embodied": emb, "total": op + emb},
                "sci": request_sci(op + emb, int(prompt), int(output)),
                "gpu_s": gpu_s, "source": source, "predictor": self.predictor.name,
                "pue": acc.pue, **_grid_fields(grid), "region": acc.region}

    def _finish(self, stream: StreamState, d: DoneEvent) -> dict | None:
        acc = self.accounting(stream)
        t = self.ledger.close(d.request_id)
        if t is None:
            log.warning("finish of %s without any accounted step", d.request_id)
            return None
        ts = (d.time_s + stream.clock_offset_s) if d.time_s else (t.last_wall_s or time.time())
        output = d.output_tokens or (t.decode_slices + (1 if t.prefill_tokens >= max(t.prompt_tokens, 1) else 0))
        source = "measured" if self.calibrating and t.uncalibrated == 0 else "predicted"
        return self._record(stream, acc, d.request_id, ts, d.prompt_tokens or t.prompt_tokens, output,
                            t.prefill_j, t.decode_j, t.serving_j, t.gpu_s, t.steps, d.aborted, source,
                            d.client_request_id)

    def _process_static(self, stream: StreamState, b: StaticBatchEvent) -> list[dict]:
        """A static batch: prefill of every request together, then decodes until each has its output."""
        dep = stream.deployment
        acc = self.accounting(stream)
        prompt = np.asarray(b.prompt_tokens, dtype=np.int64)
        out = np.asarray(b.output_tokens, dtype=np.int64)
        B = prompt.shape[0]
        T = int(out.max())
        # step k (0 = prefill) holds request r while k < out[r]
        k = np.arange(T)
        alive = k[:, None] < out[None, :]  # [T, B]
        step_of, req = np.nonzero(alive)
        ctx = np.where(step_of == 0, 0, prompt[req] + step_of - 1)
        new = np.where(step_of == 0, prompt[req], 1)
        sb = StepBatch(step_of.astype(np.int64), ctx.astype(np.int64), new.astype(np.int64), np.full(T, np.nan))
        pred = self.predictor.predict_steps(dep, sb)
        observed = b.end_s - b.start_s
        if observed > 0 and float(np.sum(pred.duration_s)) > 0:
            scale = observed / float(np.sum(pred.duration_s))
            sb = StepBatch(sb.request_step, sb.context_tokens, sb.new_tokens, np.asarray(pred.duration_s) * scale)
            pred = self.predictor.predict_steps(dep, sb)
        from ..graph import request_shares

        shares = request_shares(dep, sb)
        e = attribute(sb.request_step, shares, step_of == 0, np.ones(T, dtype=bool), np.asarray(pred.energy_j, float),
                      np.asarray(pred.prefill_energy_j, float), np.asarray(pred.duration_s, float), np.zeros(T),
                      acc.idle_power_w, acc.host_busy_w, acc.formation_j, acc.n_gpus)
        sums = {name: np.bincount(req, weights=getattr(e, name), minlength=B)
                for name in ("prefill_j", "decode_j", "serving_j", "gpu_s")}
        ts = b.end_s + stream.clock_offset_s
        steps = alive.sum(axis=0)
        if self.metrics is not None:
            m = self.metrics.energy
            m.labels("prefill", "predicted").inc(float(e.prefill_j.sum()))
            m.labels("decode", "predicted").inc(float(e.decode_j.sum()))
            m.labels("serving", "predicted").inc(float(e.serving_j.sum()))
        return [self._record(stream, acc, b.request_id[i], ts, int(prompt[i]), int(out[i]), float(sums["prefill_j"][i]),
                             float(sums["decode_j"][i]), float(sums["serving_j"][i]), float(sums["gpu_s"][i]),
                             int(steps[i]), False) for i in range(B)]


def _grid_fields(r) -> dict:
    """The intensity a record used: figure, kind (location, marginal), source, unix time of the reading."""
    return {"carbon_intensity_g_per_kwh": r.g_per_kwh, "carbon_intensity_kind": r.kind,
            "carbon_intensity_source": r.source, "carbon_intensity_ts": r.ts}


def _reuses_finished_id(its: list[Ingested]) -> bool:
    """Whether a request finished in one message appears in the steps of a later message."""
    later: set = set()
    for it in reversed(its):
        if it.done and later and any(d.request_id in later for d in it.done):
            return True
        if it.steps is not None:
            later.update(it.steps.request_id)
    return False


def _concat(parts: list[AcceptedSteps]) -> AcceptedSteps:
    if len(parts) == 1:
        return parts[0]
    rids: list = []
    for p in parts:
        rids.extend(p.request_id)
    cat = np.concatenate
    return AcceptedSteps(step_id=cat([p.step_id for p in parts]), start_s=cat([p.start_s for p in parts]),
                         end_s=cat([p.end_s for p in parts]), slice_count=cat([p.slice_count for p in parts]),
                         request_id=rids, phase=cat([p.phase for p in parts]),
                         new_tokens=cat([p.new_tokens for p in parts]),
                         context_tokens=cat([p.context_tokens for p in parts]),
                         prompt_tokens=cat([p.prompt_tokens for p in parts]))
