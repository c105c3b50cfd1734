"""Accounting windows of the pipeline: per engine, the energy of every ``window_s`` of its steps, a
``window`` record when a window closes, and in calibrated mode (``--measure`` with ``--calibrate``)
the meters' energy spread over the window's requests by their predicted shares.

A mixin of :class:`~.pipeline.Pipeline` (its state lives there); runs on the pipeline thread.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .ingest import StreamState
from .records import Accounting, grid_fields


@dataclass
class _Window:
    index: int
    steps: int = 0
    gpu_j: float = 0.0
    serving_j: float = 0.0
    idle_j: float = 0.0
    requests_j: float = 0.0
    gpu_s: float = 0.0  # GPU-seconds held: steps and their gaps
    idle_gpu_s: float = 0.0  # of which in gaps no request ran through (unattributed)
    predicted_j: float = 0.0  # before calibration
    first_wall_s: float = math.inf  # start of the first step
    last_wall_s: float = -math.inf  # end of the last step
    touched_mono_s: float = 0.0  # time.monotonic() when a step last landed in the window (sidecar clock)


class WindowsMixin:
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
        lo, hi = int(widx.min()), int(widx.max())
        # the usual case, every step in one window: whole arrays instead of masked copies (the same
        # values in the same order: the same sums)
        for w in (lo,) if lo == hi else np.unique(widx):
            sel = slice(None) if lo == hi else widx == w
            cur = self._windows.get(stream.stream_id)
            if cur is not None and cur.index != w:
                rec = self._close_window(stream, acc, cur)
                if rec is not None:
                    out.append(rec)
                cur = None
            if cur is None:
                cur = self._windows[stream.stream_id] = _Window(int(w))
            cur.steps += int(widx.shape[0]) if lo == hi else int(sel.sum())
            cur.gpu_j += float(e.gpu_j[sel].sum())
            cur.serving_j += float(serving[sel].sum())
            cur.idle_j += float(e.idle_j[sel].sum())
            cur.requests_j += float(slice_tot[sel].sum())
            cur.gpu_s += float(((e.duration_s[sel] + e.gap_s[sel]) * acc.n_gpus).sum())
            cur.idle_gpu_s += float(e.idle_gpu_s[sel].sum())
            cur.predicted_j += float(step_total[sel].sum())
            cur.first_wall_s = min(cur.first_wall_s, float(wall_start[sel].min()))
            cur.last_wall_s = max(cur.last_wall_s, float(wall_end[sel].max()))
            cur.touched_mono_s = time.monotonic()
            if self.calibrating:
                m = np.ones(step_of.shape[0], bool) if lo == hi else sel[step_of]
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
               "gpu_s": {"total": w.gpu_s, "unattributed": w.idle_gpu_s},
               "source": "measured" if factor is not None else "predicted",
               "predictor": acc.predictor_name or self.predictor.name, "predicted_j": w.predicted_j, "calibration_factor": factor,
               "pue": acc.pue, **grid_fields(grid)}
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

    def _flush_ready(self, extra: list[dict]) -> None:
        """Emit window records and the requests finalised by closing windows (outside _process)."""
        with self.ledger.lock:
            records, self._ready = self._ready, []
            lines = [self._dumps(r) for r in records]
            for rec, line in zip(records, lines):
                self.ledger.put_finished(rec, None, line, logged=False)
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

