"""Sidecar throughput, before / after: two code trees, alternating, the same hour.

The throughput workload of ``benchmarks/sidecar.py`` (its ``Workload``, ``throughput`` and
``start_sidecar``, imported, unchanged: the shipped GNN, 64-step messages of 16 request slices, a
finish every 4 steps, ``llmco2 serve`` pinned to CPU 0, the load generator on CPU 1), with one
difference: every run's engines get ids of their own. A stream that reopens an engine id resumes its
state (step ids must go on increasing: ``service/identity.py``), so a run that repeats the ids of an
earlier run on the same sidecar (its warm-up included) has those of its steps rejected as duplicates;
here no step is rejected (each figure counts every step sent).

Per round and tree: a fresh sidecar, a 2,048-step warm-up, one run over 1 stream (117,952 steps) and
one over 8 streams (8 x 14,744); the sidecar's CPU (user + system, /proc) per step beside each.
Trees alternate round by round; the median and the range of each are reported (this VM's figures
move by +-10% between runs with nothing changed).

Usage: python benchmarks/sidecar_throughput_ab.py --before DIR [--after DIR] [--rounds 3] [--out PREFIX]
(``DIR``: a checkout, e.g. ``git archive <commit> | tar -x -C DIR``; ``--after`` defaults to this
repository). Writes PREFIX.json and PREFIX.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_CHILD = r"""
import json, os, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import sidecar as bench
RUN = ["warm"]
class W(bench.Workload):
    def __init__(self, engine):
        super().__init__(f"{RUN[0]}-{engine}")
bench.Workload = W
os.sched_setaffinity(0, {1})
proc, addr = bench.start_sidecar(Path(tempfile.mkdtemp(prefix="tput-ab-")), 0, "default")
def cpu_s():
    f = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
out = {}
try:
    time.sleep(1.0)
    bench.throughput(addr, 1, 2048)
    for streams, steps in ((1, 117952), (8, 14744)):
        RUN[0] = f"s{streams}"
        c0 = cpu_s()
        r = bench.throughput(addr, streams, steps)
        r["cpu_us_per_step"] = (cpu_s() - c0) / r["steps"] * 1e6
        out[str(streams)] = r
finally:
    proc.terminate(); proc.wait(30)
print(json.dumps(out))
"""


def one_round(tree: Path) -> dict:
    """A fresh sidecar from ``tree`` (its package and its benchmarks/sidecar.py), both runs."""
    res = subprocess.run([sys.executable, "-c", _CHILD], cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the baseline tree (a checkout of the older commit)")
    ap.add_argument("--after", default=str(ROOT), help="the new tree (default: this repository)")
    ap.add_argument("--before-label", default="before", help="what the baseline tree is, for the page (e.g. a commit)")
    ap.add_argument("--after-label", default="after", help="what the new tree is, for the page")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per tree, alternating (default 3)")
    ap.add_argument("--out", default=str(HERE / "results" / "sidecar_throughput_ab"), help="output prefix")
    args = ap.parse_args()
    trees = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    for name, tree in trees.items():
        if not (tree / "benchmarks" / "sidecar.py").exists():
            print(f"sidecar_throughput_ab: error: --{name} {tree}: no benchmarks/sidecar.py there", file=sys.stderr)
            return 2
    runs = []
    for k in range(args.rounds):
        for name, tree in trees.items():
            t, load = time.strftime("%H:%M:%S", time.gmtime()), os.getloadavg()[0]
            r = one_round(tree)
            runs.append({"round": k, "tree": name, "utc": t, "load_1m": load, **{f"streams_{s}": r[s] for s in r}})
            print(f"{t} load {load:.2f} {name}: " + ", ".join(
                f"{s} stream(s) {r[s]['steps_per_s']:,.0f} steps/s ({r[s]['cpu_us_per_step']:.1f} us CPU/step)" for s in r),
                flush=True)
    summary = {}
    for name in trees:
        for s in ("1", "8"):
            rows = [r[f"streams_{s}"] for r in runs if r["tree"] == name]
            rate = sorted(x["steps_per_s"] for x in rows)
            cpu = sorted(x["cpu_us_per_step"] for x in rows)
            summary[f"{name}_{s}"] = {"steps_per_s_median": statistics.median(rate), "steps_per_s_runs": rate,
                                      "cpu_us_per_step_median": statistics.median(cpu), "cpu_us_per_step_runs": cpu}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"trees": {k: str(v) for k, v in trees.items()},
                                                    "labels": {"before": args.before_label, "after": args.after_label},
                                                    "runs": runs,
                                                    "summary": summary}, indent=1) + "\n")
    loads = [r["load_1m"] for r in runs]
    lines = ["# Sidecar throughput before / after (alternating, the same hour)", "",
             f"Command: `python benchmarks/sidecar_throughput_ab.py --before {args.before} --rounds {args.rounds}` "
             f"(before: {args.before_label}; after: {args.after_label}) "
             f"({runs[0]['utc']}-{runs[-1]['utc']} UTC, {time.strftime('%Y-%m-%d', time.gmtime())}). Machine: AMD EPYC, "
             f"{os.cpu_count()} logical CPUs (a VM shared with other work: 1-minute load {min(loads):.2f}-{max(loads):.2f} "
             "at the run starts). Workload: benchmarks/sidecar.py's throughput runs, fresh engine ids per run "
             "(no step rejected), the sidecar pinned to CPU 0; a fresh sidecar per round.", "",
             "| tree | 1 stream: step events/s, median (runs) | CPU us/step | 8 streams: step events/s, median (runs) | CPU us/step |",
             "|---|---|---|---|---|"]
    labels = {"before": args.before_label, "after": args.after_label}
    for name in trees:
        a, b = summary[f"{name}_1"], summary[f"{name}_8"]
        lines.append(f"| {labels[name]} | {a['steps_per_s_median']:,.0f} ({', '.join(f'{x:,.0f}' for x in a['steps_per_s_runs'])}) | "
                     f"{a['cpu_us_per_step_median']:.1f} | {b['steps_per_s_median']:,.0f} "
                     f"({', '.join(f'{x:,.0f}' for x in b['steps_per_s_runs'])}) | {b['cpu_us_per_step_median']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
