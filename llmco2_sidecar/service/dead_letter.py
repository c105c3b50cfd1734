"""The dead-letter file: what the sidecar accepted and then could not account, with the error.

One JSON line per failed unit (a message's steps, a static batch, a finish, a journal frame) in
``<carbon log>.dead-letter`` beside the carbon log::

    {"ts": ..., "engine": "b", "reason": "predict", "error": "RuntimeError: ...",
     "request_ids": [...], "steps": 6, "events": {...}}

``reason`` is the stage that failed (``predict``, ``attribute``, ``static_batch``, ``finish``,
``record``, ``replay``); the same reason labels ``llmco2_dead_letter_total{reason}``. The
affected requests still get a record in the carbon log (``source: "error"``, ``error``); the log
gets one line per distinct error (the first with its traceback), then a count at most once a minute.
Writing here is best effort: a full disk costs the dead-letter line (counted, logged), never the
pipeline. Beyond ``max_bytes`` (64 MiB) the file moves to ``.1`` (one older file kept): an engine that
poisons every message cannot fill the disk through it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("llmco2.dead_letter")
MAX_DISTINCT_ERRORS = 1000
SUMMARY_INTERVAL_S = 60.0


def dead_letter_path(log_path: str | os.PathLike) -> Path:
    p = Path(log_path)
    return p.with_name(p.name + ".dead-letter")


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def steps_to_json(st) -> dict:
    """An :class:`~.ingest.AcceptedSteps` as plain lists (what the engine sent, as accepted)."""
    def lst(a):
        return np.asarray(a).tolist()

    return {"step_id": lst(st.step_id), "start_s": lst(st.start_s), "end_s": lst(st.end_s),
            "slice_count": lst(st.slice_count), "request_id": list(st.request_id), "phase": lst(st.phase),
            "new_tokens": lst(st.new_tokens), "context_tokens": lst(st.context_tokens),
            "prompt_tokens": lst(st.prompt_tokens)}


class DeadLetter:
    def __init__(self, path: str | os.PathLike, metrics=None, max_bytes: int = 64 << 20):
        self.path = Path(path)
        self.metrics = metrics
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._seen: dict[tuple, int] = {}
        self._suppressed = 0
        self._last_summary = time.monotonic()
        self.entries = 0
        self.write_errors = 0

    def put(self, reason: str, engine: str, exc: BaseException | str, request_ids=(), steps: int = 0,
            events: dict | None = None) -> None:
        error = exc if isinstance(exc, str) else describe(exc)
        entry = {"ts": time.time(), "engine": engine, "reason": reason, "error": error,
                 "request_ids": sorted(set(request_ids)), "steps": int(steps), "events": events or {}}
        with self._lock:
            self.entries += 1
            if self.metrics is not None:
                self.metrics.dead_letter.labels(reason).inc()
            self._log(reason, engine, error, exc)
            try:
                line = json.dumps(entry, separators=(", ", ": "), default=_jsonable) + "\n"
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.max_bytes and self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            except (OSError, ValueError) as werr:
                self.write_errors += 1
                log.warning("dead-letter file %s: cannot write (%s); the entry is lost, the count kept",
                            self.path, werr)

    def frame(self, reason: str, engine: str, error: str, payload: bytes) -> None:
        """A journal frame that cannot be replayed (its raw bytes, base64)."""
        self.put(reason, engine, error, events={"journal_frame_b64": base64.b64encode(payload).decode()})

    def _log(self, reason: str, engine: str, error: str, exc) -> None:
        key = (reason, error)
        n = self._seen.get(key)
        now = time.monotonic()
        if n is None:
            if len(self._seen) >= MAX_DISTINCT_ERRORS:
                self._seen.clear()
            self._seen[key] = 1
            log.error("dead letter (%s) from engine %s: %s; the affected requests get a record with source=error, "
                      "the events are in %s", reason, engine, error, self.path,
                      exc_info=exc if isinstance(exc, BaseException) else None)
            return
        self._seen[key] = n + 1
        self._suppressed += 1
        if now - self._last_summary >= SUMMARY_INTERVAL_S:
            log.error("dead letters: %d more of errors already logged in the last %.0f s (see %s)",
                      self._suppressed, now - self._last_summary, self.path)
            self._suppressed = 0
            self._last_summary = now


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)
