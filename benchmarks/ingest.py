"""Ingest cost per engine message on the sidecar's event loop: validation of one-step messages (the
common case at low step rates, where each message carries one step) by the one-step fast path and
by the columnar path, and of 64-step messages (the columnar path), in microseconds per message.

    python benchmarks/ingest.py [--messages 20000] [--slices 4] [--repeats 5]

Prints the median over the repeats of each and writes benchmarks/results/ingest.json and ingest.md;
both paths run in the same process, alternating, so that a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sidecar_testkit import identity, steps_message  # noqa: E402

from llmco2_sidecar.service import ingest as ing  # noqa: E402


def messages(n: int, slices: int, per_message: int) -> list:
    out, sid = [], 0
    for m in range(n):
        steps = []
        for _ in range(per_message):
            sid += 1
            steps.append((sid, sid * 0.01, sid * 0.01 + 0.005, [(f"r{k}", 1, 100 + sid, 100) for k in range(slices)]))
        out.append(steps_message(m + 1, steps).events)
    return out


def per_message_us(msgs: list, fast: bool) -> float:
    stream = ing.open_stream(identity("bench").identity, {})
    saved = ing.FAST_PATH_MAX_SLICES
    ing.FAST_PATH_MAX_SLICES = saved if fast else -1
    try:
        t = time.perf_counter()
        for m in msgs:
            ing.ingest(stream, m)
        return (time.perf_counter() - t) / len(msgs) * 1e6
    finally:
        ing.FAST_PATH_MAX_SLICES = saved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20000, help="messages per timed pass (default 20000)")
    ap.add_argument("--slices", type=int, default=4, help="request slices per step (default 4)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes of each (default 5)")
    a = ap.parse_args(argv)
    one = messages(a.messages, a.slices, 1)
    many = messages(max(a.messages // 64, 10), a.slices, 64)
    res: dict[str, list[float]] = {"one-step, fast path": [], "one-step, columnar path": [], "64 steps, columnar": []}
    for r in range(a.repeats):
        print(f"pass {r + 1}/{a.repeats}", file=sys.stderr)
        res["one-step, fast path"].append(per_message_us(one, True))
        res["one-step, columnar path"].append(per_message_us(one, False))
        res["64 steps, columnar"].append(per_message_us(many, True))
    med = {k: statistics.median(v) for k, v in res.items()}
    for k, m in med.items():
        print(f"{k:26s} {m:8.1f} us per message (median of {a.repeats}; {a.slices} slices a step)")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    machine = f"{platform.machine()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "ingest.json").write_text(json.dumps({
        "command": "python benchmarks/ingest.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": when, "machine": machine, "load_average_1m_at_end": load, "messages": a.messages,
        "slices_per_step": a.slices, "repeats": a.repeats, "us_per_message": res, "median_us_per_message": med,
    }, indent=2) + "\n")
    rows = "\n".join(f"| {k} | {m:.1f} |" for k, m in med.items())
    (out / "ingest.md").write_text(
        f"# Ingest cost per engine message\n\nCommand: `python benchmarks/ingest.py` ({when}). Machine: {machine}; "
        f"1-minute load average at the end {load:.2f}. {a.messages} one-step messages per pass ({a.slices} slices a "
        f"step), median of {a.repeats} passes; the fast and columnar paths alternate in one process.\n\n"
        f"| path | us per message |\n|---|---|\n{rows}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
