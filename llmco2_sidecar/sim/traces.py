"""Request traces for ``llmco2 replay`` / ``llmco2 whatif``: detection, parsing, streaming.

Formats (``--format``, detected from the file when ``auto``):

* ``jsonl``: one JSON object a line with ``arrival_s`` (seconds from the first request) or
  ``timestamp`` (ISO 8601, or Unix seconds), ``prompt_tokens``, ``output_tokens``, optional
  ``request_id``;
* ``csv``: the same columns with a header line;
* ``azure``: the Azure LLM inference traces 2023 and 2024 (``TIMESTAMP,ContextTokens,GeneratedTokens``;
  a timestamp without a zone is taken as UTC);
* ``vllm-bench``: the JSON that vLLM's benchmark client writes with ``--save-result``, when it holds
  per-request lengths and times (``input_lens``, ``output_lens``, ``start_times``; failed requests,
  those with an error or no output, are left out).

Rows stream one at a time (a 10-million-request trace never sits in memory), except ``vllm-bench``
(one JSON document). Arrivals must not go backwards (a streamed trace cannot be sorted). Any bad
row raises :class:`~llmco2_sidecar.errors.InputError` naming the line and the field, and so does a
``request_id`` given again within ``ID_MEMORY`` requests of its first use (two records under one id; a
bounded memory, so that a streamed trace stays bounded). Requests with no prompt or no output token
cannot be scheduled: they are counted (``Trace.skipped``), not replayed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from calendar import timegm
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from ..errors import InputError
from .trace import TraceRequest

FORMATS = ("auto", "jsonl", "csv", "azure", "vllm-bench")
ID_MEMORY = 100_000  # the trace's own request ids remembered to refuse a repeat (the most recent ones)
_AZURE_COLS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_TS = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(\.\d+)?\s*(Z|[+-]\d{2}:?\d{2})?\s*$")


class TraceError(InputError):
    """A bad trace row: ``line`` (1-based, in the file) and ``field``."""

    def __init__(self, source: str, line: int | None, field: str, message: str):
        where = f"{source} line {line}" if line is not None else source
        super().__init__(f"trace {where}: {field}", message)
        self.line = line
        self.trace_field = field


def parse_timestamp(text, source: str = "trace", line: int | None = None, field: str = "timestamp",
                    _cache: dict = {}) -> float:
    """Unix seconds of an ISO 8601 timestamp (``2023-11-16 18:15:46.6805900``, ``...+00:00``, ``Z``;
    no zone = UTC) or of a number (taken as Unix seconds)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
        if not math.isfinite(value):
            raise TraceError(source, line, field, f"not a finite time: {text!r}")
        return value
    s = str(text)
    head = s[:16]
    base = _cache.get(head)
    if base is not None and len(s) >= 19 and s[16] == ":" and (len(s) == 19 or (s[19] == "." and s[20:].isdigit())):
        # fast path for the Azure layout "YYYY-MM-DD HH:MM:SS[.fffffff]" (no zone), minute already parsed
        sec = s[17:19]
        if sec.isdigit() and int(sec) < 61:
            return base + int(sec) + (float("0" + s[19:]) if len(s) > 19 else 0.0)
    m = _TS.match(s)
    if not m:
        try:
            return parse_timestamp(float(s), source, line, field)
        except ValueError:
            raise TraceError(source, line, field, f"not a timestamp: {s[:40]!r} (ISO 8601 or Unix seconds)") from None
    y, mo, d, h, mi, se, frac, zone = m.groups()
    try:
        minute = timegm((int(y), int(mo), int(d), int(h), int(mi), 0, 0, 0, 0))
        if not (1 <= int(mo) <= 12 and 1 <= int(d) <= 31 and int(h) < 24 and int(mi) < 60 and int(se) < 61):
            raise ValueError
    except (ValueError, OverflowError):
        raise TraceError(source, line, field, f"not a valid date and time: {s[:40]!r}") from None
    offset = 0
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        z = zone[1:].replace(":", "")
        offset = sign * (int(z[:2]) * 3600 + int(z[2:]) * 60)
    elif not zone and len(_cache) < 100_000:
        _cache[head] = float(minute)
    return minute - offset + int(se) + (float("0" + frac) if frac else 0.0)


def _int_field(value, source: str, line: int, field: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            value = int(value)
        n = int(value)
    except (TypeError, ValueError):
        raise TraceError(source, line, field, f"not a whole number of tokens: {value!r}") from None
    if n < 0:
        raise TraceError(source, line, field, f"negative token count {n}")
    return n


def _float_field(value, source: str, line: int, field: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        x = float(value)
    except (TypeError, ValueError):
        raise TraceError(source, line, field, f"not a number: {value!r}") from None
    if not math.isfinite(x) or x < 0:
        raise TraceError(source, line, field, f"must be a finite number >= 0, got {value!r}")
    return x


@dataclass
class Trace:
    """An open trace. Iterate it once for its requests, in arrival order.

    Attributes:
        path: the file (``-`` for standard input). format: the format used.
        epoch_s: Unix time of the first request where the trace carries timestamps (else None,
            known after the first request is read).
        skipped: rows with no prompt or no output token (not replayed), known once iterated.
        rows: rows read.
    """

    path: str
    format: str
    epoch_s: float | None = None
    skipped: int = 0
    rows: int = 0
    _fh: IO[str] | None = None
    _first_line: str = ""

    def __iter__(self) -> Iterator[TraceRequest]:
        gen = {"jsonl": self._jsonl, "csv": self._csv, "azure": self._csv, "vllm-bench": self._vllm}[self.format]
        prev = -math.inf
        seen: OrderedDict[str, int] = OrderedDict()  # the trace's own ids (not our req-N): id -> line
        try:
            for line, req in gen():
                if req.arrival_s < prev:
                    raise TraceError(self.path, line, "arrival",
                                     f"{req.arrival_s:.6f} s is before the previous request's {prev:.6f} s "
                                     "(sort the trace by arrival time)")
                prev = req.arrival_s
                if req.request_id != f"req-{self.rows}":  # an id the trace gave
                    first = seen.get(req.request_id)
                    if first is not None:
                        raise TraceError(self.path, line, "request_id", f"{req.request_id!r} was already used on "
                                         f"line {first} (each request needs its own id)")
                    seen[req.request_id] = line
                    if len(seen) > ID_MEMORY:
                        seen.popitem(last=False)
                yield req
        finally:
            self.close()

    def close(self) -> None:
        if self._fh is not None and self._fh is not sys.stdin:
            self._fh.close()
        self._fh = None

    def _lines(self) -> Iterator[str]:
        fh = self._fh
        if self._first_line:
            yield self._first_line
        yield from fh

    # ---- JSON lines --------------------------------------------------------------------------
    def _jsonl(self) -> Iterator[tuple[int, TraceRequest]]:
        t0 = None
        for n, text in enumerate(self._lines(), start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceError(self.path, n, "json", f"not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise TraceError(self.path, n, "json", "each line must be a JSON object")
            req, t0 = self._row(n, obj.get, t0, has=obj.__contains__)
            if req is not None:
                yield n, req

    def _row(self, n: int, get, t0, has) -> tuple[TraceRequest | None, float | None]:
        src = self.path
        if has("arrival_s"):
            arrival = _float_field(get("arrival_s"), src, n, "arrival_s")
            if self.epoch_s is None and t0 is None:
                t0 = 0.0
        elif has("timestamp"):
            ts = parse_timestamp(get("timestamp"), src, n, "timestamp")
            if t0 is None:
                t0 = ts
                self.epoch_s = ts
            arrival = ts - t0
        else:
            raise TraceError(src, n, "arrival_s", "missing (give arrival_s or timestamp)")
        for name in ("prompt_tokens", "output_tokens"):
            if not has(name) or get(name) in (None, ""):
                raise TraceError(src, n, name, "missing")
        prompt = _int_field(get("prompt_tokens"), src, n, "prompt_tokens")
        output = _int_field(get("output_tokens"), src, n, "output_tokens")
        self.rows += 1
        if prompt < 1 or output < 1:
            self.skipped += 1
            return None, t0
        rid = get("request_id") if has("request_id") else None
        rid = f"req-{self.rows}" if rid in (None, "") else str(rid)
        return TraceRequest(rid, arrival, prompt, output), t0

    # ---- CSV (ours and Azure's) -------------------------------------------------------------
    def _csv(self) -> Iterator[tuple[int, TraceRequest]]:
        reader = csv.reader(self._lines())
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        src = self.path
        if self.format == "azure":
            missing = [c for c in _AZURE_COLS if c not in header]
            if missing:
                raise TraceError(src, 1, missing[0], f"missing column (the Azure trace has {', '.join(_AZURE_COLS)})")
            i_ts, i_p, i_o = (header.index(c) for c in _AZURE_COLS)
            t0 = None
            for n, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) <= max(i_ts, i_p, i_o):
                    raise TraceError(src, n, _AZURE_COLS[min(len(row), 2)], "missing (short row)")
                ts = parse_timestamp(row[i_ts], src, n, "TIMESTAMP")
                if t0 is None:
                    t0 = self.epoch_s = ts
                try:
                    prompt, output = int(row[i_p]), int(row[i_o])
                except ValueError:
                    prompt = _int_field(row[i_p], src, n, "ContextTokens")
                    output = _int_field(row[i_o], src, n, "GeneratedTokens")
                if prompt < 0 or output < 0:
                    _int_field(prompt, src, n, "ContextTokens")
                    _int_field(output, src, n, "GeneratedTokens")
                self.rows += 1
                if prompt < 1 or output < 1:
                    self.skipped += 1
                    continue
                yield n, TraceRequest(f"req-{self.rows}", ts - t0, prompt, output)
            return
        cols = {h: j for j, h in enumerate(header)}
        for need in ("prompt_tokens", "output_tokens"):
            if need not in cols:
                raise TraceError(src, 1, need, "missing column")
        if "arrival_s" not in cols and "timestamp" not in cols:
            raise TraceError(src, 1, "arrival_s", "missing column (give arrival_s or timestamp)")
        i_a, i_t = cols.get("arrival_s"), cols.get("timestamp")
        i_p, i_o, i_r = cols["prompt_tokens"], cols["output_tokens"], cols.get("request_id")
        width = max(cols.values())
        t0 = None
        for n, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) <= width:
                row = row + [""] * (width + 1 - len(row))
            try:  # the fast path; any doubt goes through the checks that name the field
                arrival = float(row[i_a]) if i_a is not None else None
                prompt, output = int(row[i_p]), int(row[i_o])
                ok = arrival is not None and 0.0 <= arrival < math.inf and prompt >= 0 and output >= 0
            except ValueError:
                ok = False
            if ok:
                self.rows += 1
                if prompt < 1 or output < 1:
                    self.skipped += 1
                    continue
                rid = row[i_r] if i_r is not None and row[i_r] else f"req-{self.rows}"
                yield n, TraceRequest(rid, arrival, prompt, output)
                continue
            get = lambda k, row=row: row[cols[k]]  # noqa: E731
            has = lambda k, row=row: k in cols and row[cols[k]] != ""  # noqa: E731
            req, t0 = self._row(n, get, t0, has)
            if req is not None:
                yield n, req

    # ---- vLLM benchmark result ----------------------------------------------------------------
    def _vllm(self) -> Iterator[tuple[int, TraceRequest]]:
        src = self.path
        text = "".join(self._lines())
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TraceError(src, exc.lineno, "json", f"not valid JSON ({exc.msg})") from None
        if not isinstance(doc, dict):
            raise TraceError(src, 1, "json", "a vLLM benchmark result is one JSON object")
        for key in ("input_lens", "output_lens", "start_times"):
            if not isinstance(doc.get(key), list):
                why = ("missing: this result holds no per-request times (vLLM's benchmark client writes "
                       "start_times with --save-result in recent versions)") if key == "start_times" else "missing"
                raise TraceError(src, None, key, why)
        ins, outs, starts = doc["input_lens"], doc["output_lens"], doc["start_times"]
        if not (len(ins) == len(outs) == len(starts)):
            raise TraceError(src, None, "start_times",
                             f"{len(starts)} entries for {len(ins)} input_lens and {len(outs)} output_lens")
        errors = doc.get("errors") if isinstance(doc.get("errors"), list) and len(doc["errors"]) == len(ins) else None
        rows = []
        for i, (p, o, s) in enumerate(zip(ins, outs, starts)):
            where = f"entry {i}"
            prompt = _int_field(p, src, None, f"input_lens[{i}]") if p is not None else 0
            output = _int_field(o, src, None, f"output_lens[{i}]") if o is not None else 0
            if s is None:
                raise TraceError(src, None, f"start_times[{i}]", f"missing ({where})")
            start = _float_field(s, src, None, f"start_times[{i}]")
            self.rows += 1
            if (errors is not None and errors[i]) or prompt < 1 or output < 1:
                self.skipped += 1
                continue
            rows.append((start, i, prompt, output))
        rows.sort()
        if rows:
            t0 = rows[0][0]
            # time.time() values (after 2001) give the trace an epoch; perf_counter() values do not
            if t0 > 1e9:
                self.epoch_s = t0
            for start, i, prompt, output in rows:
                yield i + 1, TraceRequest(f"req-{i}", start - t0, prompt, output)


def _detect(first: str, path: str) -> str:
    s = first.lstrip("\ufeff").strip()
    if s.startswith("{"):
        try:
            obj = json.loads(s)
        except json.JSONDecodeError:
            return "vllm-bench"  # a JSON document spread over several lines
        if isinstance(obj, dict) and ("input_lens" in obj or "start_times" in obj):
            return "vllm-bench"
        return "jsonl"
    cols = [c.strip() for c in next(csv.reader([s]), [])]
    if all(c in cols for c in _AZURE_COLS):
        return "azure"
    if "prompt_tokens" in cols:
        return "csv"
    raise TraceError(path, 1, "format", "not a known trace format (JSON lines, CSV with prompt_tokens, the Azure "
                     "trace, a vLLM benchmark result); name it with --format")


def open_trace(path: str | Path, fmt: str = "auto") -> Trace:
    """Open ``path`` (``-``: standard input) as a trace of format ``fmt`` (see module docstring)."""
    if fmt not in FORMATS:
        raise InputError("format", f"unknown trace format {fmt!r}", ", ".join(FORMATS))
    p = str(path)
    if p == "-":
        fh: IO[str] = sys.stdin
    else:
        try:
            fh = open(p, newline="", encoding="utf-8")
        except OSError as exc:
            raise InputError("trace", f"cannot read {p}: {exc.strerror}") from None
    try:
        first = fh.readline()
    except UnicodeDecodeError:
        fh.close()
        raise TraceError(p, 1, "encoding", "not UTF-8 text") from None
    if not first.strip():
        if fh is not sys.stdin:
            fh.close()
        raise TraceError(p, 1, "trace", "empty file")
    detected = _detect(first, p) if fmt == "auto" else fmt
    first = first.lstrip("\ufeff")
    return Trace(path=p, format=detected, _fh=fh, _first_line=first)


def read_trace(path: str | Path, fmt: str = "auto") -> tuple[list[TraceRequest], Trace]:
    """The whole trace in memory (small traces, tests)."""
    t = open_trace(path, fmt)
    return list(t), t


def trace_from_text(text: str, fmt: str = "auto", name: str = "<text>") -> Trace:
    """A trace from a string (tests)."""
    fh = io.StringIO(text)
    first = fh.readline()
    if not first.strip():
        raise TraceError(name, 1, "trace", "empty file")
    return Trace(path=name, format=_detect(first, name) if fmt == "auto" else fmt, _fh=fh, _first_line=first)
