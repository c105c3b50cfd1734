"""The write-ahead journal: every accepted engine message is appended here BEFORE it is acknowledged.

On restart the sidecar replays the journal through ingest and the pipeline, so a request whose
events were acknowledged gets its record even if the sidecar died before writing it (records
already in the carbon log are not written twice). Frames::

    b"J" | kind (1 byte: b"I" identity, b"E" events) | u32 length | u32 crc32(payload) | payload
    payload = u16 len(stream key) | stream key (utf-8) | serialized protobuf

A torn or corrupt frame ends the journal: the file is truncated there on open. Segments
(``journal-000001.wal`` ...) roll over beyond ``max_bytes``; a checkpoint (``checkpoint.json``,
written atomically) records the state at the start of a segment so that older segments can be
deleted. fsync policy: ``always`` (before each ack: survives power loss), ``interval`` (at most
every ``interval_s``; survives a process crash, since the write reaches the kernel before the ack)
or ``never``.

Disk trouble (a full or unwritable disk): a failed append is cut off again (``ftruncate`` back to
the last whole frame) and raises :class:`OSError`; the journal is then ``failed`` and the server
stops acknowledging (nothing it cannot journal is acknowledged) until :meth:`Journal.recover`
succeeds in writing and syncing a probe frame (``b"P"``, skipped by replay) -- in the same segment,
or in a new one when the old one could not be cut back.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Iterator

_HEAD = struct.Struct("<cBII")  # magic, kind, length, crc
MAGIC = b"J"
KIND_IDENTITY = ord("I")
KIND_EVENTS = ord("E")
KIND_PROBE = ord("P")
CHECKPOINT = "checkpoint.json"
STREAMS_JSON = "streams_json"  # write_checkpoint: the streams as JSON texts (written as "streams")


def _segment_name(n: int) -> str:
    return f"journal-{n:06d}.wal"


class Journal:
    def __init__(self, directory: str | os.PathLike, fsync: str = "interval", interval_s: float = 1.0,
                 max_bytes: int = 32 << 20):
        self.dir = Path(directory)
        self.fsync_policy = fsync
        self.interval_s = float(interval_s)
        self.max_bytes = int(max_bytes)
        self._fd: int | None = None
        self._size = 0
        self._last_sync = time.monotonic()
        self._dirty = False
        self.segment = 0
        self.truncated_bytes = 0
        self.failed: OSError | None = None  # the last write/sync error, until recover() succeeds
        self._broken = False  # the segment's tail could not be cut back: continue in a new segment
        self._opened = False  # open() has succeeded once (until then recover() retries open())
        self.errors = 0
        self._key_prefix: dict[str, tuple[bytes, int]] = {}
        # with a worker (:class:`.disk_worker.DiskWorker`) the ``interval`` fsyncs and a rolled
        # segment's last fsync run there, on a duplicate descriptor: appends never wait for the disk
        self.worker = None
        self._sync_pending = False

    # ---- files ---------------------------------------------------------------------------------
    def segments(self) -> list[int]:
        if not self.dir.exists():
            return []
        out = []
        for p in self.dir.glob("journal-*.wal"):
            try:
                out.append(int(p.stem.split("-")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(out)

    def path(self, n: int) -> Path:
        return self.dir / _segment_name(n)

    def read_checkpoint(self) -> dict | None:
        p = self.dir / CHECKPOINT
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_checkpoint(self, state: dict) -> None:
        """Atomically write a checkpoint and delete the segments before ``state['segment']``. The
        streams may come as JSON texts already (``state[STREAMS_JSON]``: the file then holds them as
        ``streams``, as if ``state['streams']`` had been the parsed list)."""
        tmp = self.dir / (CHECKPOINT + ".tmp")
        if STREAMS_JSON in state:
            rest = {k: v for k, v in state.items() if k != STREAMS_JSON}
            head = json.dumps(rest)
            text = head[:-1] + (", " if rest else "") + '"streams": [' + ", ".join(state[STREAMS_JSON]) + "]}"
        else:
            text = json.dumps(state)
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / CHECKPOINT)
        for n in self.segments():
            if n < state["segment"]:
                try:
                    self.path(n).unlink()
                except FileNotFoundError:
                    pass

    def replay(self, from_segment: int = 0) -> Iterator[tuple[int, str, bytes]]:
        """Yield (kind, stream key, payload) of every intact frame, from ``from_segment`` on."""
        for n in self.segments():
            if n < from_segment:
                continue
            yield from self._read_segment(self.path(n), repair=True)

    def _read_segment(self, path: Path, repair: bool) -> Iterator[tuple[int, str, bytes]]:
        data = path.read_bytes()
        pos = 0
        end = len(data)
        while pos + _HEAD.size <= end:
            magic, kind, length, crc = _HEAD.unpack_from(data, pos)
            body_start = pos + _HEAD.size
            if magic != MAGIC or body_start + length > end:
                break
            payload = data[body_start:body_start + length]
            if zlib.crc32(payload) != crc:
                break
            pos = body_start + length
            if kind == KIND_PROBE:
                continue
            (klen,) = struct.unpack_from("<H", payload, 0)
            key = payload[2:2 + klen].decode()
            yield kind, key, payload[2 + klen:]
        if pos < end and repair:
            self.truncated_bytes += end - pos
            with open(path, "rb+") as fh:
                fh.truncate(pos)

    def open(self, segment: int | None = None) -> "Journal":
        """Open for appending: a new segment after the existing ones (or ``segment``)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        segs = self.segments()
        ckpt = self.read_checkpoint()
        floor = int(ckpt["segment"]) if ckpt else 1  # never below the checkpoint's segment
        self.segment = segment if segment is not None else max(segs[-1] + 1 if segs else 1, floor)
        self._fd = os.open(self.path(self.segment), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._opened = True
        self._broken = False
        return self

    def open_or_fail(self) -> bool:
        """:meth:`open`, except that a directory that cannot be written (read-only, full, missing
        and not creatable) leaves the journal ``failed`` instead of raising: :meth:`recover` opens
        it once it can. True when open."""
        try:
            self.open()
        except OSError as exc:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._fail(exc)
            return False
        return True

    def roll(self) -> int:
        """Start a new segment; returns its number. Raises :class:`OSError` (the journal is then failed)."""
        if self._fd is not None and self.worker is not None:  # its last fsync and close: on the worker
            fd, self._fd = self._fd, None
            if self._dirty and self.fsync_policy != "never":
                self._dirty = False
                self.worker.submit(self._fsync_handed_over, fd)
            else:
                os.close(fd)
        try:
            self.sync()
        except OSError:
            pass  # recorded in self.failed; the new segment starts clean
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.segment += 1
        try:
            self._fd = os.open(self.path(self.segment), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            self._fail(exc)
            self._broken = True
            raise
        self._size = 0
        self._broken = False
        return self.segment

    @property
    def needs_roll(self) -> bool:
        return self.max_bytes > 0 and self._size >= self.max_bytes

    # ---- appending -----------------------------------------------------------------------------
    def append(self, kind: int, key: str, payload: bytes) -> None:
        """Append one frame. Raises :class:`OSError` when it cannot be written (or, with ``always``,
        synced): the frame is then cut off again and the journal is ``failed``."""
        if self.failed is not None and not self.recover():
            raise self.failed
        prefix = self._key_prefix.get(key)
        if prefix is None:  # u16 length + the key, and its crc (one per stream: computed once)
            if len(self._key_prefix) > 4096:
                self._key_prefix.clear()
            head = struct.pack("<H", len(key.encode())) + key.encode()
            prefix = self._key_prefix[key] = (head, zlib.crc32(head))
        head, head_crc = prefix
        try:
            # the frame as two parts in one system call (no copy of the payload into one buffer)
            self._write(_HEAD.pack(MAGIC, kind, len(head) + len(payload), zlib.crc32(payload, head_crc)) + head, payload)
            if self.fsync_policy == "always":
                self.sync(raise_errors=True)
        except OSError as exc:
            self._fail(exc)
            self._cut_back()
            raise
        if self.fsync_policy == "interval" and time.monotonic() - self._last_sync >= self.interval_s:
            self.sync_soon()

    def _write(self, frame: bytes, rest: bytes = b"") -> None:
        """Append ``frame + rest`` (``rest``: a payload written without joining it to ``frame`` first)."""
        if self._fd is None:
            raise OSError(errno.EBADF, "journal is not open")
        total = len(frame) + len(rest)
        n = os.writev(self._fd, (frame, rest)) if rest else os.write(self._fd, frame)
        if n < total:  # a short write: the remainder, byte-exact
            view = memoryview(frame + rest)[n:]
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        self._size += total
        self._dirty = True

    def _fail(self, exc: OSError) -> None:
        self.failed = exc
        self.errors += 1

    def _cut_back(self) -> None:
        """Remove a partly written frame (the file's size back to the last whole frame)."""
        if self._fd is None:
            return
        try:
            if os.fstat(self._fd).st_size != self._size:
                os.ftruncate(self._fd, self._size)
        except OSError:
            self._broken = True

    def sync(self, raise_errors: bool = False) -> None:
        """fsync if anything was written since the last sync. An error marks the journal failed (and
        is raised with ``raise_errors``)."""
        if self._fd is not None and self._dirty:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                self._fail(exc)
                if raise_errors:
                    raise
                return
            self._dirty = False
        self._last_sync = time.monotonic()

    def sync_soon(self) -> None:
        """The ``interval`` policy's fsync: on the worker when there is one (the caller does not wait
        for the disk; one fsync at a time), else :meth:`sync` here. An error marks the journal failed."""
        if self.worker is None:
            self.sync()
            return
        self._last_sync = time.monotonic()
        if self._fd is None or not self._dirty or self._sync_pending:
            return
        try:
            fd = os.dup(self._fd)
        except OSError as exc:
            self._fail(exc)
            return
        self._dirty = False
        self._sync_pending = True
        self.worker.submit(self._fsync_handed_over, fd, True)

    def _fsync_handed_over(self, fd: int, periodic: bool = False) -> None:
        """On the worker: fsync and close a descriptor the journal handed over."""
        from .disk_worker import fsync_and_close

        try:
            fsync_and_close(fd)
        except OSError as exc:
            self._fail(exc)  # seen by the server's disk probe, like an inline fsync's error
        finally:
            if periodic:
                self._sync_pending = False

    def recover(self) -> bool:
        """After a failure: write and sync a probe frame (in a new segment when the old one's tail could
        not be cut back). True when the journal takes frames again."""
        if self.failed is None:
            return True
        try:
            if not self._opened:  # never opened (the directory could not be written at start)
                self.open()
            elif self._broken or self._fd is None:
                self.roll()
            self._write(_HEAD.pack(MAGIC, KIND_PROBE, 0, zlib.crc32(b"")))
            os.fsync(self._fd)
            self._dirty = False
        except OSError as exc:
            self._fail(exc)
            self._cut_back()
            return False
        self.failed = None
        return True

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
