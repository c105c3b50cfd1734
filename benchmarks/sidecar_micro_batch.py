"""Sidecar throughput by micro-batch size (``llmco2 serve --micro-batch-steps``): the throughput runs of
benchmarks/sidecar.py (the shipped GNN, 64-step messages over 1 and 8 streams, the sidecar pinned to one
core) for each size, the sizes in turn, ``--repeat`` times, so that each size's runs are spread over
the sweep (this VM's speed drifts by 15-40% between runs). It chose the default of 512.

Writes benchmarks/results/sidecar_micro_batch.json and .md.
Usage: python benchmarks/sidecar_micro_batch.py [--sizes 256,512,1024] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sidecar as bench  # noqa: E402  (the workload, the throughput run, machine facts)


def micro_batch_sweep(sizes: list[int], repeat: int, quick: bool, out: Path) -> int:
    """Throughput (1 and 8 streams, the GNN) for each ``--micro-batch-steps`` in ``sizes``, the sizes
    alternating ``repeat`` times (this VM drifts: a setting's runs are spread over the whole sweep)."""
    steps = 20_000 if quick else 120_000
    tmp = Path(tempfile.mkdtemp(prefix="llmco2-bench-"))
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0] if len(cpus) > 1 else None
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[1:]))
    res = {"machine": bench.machine(), "sidecar_cpu_pinned": server_cpu, "sizes": sizes, "repeat": repeat, "runs": []}
    for k in range(repeat):
        for n in sizes:
            proc, address = bench.start_sidecar(tmp / f"mb{n}-{k}", server_cpu, "default", ("--micro-batch-steps", str(n)))
            try:
                time.sleep(1.0)
                bench.throughput(address, 1, 2048)  # warm-up
                one, eight = bench.throughput(address, 1, steps), bench.throughput(address, 8, steps // 8)
            finally:
                proc.terminate()
                proc.wait(30)
            res["runs"].append({"micro_batch_steps": n, "round": k, "steps_per_s_1": one["steps_per_s"],
                                "steps_per_s_8": eight["steps_per_s"]})
            print(f"micro-batch {n}, round {k + 1}/{repeat}: {one['steps_per_s']:,.0f} / {eight['steps_per_s']:,.0f} "
                  "step events/s (1 / 8 streams)", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    res["load_average_1m_after"] = os.getloadavg()[0]
    res["command"] = f"python benchmarks/sidecar_micro_batch.py --sizes {','.join(map(str, sizes))} --repeat {repeat}" + (
        " --quick" if quick else "")
    res["steps"] = steps
    bench.write_results(out, "sidecar_micro_batch", res, render)
    return 0


def render(res: dict) -> str:
    m = res["machine"]
    steps = res.get("steps", 20_000 if "--quick" in res["command"] else 120_000)
    lines = ["# Sidecar throughput by micro-batch size", "",
             f"Command: `{res['command']}` ({res['date_utc']} UTC). Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs; "
             f"1-minute load average {m['load_average_1m_at_start']:.2f} at the start, {res['load_average_1m_after']:.2f} "
             "at the end (other work shares this machine). The throughput runs of `benchmarks/sidecar.py` (the shipped "
             f"GNN, {steps:,} steps in 64-step messages, the sidecar pinned to one core) with `llmco2 serve "
             "--micro-batch-steps N`, the sizes in turn, each size's runs spread over the sweep.", "",
             "| --micro-batch-steps | step events/s, 1 stream: median (runs) | 8 streams: median (runs) |", "|---|---|---|"]
    for n in res["sizes"]:
        a = sorted(r["steps_per_s_1"] for r in res["runs"] if r["micro_batch_steps"] == n)
        b = sorted(r["steps_per_s_8"] for r in res["runs"] if r["micro_batch_steps"] == n)
        lines.append(f"| {n} | {a[len(a) // 2]:,.0f} ({', '.join(f'{x:,.0f}' for x in a)}) | "
                     f"{b[len(b) // 2]:,.0f} ({', '.join(f'{x:,.0f}' for x in b)}) |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512,1024", help="--micro-batch-steps values (default 256,512,1024)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds over the sizes (default 3)")
    ap.add_argument("--quick", action="store_true", help="smaller runs (a smoke test, not for the results)")
    ap.add_argument("--out", default=str(bench.RESULTS), help="results folder")
    args = ap.parse_args(argv)
    try:
        sizes = [int(x) for x in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes: comma-separated integers, got {args.sizes!r}")
    return micro_batch_sweep(sizes, args.repeat, args.quick, Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
