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
"""

from __future__ import annotations

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
CHECKPOINT = "checkpoint.json"


def _segment_name(n: int) -> str:
    return f"journal-{n:06d}.wal"


class Journal:
    def __init__(self, directory: str | os.PathLike, fsync: str = "interval", interval_s: float = 1.0,
                 max_bytes: int = 256 << 20):
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
        """Atomically write a checkpoint and delete the segments before ``state['segment']``."""
        tmp = self.dir / (CHECKPOINT + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(state, fh)
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
            (klen,) = struct.unpack_from("<H", payload, 0)
            key = payload[2:2 + klen].decode()
            yield kind, key, payload[2 + klen:]
            pos = body_start + length
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
        return self

    def roll(self) -> int:
        """Start a new segment; returns its number."""
        self.sync()
        os.close(self._fd)
        self.segment += 1
        self._fd = os.open(self.path(self.segment), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = 0
        return self.segment

    @property
    def needs_roll(self) -> bool:
        return self.max_bytes > 0 and self._size >= self.max_bytes

    # ---- appending -----------------------------------------------------------------------------
    def append(self, kind: int, key: str, payload: bytes) -> None:
        kb = key.encode()
        body = struct.pack("<H", len(kb)) + kb + payload
        frame = _HEAD.pack(MAGIC, kind, len(body), zlib.crc32(body)) + body
        view = memoryview(frame)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(frame)
        self._dirty = True
        if self.fsync_policy == "always":
            self.sync()
        elif self.fsync_policy == "interval" and time.monotonic() - self._last_sync >= self.interval_s:
            self.sync()

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
