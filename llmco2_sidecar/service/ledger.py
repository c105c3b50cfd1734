"""The request ledger: per-request accumulators while requests run, finished records after.

Running requests live in slots of flat numpy columns, so a micro-batch of steps updates them with a
few ``np.add.at`` calls instead of a Python loop per request. Finished requests keep their record
in an LRU bounded by count and age, for lookups, as the compact JSON line written to the carbon
log (about 0.5 kB each, a third of a dict's footprint), parsed again when looked up.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

_FLOAT_COLS = ("prefill_j", "decode_j", "serving_j", "gpu_s", "last_wall_s")
_INT_COLS = ("steps", "decode_slices", "prompt_tokens", "prefill_tokens", "uncalibrated")
# calibrated mode: each running request's predicted energy in its engine's open window
_WINDOW_COLS = ("win_prefill_j", "win_decode_j", "win_serving_j")
_N_FLOAT = len(_FLOAT_COLS)


@dataclass
class RunningTotals:
    """What a running request has accumulated so far (energies in J)."""

    request_id: str
    stream_id: str
    prefill_j: float
    decode_j: float
    serving_j: float
    gpu_s: float
    last_wall_s: float
    steps: int
    decode_slices: int
    prompt_tokens: int
    prefill_tokens: int
    uncalibrated: int = 0  # windows of its life whose energy could not be calibrated


class SortedIds:
    """The ids of ``live`` (the owner's dict or set: ``in`` and iteration) kept sorted for prefix
    lookups, lazily: adding and removing are O(1) (the pipeline thread, per finished request); the
    sorting happens at the next prefix lookup (rare), where Python's sort merges the sorted part with
    the few ids added since in about linear time. Removed ids stay as tombstones; once they are half
    of what is kept, the index is dropped (O(1) besides freeing it) and rebuilt from ``live`` at the
    next lookup, so a sidecar that is never asked by prefix keeps no second copy of its ids."""

    MIN_DROP = 64  # tombstones before the index may be dropped

    def __init__(self, live) -> None:
        self._live = live
        self._ids: list[str] = []  # sorted, with tombstones
        self._new: list[str] = []  # added since the last sort
        self._gone = 0  # tombstones (an upper bound)
        self._built = True  # False: dropped, rebuilt from ``live`` at the next lookup

    def add(self, key: str) -> None:
        if self._built:
            self._new.append(key)

    def discard(self, key: str) -> None:
        if not self._built:
            return
        self._gone += 1
        if self._gone > self.MIN_DROP and self._gone * 2 >= len(self._ids) + len(self._new):
            self._ids, self._new, self._gone, self._built = [], [], 0, False

    def prefixed(self, prefix: str) -> list[str]:
        """The live ids that start with ``prefix``, sorted, each once."""
        ids = self.sorted()
        live = self._live
        out: list[str] = []
        i = bisect.bisect_left(ids, prefix)
        while i < len(ids) and ids[i].startswith(prefix):
            key = ids[i]
            if key in live and (not out or out[-1] != key):
                out.append(key)
            i += 1
        return out

    def sorted(self) -> list[str]:
        """The sorted list (tombstones compacted away once they are half of it)."""
        if not self._built:
            self._ids, self._built = sorted(self._live), True
        elif self._new:
            self._ids.extend(self._new)
            self._new = []
            self._ids.sort()
        if self._gone and self._gone * 2 >= len(self._ids):
            ids, live = self._ids, self._live
            self._ids = [k for j, k in enumerate(ids) if k in live and (j == 0 or ids[j - 1] != k)]
            self._gone = 0
        return self._ids

    def __len__(self) -> int:
        """Ids kept, tombstones included (what the index holds besides ``live``)."""
        return len(self._ids) + len(self._new)


class RequestLedger:
    def __init__(self, max_finished: int = 100_000, ttl_s: float = 3600.0, capacity: int = 1024):
        self.lock = threading.RLock()
        self.max_finished = int(max_finished)
        self.ttl_s = float(ttl_s)
        self._cap = 0
        self._index: dict[str, int] = {}
        self._rid: list = []
        self._stream: list = []
        self._free: list[int] = []
        self.cols: dict[str, np.ndarray] = {}
        self.touched = np.zeros(0)  # time.monotonic() of each slot's last step
        self._grow(capacity)
        self.finished: "OrderedDict[str, tuple[float, str]]" = OrderedDict()
        self._sorted = SortedIds(self.finished)  # finished ids: prefix lookups by bisection
        # the id the client knows a finished request by (X-Request-Id): one client id may name
        # several engine requests (a completion with n prompts)
        self._client_of: dict[str, str] = {}
        self._by_client: dict[str, list[str]] = {}
        self._sorted_clients = SortedIds(self._by_client)
        # finished records the pipeline has not written to the carbon log yet: lookups see them as
        # running until then (a response that carries carbon finds its record in the log)
        self._unlogged: set[str] = set()

    def _grow(self, capacity: int) -> None:
        old = self._cap
        # the columns are rows of two arrays (floats: _FLOAT_COLS then _WINDOW_COLS; ints), so a
        # request's totals are two column reads (totals()) and a new slot two writes (slots())
        floats = np.zeros((len(_FLOAT_COLS) + len(_WINDOW_COLS), capacity))
        ints = np.zeros((len(_INT_COLS), capacity), dtype=np.int64)
        if old:
            floats[:, :old] = self._floats
            ints[:, :old] = self._ints
        self._floats, self._ints = floats, ints
        for i, name in enumerate(_FLOAT_COLS + _WINDOW_COLS):
            self.cols[name] = floats[i]
        for i, name in enumerate(_INT_COLS):
            self.cols[name] = ints[i]
        touched = np.zeros(capacity)
        touched[:old] = self.touched
        self.touched = touched
        self._rid.extend([None] * (capacity - old))
        self._stream.extend([None] * (capacity - old))
        self._free.extend(range(capacity - 1, old - 1, -1))
        self._cap = capacity

    @property
    def running(self) -> int:
        return len(self._index)

    def slots(self, request_ids: list, stream_id: str, distinct=None) -> np.ndarray:
        """Slot of each request id, allocating slots for new ones. int64 [R]. ``distinct``: the
        distinct ids of ``request_ids`` (a set or a dict's keys view) when the caller has them.

        A micro-batch names few distinct requests many times (one slice per step), so the new ids
        are found with set operations and the only per-slice Python work is one dict lookup.
        """
        index = self._index
        for r in (set(request_ids) if distinct is None else distinct) - index.keys():
            if not self._free:
                self._grow(self._cap * 2)
            s = self._free.pop()
            index[r] = s
            self._rid[s] = r
            self._stream[s] = stream_id
            self._floats[:, s] = 0.0
            self._ints[:, s] = 0
            self.touched[s] = time.monotonic()
        get = index.__getitem__
        return np.fromiter(map(get, request_ids), dtype=np.int64, count=len(request_ids))

    def add(self, slots: np.ndarray, **values: np.ndarray) -> None:
        for name, v in values.items():
            np.add.at(self.cols[name], slots, v)

    def maximum(self, slots: np.ndarray, **values: np.ndarray) -> None:
        for name, v in values.items():
            np.maximum.at(self.cols[name], slots, v)

    def touch(self, slots: np.ndarray, now: float) -> None:
        self.touched[slots] = now

    def stale_ids(self, before: float) -> list[tuple[str, str]]:
        """(request id, stream id) of running requests no step touched since ``before``."""
        if not self._index:
            return []
        return [(r, self._stream[s]) for r, s in self._index.items() if self.touched[s] < before]

    def window_slots(self, stream_id: str) -> np.ndarray:
        """Slots of ``stream_id``'s requests with energy in its open window (calibrated mode)."""
        slots = np.fromiter((s for s in self._index.values() if self._stream[s] == stream_id), dtype=np.int64)
        if not slots.size:
            return slots
        c = self.cols
        has = (c["win_prefill_j"][slots] != 0) | (c["win_decode_j"][slots] != 0) | (c["win_serving_j"][slots] != 0)
        return slots[has]

    def in_open_window(self, request_id: str) -> bool:
        s = self._index.get(request_id)
        if s is None:
            return False
        c = self.cols
        return bool(c["win_prefill_j"][s] or c["win_decode_j"][s] or c["win_serving_j"][s])

    def totals(self, request_id: str) -> RunningTotals | None:
        s = self._index.get(request_id)
        if s is None:
            return None
        return RunningTotals(request_id, self._stream[s], *self._floats[:_N_FLOAT, s].tolist(),
                             *self._ints[:, s].tolist())

    def close(self, request_id: str) -> RunningTotals | None:
        """Remove a running request and return its totals."""
        t = self.totals(request_id)
        if t is not None:
            s = self._index.pop(request_id)
            self._rid[s] = None
            self._stream[s] = None
            self._free.append(s)
        return t

    def running_ids(self, stream_id: str | None = None) -> list[str]:
        return [r for r, s in self._index.items() if stream_id is None or self._stream[s] == stream_id]

    # ---- finished records ------------------------------------------------------------------------
    def put_finished(self, record: dict, now: float | None = None, line: str | None = None,
                     logged: bool = True) -> None:
        """Keep a finished record; ``logged=False``: hidden from lookups until :meth:`mark_logged`."""
        now = time.monotonic() if now is None else now
        rid = record["request_id"]
        if not logged:
            self._unlogged.add(rid)
        if self.finished.pop(rid, None) is None:
            self._sorted.add(rid)
        else:
            self._forget_client(rid)
        client = record.get("client_request_id")
        if client and client != rid:
            self._client_of[rid] = client
            ids = self._by_client.get(client)
            if ids is None:
                ids = self._by_client[client] = []
                self._sorted_clients.add(client)
            ids.append(rid)
        self.finished[rid] = (now, line if line is not None else json.dumps(record, separators=(",", ":")))
        while len(self.finished) > self.max_finished:
            self._forget(self.finished.popitem(last=False)[0])
        while self.finished:
            t0, _ = next(iter(self.finished.values()))
            if now - t0 <= self.ttl_s:
                break
            self._forget(self.finished.popitem(last=False)[0])

    def _forget(self, rid: str) -> None:
        self._sorted.discard(rid)
        self._unlogged.discard(rid)
        self._forget_client(rid)

    def _forget_client(self, rid: str) -> None:
        client = self._client_of.pop(rid, None)
        if client is None:
            return
        ids = self._by_client.get(client, [])
        if rid in ids:
            ids.remove(rid)
        if not ids:
            self._by_client.pop(client, None)
            self._sorted_clients.discard(client)

    def mark_logged(self, request_ids) -> None:
        """These finished records are in the carbon log (or its backlog): lookups may see them."""
        if self._unlogged:
            self._unlogged.difference_update(request_ids)

    def get_by_client(self, client_id: str) -> list[dict]:
        """Finished records of every engine request the client knows as ``client_id``."""
        return [json.loads(self.finished[r][1]) for r in self._by_client.get(client_id, ())
                if r in self.finished and r not in self._unlogged]

    def get_finished(self, request_id: str) -> dict | None:
        if request_id in self._unlogged:
            return None
        item = self.finished.get(request_id)
        return json.loads(item[1]) if item else None

    def find(self, prefix: str) -> tuple[list[dict], list[str]]:
        """Finished records whose engine id or client id starts with ``prefix``, and running ids
        (engine ids: a running request's client id is known only when it finishes) that do."""
        done = []
        seen: set[str] = set()
        unlogged = self._unlogged
        for rid in self._sorted.prefixed(prefix):
            seen.add(rid)
            if rid not in unlogged:
                done.append(json.loads(self.finished[rid][1]))
        for client in self._sorted_clients.prefixed(prefix):
            for rid in self._by_client[client]:
                if rid not in seen and rid in self.finished:
                    seen.add(rid)
                    if rid not in unlogged:
                        done.append(json.loads(self.finished[rid][1]))
        running = [r for r in self._index if r.startswith(prefix)]
        # records not yet in the log count as running (the caller waits for them)
        running += [r for r in seen if r in unlogged]
        return done, running

    # ---- checkpoint ----------------------------------------------------------------------------
    def snapshot_running(self) -> list[dict]:
        out = []
        for rid in list(self._index):
            t = self.totals(rid)
            out.append(t.__dict__.copy())
        return out

    def restore_running(self, rows: list[dict]) -> None:
        for row in rows:
            s = int(self.slots([row["request_id"]], row["stream_id"])[0])
            for name in _FLOAT_COLS + _INT_COLS:
                self.cols[name][s] = row[name]
