"""Closing requests on the pipeline thread (a mixin of :class:`~.pipeline.Pipeline`): a finish's
record from the ledger's sums, a static batch's records, and the housekeeping that closes quiet
windows and requests no step has touched for ``ledger_ttl_s`` (marked ``stale``)."""

from __future__ import annotations

import logging
import time

from .ingest import DoneEvent, StaticBatchEvent, StreamState
from .records import Accounting, error_record, request_record
from .static import static_batch_energy

log = logging.getLogger("llmco2.pipeline")


class FinishingMixin:
    """Needs the pipeline's ``config``, ``ledger``, ``predictor``, ``metrics``, ``_accounting``,
    ``_windows``, ``_streams_by_id``, ``_errored``, ``accounting()``, ``_emit()``, ``_dumps()``,
    ``_close_window()`` and ``_flush_ready()``."""

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
                lines = [self._dumps(r) for r in records]
                for rec, line in zip(records, lines):
                    self.ledger.put_finished(rec, None, line, logged=False)
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


    def _record(self, stream: StreamState, acc: Accounting, rid: str, ts: float, prompt: int, output: int,
                prefill_j: float, decode_j: float, serving_j: float, gpu_s: float, steps: int, aborted: bool,
                source: str = "predicted", error: str | None = None, client_id: str = "") -> dict:
        return request_record(stream, acc, rid, ts, prompt, output, prefill_j, decode_j, serving_j, gpu_s, steps,
                              aborted, source, self.predictor.name, error, client_id)

    def _finish(self, stream: StreamState, d: DoneEvent) -> dict | None:
        t = self.ledger.close(d.request_id)
        why = self._errored.pop((stream.stream_id, d.request_id), None) if self._errored else None
        if t is None:
            if why is None:
                why = "finish: no step of this request was accounted"
                log.warning("finish of %s without any accounted step", d.request_id)
            return error_record(stream, self._accounting.get(stream.stream_id), d.request_id,
                                (d.time_s + stream.clock_offset_s) if d.time_s else time.time(), why,
                                d.prompt_tokens, d.output_tokens, d.aborted, self.predictor.name, d.client_request_id)
        acc = self.accounting(stream)
        ts = (d.time_s + stream.clock_offset_s) if d.time_s else (t.last_wall_s or time.time())
        output = d.output_tokens or (t.decode_slices + (1 if t.prefill_tokens >= max(t.prompt_tokens, 1) else 0))
        source = "measured" if self.calibrating and t.uncalibrated == 0 else "predicted"
        return self._record(stream, acc, d.request_id, ts, d.prompt_tokens or t.prompt_tokens, output,
                            t.prefill_j, t.decode_j, t.serving_j, t.gpu_s, t.steps, d.aborted, source, why,
                            d.client_request_id)

    def _process_static(self, stream: StreamState, b: StaticBatchEvent) -> list[dict]:
        """A static batch: prefill of every request together, then decodes until each has its output."""
        acc = self.accounting(stream)
        sums, steps, e = static_batch_energy(self.predictor, stream.deployment, acc, b.prompt_tokens,
                                             b.output_tokens, b.end_s - b.start_s)
        ts = b.end_s + stream.clock_offset_s
        if self.metrics is not None:
            m = self.metrics.energy
            m.labels("prefill", "predicted").inc(float(e.prefill_j.sum()))
            m.labels("decode", "predicted").inc(float(e.decode_j.sum()))
            m.labels("serving", "predicted").inc(float(e.serving_j.sum()))
        return [self._record(stream, acc, b.request_id[i], ts, int(b.prompt_tokens[i]), int(b.output_tokens[i]),
                             float(sums["prefill_j"][i]), float(sums["decode_j"][i]), float(sums["serving_j"][i]),
                             float(sums["gpu_s"][i]), int(steps[i]), False) for i in range(len(b.request_id))]
