"""``llmco2 tail``: follow the carbon log as a live table, with filters.

Prints the last ``-n`` matching records, then follows the file (across rotations) until
interrupted; ``--once`` prints and exits. Filters combine with AND.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Iterator

COLUMNS = {
    "request": ("time", "request_id", "model", "gpu", "prompt", "output", "energy_J", "carbon_g", "source"),
    "window": ("time", "engine", "model", "steps", "energy_J", "idle_J", "carbon_g", "source"),
    "step": ("time", "engine", "step_id", "requests", "tokens", "energy_J", "source"),
}
WIDTH = {"time": 19, "request_id": 28, "model": 26, "gpu": 16, "engine": 18, "prompt": 7, "output": 7,
         "energy_J": 10, "carbon_g": 10, "source": 9, "steps": 6, "idle_J": 9, "step_id": 8, "requests": 8, "tokens": 7}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", nargs="?", default="llmco2-carbon.jsonl", help="carbon log (default llmco2-carbon.jsonl)")
    parser.add_argument("-n", "--lines", type=int, default=20, help="matching records shown first (default 20)")
    parser.add_argument("--once", action="store_true", help="print and exit, do not follow")
    parser.add_argument("--type", default="request", choices=tuple(COLUMNS), help="record type (default request)")
    parser.add_argument("--model", help="only records whose model contains this text")
    parser.add_argument("--gpu", help="only records whose GPU contains this text")
    parser.add_argument("--engine", help="only records of this engine (stream id)")
    parser.add_argument("--request", help="only requests whose id starts with this text: the client's id "
                                          "(X-Request-Id) or the engine's (vLLM: cmpl-ID-0-...)")
    parser.add_argument("--min-carbon-g", type=float, default=None, help="only records with at least this much carbon")
    parser.add_argument("--source", choices=("predicted", "measured"), help="only predicted or measured figures")
    parser.add_argument("--json", action="store_true", help="print matching records as JSON lines, not a table")
    parser.add_argument("--interval-s", type=float, default=0.25, help="poll interval while following, seconds (default %(default)s)")


def matches(rec: dict, args: argparse.Namespace) -> bool:
    if rec.get("type") != args.type:
        return False
    if args.model and args.model not in str(rec.get("model", "")):
        return False
    if args.gpu and args.gpu not in str(rec.get("gpu", "")):
        return False
    if args.engine and rec.get("engine") != args.engine:
        return False
    if args.request and not (str(rec.get("request_id", "")).startswith(args.request)
                             or str(rec.get("client_request_id") or "").startswith(args.request)):
        return False
    if args.source and rec.get("source") != args.source:
        return False
    if args.min_carbon_g is not None and rec.get("carbon_g", {}).get("total", 0.0) < args.min_carbon_g:
        return False
    return True


def _cell(rec: dict, col: str) -> str:
    if col == "time":
        return datetime.fromtimestamp(rec.get("ts", 0), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    if col == "request_id":  # the id the client knows (X-Request-Id) where the engine sent it
        return str(rec.get("client_request_id") or rec.get("request_id", ""))
    if col == "prompt":
        return str(rec.get("prompt_tokens", ""))
    if col == "output":
        return str(rec.get("output_tokens", ""))
    if col == "energy_J":
        return f"{rec.get('energy_j', {}).get('total', 0.0):.2f}"
    if col == "idle_J":
        return f"{rec.get('energy_j', {}).get('idle', 0.0):.2f}"
    if col == "carbon_g":
        return f"{rec.get('carbon_g', {}).get('total', 0.0):.4f}" if "carbon_g" in rec else ""
    return str(rec.get(col, ""))


def format_row(rec: dict, kind: str) -> str:
    cells = []
    for col in COLUMNS[kind]:
        w = WIDTH[col]
        text = _cell(rec, col)
        if len(text) > w:
            text = text[: w - 1] + "~"
        cells.append(text.rjust(w) if col in ("prompt", "output", "energy_J", "carbon_g", "steps", "idle_J",
                                              "step_id", "requests", "tokens") else text.ljust(w))
    return " ".join(cells).rstrip()


def header(kind: str) -> str:
    return " ".join(c.ljust(WIDTH[c]) for c in COLUMNS[kind]).rstrip()


def _parse(line: bytes) -> dict | None:
    try:
        return json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def follow(path: str, interval_s: float, start_at_end: bool) -> Iterator[dict | None]:
    """Yield records appended to ``path`` (None on idle polls); reopens after rotation."""
    fh = None
    ino = None
    buf = b""
    while True:
        if fh is None:
            try:
                fh = open(path, "rb")
            except FileNotFoundError:
                yield None
                time.sleep(interval_s)
                continue
            ino = os.fstat(fh.fileno()).st_ino
            if start_at_end:
                fh.seek(0, os.SEEK_END)
            start_at_end = False
            buf = b""
        chunk = fh.read()
        if chunk:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                rec = _parse(line)
                if rec is not None:
                    yield rec
            continue
        try:
            rotated = os.stat(path).st_ino != ino
        except FileNotFoundError:
            rotated = True
        if rotated:
            fh.close()
            fh = None
            continue
        yield None
        time.sleep(interval_s)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError

    if args.lines < 0:
        raise InputError("lines", "must not be negative", ">= 0")
    if not os.path.exists(args.log) and args.once:
        raise InputError("log", f"no such file: {args.log}")
    out = sys.stdout
    if not args.json:
        print(header(args.type), file=out)
    last: list[dict] = []
    if os.path.exists(args.log):
        with open(args.log, "rb") as fh:
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                rec = _parse(line)
                if rec is not None and matches(rec, args):
                    last.append(rec)
                    if len(last) > args.lines:
                        last.pop(0)
    for rec in last:
        print(json.dumps(rec) if args.json else format_row(rec, args.type), file=out)
    out.flush()
    if args.once:
        return 0
    try:
        for rec in follow(args.log, args.interval_s, start_at_end=True):
            if rec is not None and matches(rec, args):
                print(json.dumps(rec) if args.json else format_row(rec, args.type), file=out, flush=True)
    except KeyboardInterrupt:
        return 0
    return 0
