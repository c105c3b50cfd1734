"""Failure isolation of the pipeline (issue 13): what fails costs at most its culprit messages.

* Prediction: one call per deployment per micro-batch; a failed shared call is retried per engine,
  a failed engine call per message (outside the ledger lock).
* Accounting: per engine and per unit (all its messages, or one message after a failed call), the
  steps, then each static batch, then each finish, each part on its own: a failure dead-letters
  that part (:mod:`.dead_letter`), marks its requests, and their records say why
  (``source: "error"``, ``error``).
* A record that cannot be serialised becomes an error record; a bug outside these parts
  dead-letters its micro-batch rather than losing it silently.

A mixin of :class:`~.pipeline.Pipeline` (its state lives there); runs on the pipeline thread.
"""

from __future__ import annotations

import logging
import time

from . import prediction as _prediction_mod
from .carbon_log import dumps
from .dead_letter import describe, steps_to_json
from .ingest import AcceptedSteps, DoneEvent, Ingested, StaticBatchEvent, StreamState
from .records import error_record

log = logging.getLogger("llmco2.pipeline")
MAX_ERRORED_REQUESTS = 100_000


class IsolationMixin:
    def _last_resort(self, items: list[Ingested], exc: BaseException) -> None:
        """A failure outside the isolated parts (a bug): dead-letter the micro-batch's messages and still
        give their finishes and static batches a record that says why."""
        records: list[dict] = []
        try:
            with self.ledger.lock:
                for it in items:
                    sid = it.stream.stream_id
                    rids = list(it.steps.request_id) if it.steps is not None else []
                    rids += [d.request_id for d in it.done] + [r for b in it.batches for r in b.request_id]
                    self.dead_letter.put("pipeline", sid, exc, rids, it.steps.n_steps if it.steps is not None else 0)
                    why = f"pipeline: {describe(exc)}"
                    self._mark_errored(sid, rids, why)
                    acc = self._accounting.get(sid)
                    for b in it.batches:
                        records += [error_record(it.stream, acc, r, b.end_s + it.stream.clock_offset_s, why, p, o,
                                                 predictor=self.predictor.name)
                                    for r, p, o in zip(b.request_id, b.prompt_tokens, b.output_tokens)]
                    for d in it.done:
                        rec = self._finish_isolated(it.stream, d)
                        if rec is not None:
                            records.append(rec)
                lines = [self._dumps(r) for r in records]
                for rec, line in zip(records, lines):
                    self.ledger.put_finished(rec, time.monotonic(), line, logged=False)
            self._emit(records, lines, [], items)
        except Exception:
            log.exception("pipeline failed on a micro-batch of %d messages", len(items))

    def _predict_units(self, by_stream: dict[str, list[Ingested]]) -> dict[str, list[tuple]]:
        """Per engine, the units it is accounted in: ``(messages, steps, prediction)``, the prediction
        a tuple or the exception that stands for it. One predictor call per deployment; a failed
        shared call is retried per engine, a failed engine call per message (outside the ledger lock)."""
        stream_steps: dict[str, AcceptedSteps] = {}
        groups: list[tuple[object, list[str]]] = []
        for sid, its in by_stream.items():
            steps = [it.steps for it in its if it.steps is not None]
            if not steps:
                continue
            stream_steps[sid] = _prediction_mod._concat(steps)
            dep = its[0].stream.deployment
            for gdep, members in groups:
                if gdep == dep:
                    members.append(sid)
                    break
            else:
                groups.append((dep, [sid]))
        predicted: dict[str, object] = {}
        for dep, members in groups:
            try:
                outs = _prediction_mod.predict_steps(self.predictor, dep, [stream_steps[m] for m in members])
            except Exception as exc:
                outs = [exc] * len(members)
                if len(members) > 1:  # someone's steps broke the shared call: each engine alone
                    outs = [self._predict_one(dep, stream_steps[m]) for m in members]
            predicted.update(zip(members, outs))
        units: dict[str, list[tuple]] = {}
        for sid, its in by_stream.items():
            pred = predicted.get(sid)
            if isinstance(pred, BaseException) and sum(it.steps is not None for it in its) > 1:
                dep = its[0].stream.deployment  # this engine's call failed: each message alone
                units[sid] = [([it], it.steps, self._predict_one(dep, it.steps) if it.steps is not None else None)
                              for it in its]
            else:
                units[sid] = [(its, stream_steps.get(sid), pred)]
        return units

    def _predict_one(self, dep, steps: AcceptedSteps):
        try:
            return _prediction_mod.predict_steps(self.predictor, dep, [steps])[0]
        except Exception as exc:
            return exc

    def _account_unit(self, stream: StreamState, items: list[Ingested], steps: AcceptedSteps | None, pred,
                      records: list[dict], extra: list[dict]) -> None:
        """Steps, then static batches, then finishes of ``items`` (one engine), each part isolated."""
        if steps is not None:
            stage = "predict"
            try:
                if isinstance(pred, BaseException):
                    raise pred
                stage = "attribute"
                extra.extend(self._process_steps(stream, steps, pred))
            except Exception as exc:
                self._fail_steps(stream, steps, exc, stage)
        for it in items:
            for b in it.batches:
                records.extend(self._static_isolated(stream, b))
        for it in items:
            for d in it.done:
                if self.calibrating and self.ledger.in_open_window(d.request_id):
                    # its energy in the open window is calibrated when the window closes
                    self._deferred.setdefault(stream.stream_id, {})[d.request_id] = d
                    continue
                rec = self._finish_isolated(stream, d)
                if rec is not None:
                    records.append(rec)

    def _mark_errored(self, sid: str, rids, why: str) -> None:
        err = self._errored
        for r in rids:
            err[(sid, r)] = why
        while len(err) > MAX_ERRORED_REQUESTS:
            err.popitem(last=False)

    def _fail_steps(self, stream: StreamState, steps: AcceptedSteps, exc: BaseException, stage: str) -> None:
        why = f"{stage}: {describe(exc)}"
        self.dead_letter.put(stage, stream.stream_id, exc, steps.request_id, steps.n_steps, steps_to_json(steps))
        self._mark_errored(stream.stream_id, steps.request_id, why)

    def _static_isolated(self, stream: StreamState, b: StaticBatchEvent) -> list[dict]:
        try:
            return self._process_static(stream, b)
        except Exception as exc:
            why = f"static_batch: {describe(exc)}"
            self.dead_letter.put("static_batch", stream.stream_id, exc, b.request_id, len(b.request_id),
                                 {"static_batch": {"batch_id": b.batch_id, "start_s": b.start_s, "end_s": b.end_s,
                                                   "request_id": list(b.request_id),
                                                   "prompt_tokens": list(b.prompt_tokens),
                                                   "output_tokens": list(b.output_tokens)}})
            acc = self._accounting.get(stream.stream_id)
            return [error_record(stream, acc, r, b.end_s + stream.clock_offset_s, why, p, o,
                                 predictor=self.predictor.name)
                    for r, p, o in zip(b.request_id, b.prompt_tokens, b.output_tokens)]

    def _finish_isolated(self, stream: StreamState, d: DoneEvent) -> dict | None:
        try:
            return self._finish(stream, d)
        except Exception as exc:
            why = f"finish: {describe(exc)}"
            self.dead_letter.put("finish", stream.stream_id, exc, [d.request_id], 0,
                                 {"done": {"request_id": d.request_id, "aborted": d.aborted,
                                           "output_tokens": d.output_tokens, "prompt_tokens": d.prompt_tokens,
                                           "time_s": d.time_s}})
            self._errored.pop((stream.stream_id, d.request_id), None)
            return error_record(stream, self._accounting.get(stream.stream_id), d.request_id,
                                (d.time_s + stream.clock_offset_s) if d.time_s else time.time(), why,
                                d.prompt_tokens, d.output_tokens, d.aborted, self.predictor.name, d.client_request_id)

    def _dumps(self, rec: dict) -> str:
        """A record's line; a record that cannot be written (a non-finite figure) becomes an error record."""
        try:
            return dumps(rec)
        except (ValueError, TypeError) as exc:
            self.dead_letter.put("record", rec.get("engine", ""), exc, [rec.get("request_id", "")], 0,
                                 {"record": {k: v for k, v in rec.items() if k not in ("energy_j", "carbon_g")}})
            for key in ("energy_j", "carbon_g"):
                rec[key] = {k: 0.0 for k in rec[key]}
            rec.update(gpu_s=0.0, source="error", error=f"record: {describe(exc)}")
            return dumps(rec)


