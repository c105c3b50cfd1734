"""What the sidecar costs as traffic varies: its CPU per step against finishes per step, with nothing
waiting for records and with held responses, one step per message and with the emitter's defaults.

``grpc_floor.py`` and ``sidecar.py`` measure one workload: 16 running requests of 64 steps each, a
finish every 4 steps. That is more finishes per step than real traffic: the Azure conversation
trace's requests (``llmco2_sidecar/data/azure_conv_2023.csv``) generate 211 tokens on average, so at
16 running requests a finish comes about every 13 steps. An operator sizing the sidecar needs how
its CPU scales with what it is paid by: messages (gRPC, the journal, ingest) and finishes (a record,
its log line; where responses are held, also a lookup RPC and a prediction call of its own, because
a record somebody waits for cannot wait for company).

The shipped emitter sends 100 steps a second for ``--seconds`` to ``llmco2 serve`` (shipped GNN,
pinned to one core; the emitter on the other) with requests of 64, 128 and 208 steps (a finish every
4, 8 and 13 steps; 208 = the trace's mean output of 211 tokens, rounded to a multiple of the 16
slots), in four cases: nothing waiting for records or a waiting lookup per finished request (the vLLM
hook's held responses: ``grpc_floor._Lookups``), each with one step per message (``steps_hold_s=0``)
and with the emitter's defaults (steps alone held up to 50 ms, a finish sent at once). The server's
CPU (user + system, /proc) over each run is divided by the steps; ``--repeat`` runs each (median and
range: this VM's figures swing between runs).

Then, per waiting mode, a least-squares fit over every run of CPU per step = p + m x (messages per
step) + f x (finishes per step): ``p`` what each step costs wherever it travels, ``m`` each message,
``f`` each finish. The fit is a summary of these runs on this machine, not a promise elsewhere.

Writes benchmarks/results/sidecar_cost.json and .md. Usage: python benchmarks/sidecar_cost.py
[--quick] [--repeat N] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import grpc_floor as floor  # noqa: E402  (the paced emitter, the lookups, the per-thread reading)
import sidecar as bench  # noqa: E402  (the workload, the sidecar's start, machine facts)

TRACE = HERE.parent / "llmco2_sidecar" / "data" / "azure_conv_2023.csv"  # the demo's trace (its SOURCE.md)


def trace_mean_output() -> float:
    """Mean generated tokens per request of the Azure conversation trace 2023 (19,366 requests)."""
    import csv

    with open(TRACE, newline="") as fh:
        out = [int(row["GeneratedTokens"]) for row in csv.DictReader(fh)]
    return sum(out) / len(out)


def lifetimes() -> tuple[int, ...]:
    """Steps per request: 64 and 128 (a finish every 4 and 8 steps at 16 running), and the trace's mean
    output rounded to a multiple of the 16 slots (208: a finish every 13 steps)."""
    return 64, 128, bench.SLOTS * round(trace_mean_output() / bench.SLOTS)
RATE = 100.0  # steps a second, the case
TARGET_US = 500.0
WAITS = ("none", "lookups")
WAIT_LABELS = {"none": "nothing waits for records (log, metrics, OTLP)",
               "lookups": "held responses (a waiting lookup per finished request: the vLLM hook's default)"}
EMITTERS = ("one-step", "defaults")
EMITTER_LABELS = {"one-step": "one step per message", "defaults": "emitter's defaults"}


def fit(runs: list[dict]) -> dict:
    """Least squares over ``runs`` (each with ``steps``, ``messages``, ``finishes``, ``cpu_us_per_step``):
    CPU per step = p + m x messages per step + f x finishes per step. The fitted values in us and the
    largest residual (how well three numbers describe the runs) and the standard error of ``f``."""
    x = np.array([[1.0, r["messages"] / r["steps"], r["finishes"] / r["steps"]] for r in runs])
    y = np.array([r["cpu_us_per_step"] for r in runs])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    dof = len(runs) - x.shape[1]
    se = (float(np.sqrt(resid @ resid / dof * np.linalg.pinv(x.T @ x)[2, 2])) if dof > 0 else float("nan"))
    return {"per_step_us": float(coef[0]), "per_message_us": float(coef[1]), "per_finish_us": float(coef[2]),
            "per_finish_se_us": se, "max_abs_residual_us": float(np.abs(resid).max()), "runs": len(runs)}


def measurable(f: dict) -> bool:
    """Whether a fit's per-finish cost stands out of its noise: positive and over twice its standard
    error (where nothing waits, finishes share prediction calls and may cost nothing visible)."""
    se = f["per_finish_se_us"]
    return f["per_finish_us"] > 0 and se == se and f["per_finish_us"] > 2 * se


def _finish_cell(f: dict) -> str:
    if measurable(f):
        return f"{f['per_finish_us']:,.0f} us"
    return f"not measurable here (fit: {f['per_finish_us']:,.0f} +- {f['per_finish_se_us']:,.0f} us)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one 3 s run per case (a smoke test, not for the results)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (default 3)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each run (default 10 s)")
    ap.add_argument("--out", default=str(bench.RESULTS), help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    repeat, seconds = (1, 3.0) if args.quick else (args.repeat, args.seconds)
    from llmco2_sidecar.client import EmitterConfig

    hold_default_s = EmitterConfig().steps_hold_s
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0] if len(cpus) > 1 else None
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="llmco2-cost-"))
    res = {"machine": bench.machine(), "server_cpu_pinned": server_cpu, "rate_steps_per_s": RATE,
           "seconds_per_run": seconds, "repeat": repeat, "slices_per_step": bench.SLOTS,
           "steps_hold_default_s": hold_default_s, "trace_mean_output_tokens": trace_mean_output(), "cases": []}
    steps_per_request = lifetimes()
    total, done = len(WAITS) * len(EMITTERS) * len(steps_per_request) * repeat, 0
    t_start = time.monotonic()
    for i in range(repeat):  # the repeats interleaved: a slow spell of the VM spreads over every case
        for wait in WAITS:
            for emitter in EMITTERS:
                for lifetime in steps_per_request:
                    proc, address = bench.start_sidecar(tmp / f"{wait}-{emitter}-{lifetime}-{i}", server_cpu, "default")
                    try:
                        time.sleep(1.0)
                        run = floor._paced(address, RATE, seconds, proc.pid,
                                           hold_default_s if emitter == "defaults" else 0.0,
                                           lookups=wait == "lookups", lifetime=lifetime)
                    finally:
                        proc.terminate()
                        proc.wait(30)
                    run.update(wait=wait, emitter=emitter, lifetime=lifetime, repeat=i)
                    res["cases"].append(run)
                    done += 1
                    print(f"[{done}/{total}, {time.monotonic() - t_start:.0f} s] {wait}, {emitter}, a finish every "
                          f"{lifetime // bench.SLOTS} steps: {run['cpu_us_per_step']:,.0f} us per step "
                          f"({run['messages']} messages, {run['finishes']} finishes)", flush=True)
    res["fits"] = {w: fit([r for r in res["cases"] if r["wait"] == w]) for w in WAITS}
    res["load_average_1m_after"] = os.getloadavg()[0]
    res["command"] = "python benchmarks/sidecar_cost.py" + (" --quick" if args.quick else "")
    bench.write_results(Path(args.out), "sidecar_cost", res, render)
    return 0


def _cell(runs: list[dict]) -> str:
    per = sorted(r["cpu_us_per_step"] for r in runs)
    if len(per) == 1:
        return f"{per[0]:,.0f} us"
    return f"{per[len(per) // 2]:,.0f} us ({per[0]:,.0f}-{per[-1]:,.0f})"


def render(r: dict) -> str:
    m = r["machine"]
    slots = r["slices_per_step"]
    lifetimes = sorted({c["lifetime"] for c in r["cases"]})
    lines = [
        "# What the sidecar costs as traffic varies", "",
        f"Command: `{r['command']}` ({r['date_utc']} UTC). Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, "
        f"Python {m['python']}, grpcio {m['grpcio']}; 1-minute load average {m['load_average_1m_at_start']:.2f} at "
        f"the start, {r['load_average_1m_after']:.2f} at the end (other work shares this machine). `llmco2 serve` "
        f"(shipped GNN predictor) pinned to CPU {r['server_cpu_pinned']}; the shipped emitter sends "
        f"{r['rate_steps_per_s']:.0f} steps a second ({slots} request slices each) from the other core for "
        f"{r['seconds_per_run']:.0f} s; requests of {', '.join(str(x) for x in lifetimes)} steps, so a finish every "
        f"{', '.join(f'{x / slots:.0f}' for x in lifetimes)} steps ({lifetimes[-1]}: the Azure conversation trace's mean "
        f"output, {r['trace_mean_output_tokens']:.0f} tokens, at {slots} running requests; `grpc_floor.md` and "
        f"`sidecar.md` use {lifetimes[0]}). The server's CPU (user + system) per step, median (range) of "
        f"{r['repeat']} run(s); the target is {TARGET_US:,.0f} us per step.", "",
        "| records | messages | " + " | ".join(f"a finish every {x / slots:.0f} steps" for x in lifetimes) + " |",
        "|---|---|" + "---|" * len(lifetimes),
    ]
    for wait in WAITS:
        for emitter in EMITTERS:
            cells = []
            for x in lifetimes:
                runs = [c for c in r["cases"] if c["wait"] == wait and c["emitter"] == emitter and c["lifetime"] == x]
                cells.append(_cell(runs) if runs else "-")
            mps = [c["messages"] / c["wall_s"] for c in r["cases"] if c["wait"] == wait and c["emitter"] == emitter]
            msgs = (f"{EMITTER_LABELS[emitter]} ({min(mps):.0f}-{max(mps):.0f} a second)" if mps
                    else EMITTER_LABELS[emitter])
            lines.append(f"| {WAIT_LABELS[wait]} | {msgs} | " + " | ".join(cells) + " |")
    lines += ["", "The same runs summarised, per waiting mode: a least-squares fit of CPU per step = p + m x (messages per "
              "step) + f x (finishes per step) over all its runs (both emitter modes, every request length):", "",
              "| records | p: per step | m: per message | f: per finish | largest residual | runs |",
              "|---|---|---|---|---|---|"]
    for wait, f in r["fits"].items():
        lines.append(f"| {WAIT_LABELS[wait]} | {f['per_step_us']:,.0f} us | {f['per_message_us']:,.0f} us | "
                     f"{_finish_cell(f)} | {f['max_abs_residual_us']:,.0f} us | {f['runs']} |")
    held = r["fits"].get("lookups")
    none = r["fits"].get("none")
    if held and none and measurable(held):
        trace = lifetimes[-1] / slots
        against = (f"against {none['per_finish_us']:,.0f} us when nothing waits" if measurable(none) else
                   "against nothing measurable when nothing waits (finishes then share prediction calls)")
        lines += ["", f"A finished request whose record somebody waits for costs about {held['per_finish_us']:,.0f} us "
                  f"{against}: the lookup RPC and a prediction call of its own, with caches cold since the last one. "
                  "So where responses are held, the sidecar's CPU follows the finishes per second more than the "
                  f"steps: at {r['rate_steps_per_s']:.0f} steps a second with a finish every {trace:.0f} steps (the "
                  "conversation trace at 16 running requests) these runs measured "
                  f"{_median(r, 'lookups', 'defaults', lifetimes[-1]):,.0f} us per step with the emitter's defaults and "
                  f"{_median(r, 'lookups', 'one-step', lifetimes[-1]):,.0f} us at one step per message; with a finish "
                  f"every {lifetimes[0] / slots:.0f} steps (the other benchmarks' workload), "
                  f"{_median(r, 'lookups', 'defaults', lifetimes[0]):,.0f} and "
                  f"{_median(r, 'lookups', 'one-step', lifetimes[0]):,.0f} us."]
    lines += ["", "For your own traffic: sidecar CPU per second = steps/s x p + messages/s x m + finishes/s x f, with the "
              "row of your waiting mode (f = 0 where it is not measurable; the vLLM hook holds responses unless `LLMCO2_RESPONSE_WAIT_S=0`; the emitter "
              "sends about one message per finish plus one per 50 ms of steps alone). Measured on this shared 2-core VM "
              "only."]
    return "\n".join(lines) + "\n"


def _median(r: dict, wait: str, emitter: str, lifetime: int) -> float:
    """The median CPU per step of one case's runs (the lower middle one of an even count)."""
    per = sorted(c["cpu_us_per_step"] for c in r["cases"]
                 if c["wait"] == wait and c["emitter"] == emitter and c["lifetime"] == lifetime)
    return per[(len(per) - 1) // 2] if per else float("nan")


if __name__ == "__main__":
    sys.exit(main())
