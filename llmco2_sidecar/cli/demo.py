"""``llmco2 demo``: replay the Azure conversation trace through the sidecar and summarise.

Starts a sidecar in this process (a ``grpc.aio`` server on a free loopback port), replays the first
``--minutes`` of the bundled Azure LLM inference trace 2023 (conversation; CC-BY-4.0, see
``llmco2_sidecar/data/SOURCE.md``) through a Sarathi-style scheduler simulator whose adapter sends
real gRPC step events through the engine emitter, then prints a summary read back from the carbon
log and writes a PNG plot. Defaults: Llama-2-7B (meta-llama/Llama-2-7b-hf) on one
A100-SXM4-80GB (TP 1), chunk size 512, 128 sequences at most, 5 trace minutes (1,445
requests; under a minute on a 2-core machine with the shipped predictor, about 15 s with
``--predictor roofline``). The files at ``--log`` (and its rotations and journal) are
replaced.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "meta-llama/Llama-2-7b-hf"
DEFAULT_GPU = "A100-SXM4-80GB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[1].strip()
    parser.add_argument("--minutes", type=float, default=5.0, help="trace minutes to replay (default 5)")
    parser.add_argument("--log", default="out/demo/carbon.jsonl", help="carbon log to write (replaced)")
    parser.add_argument("--plot", default=None, help="PNG to write (default: beside the log, demo.png)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model (default {DEFAULT_MODEL})")
    parser.add_argument("--gpu", default=DEFAULT_GPU, help=f"GPU (default {DEFAULT_GPU})")
    parser.add_argument("--tp", type=int, default=1, help="tensor parallelism (default 1)")
    parser.add_argument("--chunk-size", type=int, default=512, help="token budget per step (default 512)")
    parser.add_argument("--max-num-seqs", type=int, default=128, help="running sequences at most (default 128)")
    parser.add_argument("--region", default=None, help="carbon-intensity region (default: the table's default)")
    parser.add_argument("--pue", type=float, default=None, help="PUE (default: the carbon module's default)")
    parser.add_argument("--carbon-intensity-g-per-kwh", type=float, default=None, help="grid intensity override")
    parser.add_argument("--predictor", default="default", choices=("default", "roofline"), help="step predictor")
    parser.add_argument("--trace", default=None, help="another trace CSV with the Azure columns")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _clear(log: Path) -> None:
    for p in [log, *log.parent.glob(log.name + ".[0-9]*")]:
        if p.is_file():
            p.unlink()
    journal = Path(str(log) + ".journal")
    if journal.is_dir():
        shutil.rmtree(journal)


def run(args: argparse.Namespace) -> int:
    from ..client import Emitter, EmitterConfig, EngineInfo
    from ..config import SidecarConfig
    from ..errors import InputError
    from ..hardware.catalog import load_gpu
    from ..models.catalog import load_model
    from ..predictor.api import Deployment
    from ..service.carbon_log import read_records
    from ..service.server import SidecarThread, make_predictor
    from ..sim import SarathiAdapter, SarathiSimulator, SchedulerConfig, load_azure_conv
    from ..workload import Parallelism

    if args.tp < 1:
        raise InputError("tp", "must be positive", ">= 1")
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    _clear(log)
    dep = Deployment(load_model(args.model), load_gpu(args.gpu), Parallelism(tp=args.tp))
    requests, epoch = load_azure_conv(args.trace, minutes=args.minutes)
    if not requests:
        raise InputError("minutes", "no request arrives in that many minutes of the trace")
    predictor = make_predictor(args.predictor)
    config = SidecarConfig(port=0, log=str(log), predictor=args.predictor, window_s=5.0, region=args.region,
                           pue=args.pue, carbon_intensity_g_per_kwh=args.carbon_intensity_g_per_kwh,
                           fsync="never")
    t_start = time.perf_counter()
    sidecar = SidecarThread(config, predictor=predictor).start()
    sim_clock = [0.0]
    emitter = Emitter(
        EngineInfo(engine_name="sarathi-sim", engine_version="llmco2-demo", model_name=args.model, gpu=args.gpu,
                   tp=args.tp, instance_id="demo-engine"),
        EmitterConfig(target=sidecar.address, max_buffered_events=1_000_000, clock=lambda: sim_clock[0],
                      wall_clock=lambda: epoch + sim_clock[0]))
    sim = SarathiSimulator(dep, predictor, SarathiAdapter(emitter),
                           SchedulerConfig(chunk_size=args.chunk_size, max_num_seqs=args.max_num_seqs))

    class _Clocked:
        """Keeps the emitter's engine clock on simulated time."""

        def __init__(self, inner):
            self.inner = inner

        def on_step(self, start_s, end_s, seqs):
            sim_clock[0] = end_s
            return self.inner.on_step(start_s, end_s, seqs)

        def on_finished(self, *a, **kw):
            return self.inner.on_finished(*a, **kw)

    sim.sink = _Clocked(sim.sink)
    print(f"llmco2 demo: {len(requests)} requests from the first {args.minutes:g} min of the Azure conversation "
          f"trace 2023 -> Sarathi-style simulator -> gRPC -> sidecar at {sidecar.address}", file=sys.stderr)
    stats = sim.run(requests)
    delivered = emitter.flush(120)
    es = emitter.stats()
    emitter.close(5)
    sidecar.flush(120)
    sidecar.stop()
    wall = time.perf_counter() - t_start
    recs = read_records(log, ("request", "window"))
    reqs = [r for r in recs if r["type"] == "request"]
    windows = [r for r in recs if r["type"] == "window"]
    summary = summarise(reqs, windows, dep, stats, es, args, wall, delivered, predictor.name, epoch)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    if getattr(predictor, "guard", None) is not None:  # how often the idle floor / TDP cap acted (issue 14)
        print(predictor.guard.describe(), file=sys.stderr if args.json else sys.stdout)
    if not args.no_plot:
        out = Path(args.plot) if args.plot else log.with_name("demo.png")
        plot(reqs, windows, out, summary)
        print(f"plot: {out}")
    print(f"carbon log: {log}")
    return 0 if delivered and es.dropped == 0 else 1


def _pct(values, qs=(50, 90, 99)) -> dict:
    a = np.asarray(values, dtype=float)
    return {f"p{q}": float(np.percentile(a, q)) for q in qs} if a.size else {}


def summarise(reqs, windows, dep, stats, es, args, wall, delivered, predictor_name, epoch) -> dict:
    e_total = np.array([r["energy_j"]["total"] for r in reqs])
    c_total = np.array([r["carbon_g"]["total"] for r in reqs])
    out_tok = sum(r["output_tokens"] for r in reqs)
    in_tok = sum(r["prompt_tokens"] for r in reqs)
    idle_j = sum(w["energy_j"]["idle"] for w in windows)
    win_total = sum(w["energy_j"]["total"] for w in windows)
    first = reqs[0] if reqs else {}
    return {
        "setup": {"model": args.model, "gpu": dep.gpu.gpu_id, "tp": args.tp, "chunk_size": args.chunk_size,
                  "max_num_seqs": args.max_num_seqs, "trace": "Azure LLM inference trace 2023, conversation",
                  "trace_minutes": args.minutes, "predictor": predictor_name,
                  "pue": first.get("pue"), "carbon_intensity_g_per_kwh": first.get("carbon_intensity_g_per_kwh"),
                  "region": first.get("region")},
        "requests": len(reqs),
        "tokens": {"prompt": in_tok, "output": out_tok},
        "energy_j": {"requests": float(e_total.sum()), "unattributed_idle": idle_j,
                     "prefill": float(sum(r["energy_j"]["prefill"] for r in reqs)),
                     "decode": float(sum(r["energy_j"]["decode"] for r in reqs)),
                     "serving": float(sum(r["energy_j"]["serving"] for r in reqs)),
                     "windows_total": win_total},
        "carbon_g": {"total": float(c_total.sum()),
                     "operational": float(sum(r["carbon_g"]["operational"] for r in reqs)),
                     "embodied": float(sum(r["carbon_g"]["embodied"] for r in reqs))},
        "per_request": {"energy_j": _pct(e_total), "carbon_g": _pct(c_total)},
        "j_per_output_token": float(e_total.sum() / out_tok) if out_tok else None,
        "j_per_token": float(e_total.sum() / (out_tok + in_tok)) if out_tok + in_tok else None,
        "simulation": {"steps": stats.steps, "preemptions": stats.preemptions, "simulated_s": stats.end_s,
                       "busy_s": stats.busy_s, "max_running": stats.max_running, "skipped": len(stats.skipped)},
        "transport": {"events_emitted": es.emitted, "messages": es.sent_messages, "steps_accepted": es.steps_accepted,
                      "dropped": es.dropped, "all_acknowledged": delivered},
        "wall_s": wall,
        "trace_start_epoch_s": epoch,
    }


def print_summary(s: dict) -> None:
    st, e, c = s["setup"], s["energy_j"], s["carbon_g"]
    print(f"setup: {st['model']} on {st['tp']} x {st['gpu']} (TP {st['tp']}), Sarathi-style chunk {st['chunk_size']}, "
          f"max {st['max_num_seqs']} seqs; predictor {st['predictor']}")
    print(f"carbon: PUE {st['pue']}, {st['carbon_intensity_g_per_kwh']} gCO2e/kWh (region {st['region']}, location based)")
    print(f"trace: {st['trace']}, first {st['trace_minutes']:g} min: {s['requests']} requests, "
          f"{s['tokens']['prompt']} prompt + {s['tokens']['output']} output tokens")
    sim = s["simulation"]
    print(f"engine (simulated): {sim['steps']} steps over {sim['simulated_s']:.1f} s, busy {sim['busy_s']:.1f} s, "
          f"{sim['preemptions']} preemptions, up to {sim['max_running']} running")
    print(f"energy: requests {e['requests'] / 3.6e3:.2f} Wh (prefill {e['prefill'] / 3.6e3:.2f}, decode "
          f"{e['decode'] / 3.6e3:.2f}, serving {e['serving'] / 3.6e3:.2f}) + unattributed idle "
          f"{e['unattributed_idle'] / 3.6e3:.3f} Wh")
    print(f"carbon: {c['total']:.2f} gCO2e ({c['operational']:.2f} operational + {c['embodied']:.3f} embodied)")
    pe, pc = s["per_request"]["energy_j"], s["per_request"]["carbon_g"]
    if pe:
        print(f"per request: energy p50 {pe['p50']:.1f} J, p90 {pe['p90']:.1f} J, p99 {pe['p99']:.1f} J; "
              f"carbon p50 {pc['p50']:.3f} g, p90 {pc['p90']:.3f} g, p99 {pc['p99']:.3f} g")
    print(f"joules per output token: {s['j_per_output_token']:.3f}; per token (prompt + output): {s['j_per_token']:.4f}")
    t = s["transport"]
    print(f"transport: {t['events_emitted']} events in {t['messages']} gRPC messages, {t['dropped']} dropped; "
          f"wall {s['wall_s']:.1f} s")


def plot(reqs, windows, path: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    tokens = np.array([r["prompt_tokens"] + r["output_tokens"] for r in reqs])
    carbon = np.array([r["carbon_g"]["total"] for r in reqs])
    outs = np.array([r["output_tokens"] for r in reqs])
    sc = a1.scatter(tokens, carbon, c=outs, s=6, cmap="viridis")
    fig.colorbar(sc, ax=a1, label="output tokens")
    a1.set_xlabel("prompt + output tokens")
    a1.set_ylabel("gCO2e per request")
    a1.set_title("Per-request carbon")
    if windows:
        t0 = summary["trace_start_epoch_s"]
        ws = [(w["window_start"] - t0, w["window_end"] - t0, w["energy_j"]) for w in windows]
        mids = [(a + b) / 2 for a, b, _ in ws]
        width = [b - a for a, b, _ in ws]
        a2.step(mids, [e["total"] / d for (_, _, e), d in zip(ws, width)], where="mid", label="total")
        a2.step(mids, [e["gpu"] / d for (_, _, e), d in zip(ws, width)], where="mid", label="GPU (predicted)")
        a2.step(mids, [(e["serving"] + e["idle"]) / d for (_, _, e), d in zip(ws, width)], where="mid",
                label="serving + idle")
        a2.legend()
    a2.set_xlabel("trace time (s)")
    a2.set_ylabel("average power (W)")
    a2.set_title("Power over time (sidecar window records)")
    st = summary["setup"]
    fig.suptitle(f"{st['model']} on {st['gpu']} (TP {st['tp']}), Azure conversation trace, first "
                 f"{st['trace_minutes']:g} min, predictor {st['predictor']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
