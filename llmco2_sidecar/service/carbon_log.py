"""The carbon log: JSON lines, append-only, one record per finished request (``"type": "request"``),
optionally one per engine step (``"step"``) and per accounting window (``"window"``).

Crash safety: the file is opened with ``O_APPEND`` and every batch of whole lines goes out in ONE
``os.write`` (no user-space buffer, so each line is flushed when written); a crash can at worst cut
the last line short, and :meth:`CarbonLog.open` repairs that on start by truncating the file back
to its last newline (the journal replay then writes the lost record again). Rotation by size:
``log`` -> ``log.1`` -> ... -> ``log.N`` (oldest dropped), only between whole writes.

Disk trouble: a write that fails (a full or unwritable disk) is cut back to the last whole line and
its lines wait in memory (``backlog``); every later write, and :meth:`CarbonLog.retry`, tries them
first, in order. ``failed`` holds the error until the backlog is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Iterable

try:
    import orjson
except ImportError:  # a dependency (pyproject); without it the standard library writes the same JSON
    orjson = None

log = logging.getLogger("llmco2.carbon_log")

# a request record's id, in the compact lines written since 2026-12-08 and the ", "/": " lines before
_RID_RE = re.compile(rb'"type": ?"request", ?"ts": ?[^,]*, ?"request_id": ?("(?:[^"\\]|\\.)*")')


def repair_torn_tail(path: Path) -> int:
    """Truncate a partial last line. Returns the bytes removed."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        # scan back for the last newline
        pos = size
        chunk = 1 << 16
        keep = 0
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start)
            i = data.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        return size - keep


class CarbonLog:
    """Append-only JSON-lines writer with size rotation (thread-safe)."""

    def __init__(self, path: str | os.PathLike, max_bytes: int = 64 << 20, backups: int = 5):
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.backups = int(backups)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self.repaired_bytes = 0
        self.records_written = 0
        self.backlog: list[str] = []  # lines not yet written (the disk failed), oldest first
        self.failed: OSError | None = None
        self.errors = 0
        # fsync a file as it is rotated away (the sidecar sets it unless its policy is --fsync never: a
        # checkpoint then never deletes journal frames whose records are only in a rotated file's page
        # cache); with a worker (:class:`.disk_worker.DiskWorker`) that fsync runs there
        self.sync_on_rotate = False
        self.worker = None

    def _fsync_rotated(self, fd: int) -> None:
        from .disk_worker import fsync_and_close

        try:
            fsync_and_close(fd)
        except OSError as exc:  # its records were written; only their durability is in doubt
            self.errors += 1
            log.warning("carbon log: fsync of the rotated file failed (%s)", exc)

    def open(self) -> "CarbonLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = repair_torn_tail(self.path)
        self._open_fd()
        return self

    def open_or_fail(self) -> bool:
        """:meth:`open`, except that a file or directory that cannot be written leaves the log
        ``failed`` and unopened instead of raising (records then wait in ``backlog``; :meth:`retry`
        opens it once it can). True when open."""
        with self._lock:
            try:
                self.open()
            except OSError as exc:
                self.failed = exc
                self.errors += 1
                return False
            if not self.backlog:
                self.failed = None
            return True

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def _open_fd(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size

    def rotated_paths(self) -> list[Path]:
        return [self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.backups + 1)]

    def _rotate(self) -> None:
        fd, self._fd = self._fd, None
        if not self.sync_on_rotate:
            os.close(fd)
        elif self.worker is not None:  # the rotated file's records reach the disk before the next
            self.worker.submit(self._fsync_rotated, fd)  # checkpoint (the worker runs both, in order)
        else:
            self._fsync_rotated(fd)
        try:
            paths = self.rotated_paths()
            for i in range(len(paths) - 1, 0, -1):
                if paths[i - 1].exists():
                    os.replace(paths[i - 1], paths[i])
            os.replace(self.path, paths[0])
        finally:
            self._open_fd()

    def write_records(self, records: Iterable[dict]) -> int:
        """Write records as whole lines, one ``os.write`` per call (rotating first if needed)."""
        return self.write_lines([dumps(r) for r in records])

    def write_lines(self, lines: list[str]) -> int:
        """Write already serialised records (see :func:`dumps`), one ``os.write`` per call. Returns the
        lines written now (the backlog included); on a disk error they join the backlog instead."""
        if not lines and not self.backlog:
            return 0
        with self._lock:
            if self.backlog:
                self.backlog.extend(lines)
                lines, self.backlog = self.backlog, []
            try:
                self._write_locked(lines)
            except OSError as exc:
                self.failed = exc
                self.errors += 1
                self.backlog = lines
                return 0
            self.failed = None
        return len(lines)

    def retry(self) -> bool:
        """Write the backlog if there is one. True when nothing waits."""
        if self._fd is None and not self.backlog:  # never opened (unwritable at start): open it now
            self.open_or_fail()
        if self.backlog:
            self.write_lines([])
        return not self.backlog

    def _write_locked(self, lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode()
        if self._fd is None:
            self.open()
        if self.max_bytes and self._size > 0 and self._size + len(data) > self.max_bytes:
            self._rotate()
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError:
            try:  # cut a partly written batch back to the last whole line
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            raise
        self._size += len(data)
        self.records_written += len(lines)

    def fsync(self) -> None:
        """fsync the file (and a rotated file handed to the worker before: it runs first there). The
        lock is held only to duplicate the descriptor: records are written meanwhile."""
        with self._lock:
            if self._fd is None:
                return
            fd = os.dup(self._fd)
        from .disk_worker import fsync_and_close

        fsync_and_close(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                except OSError as exc:
                    self.failed = exc
                os.close(self._fd)
                self._fd = None

    def logged_request_ids(self) -> set[str]:
        """Request ids with a record in the current log and its rotations (journal replay dedup)."""
        ids: set[str] = set()
        for path in [self.path, *self.rotated_paths()]:
            if not path.exists():
                continue
            with open(path, "rb") as fh:
                for line in fh:
                    m = _RID_RE.match(line, 1)
                    if m:
                        ids.add(json.loads(m.group(1)))
        return ids


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=float)


def _finite(obj) -> bool:
    """No NaN or infinity among the floats of ``obj`` (a dict, list or tuple, nested)."""
    for v in (obj.values() if type(obj) is dict else obj):
        t = type(v)
        if t is float:
            if v - v:  # NaN or +-inf give NaN (true); a finite float gives 0.0
                return False
        elif t is dict or t is list or t is tuple:
            if not _finite(v):
                return False
    return True


def _as_float(obj) -> float:
    """Anything else that is a number (NumPy scalars) as a float, as ``json.dumps(default=float)``."""
    x = float(obj)
    if x - x:
        raise ValueError(f"Out of range float values are not JSON compliant: {x!r}")
    return x


def dumps(record: dict) -> str:
    """One record as its log line (without the newline): compact JSON (no spaces), other numbers
    (NumPy scalars) as floats, and :class:`ValueError` for a NaN or infinite figure, as
    ``json.dumps(record, separators=(",", ":"), allow_nan=False, default=float)``; parsed back, the
    same values. Written by orjson (3 us a request record where the standard library took 10:
    ``float.__repr__`` was most of that, benchmarks/results/record_encode.md); what orjson does not
    write (an integer beyond 64 bits, a key that is not a string) goes to the standard library."""
    if orjson is None or type(record) is not dict:
        return _ENCODER.encode(record)
    try:
        out = orjson.dumps(record, default=_as_float)
    except orjson.JSONEncodeError:
        return _ENCODER.encode(record)
    # orjson writes a NaN or infinite float as null: only a line with a null can hold one
    if b"null" in out and not _finite(record):
        return _ENCODER.encode(record)  # raises the standard library's ValueError
    return out.decode()


def read_records(path: str | os.PathLike, types: tuple[str, ...] | None = ("request",)) -> list[dict]:
    """All complete records of a carbon log file (a torn last line is skipped)."""
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if types is None or rec.get("type") in types:
                out.append(rec)
    return out
