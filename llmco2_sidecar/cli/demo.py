"""``llmco2 demo``: replay the Azure conversation trace through the sidecar and summarise.

Replays the first ``--minutes`` of the bundled Azure LLM inference trace 2023 (conversation;
CC-BY-4.0, see ``llmco2_sidecar/data/SOURCE.md``) through the engine simulator of ``llmco2 replay``
(vLLM v1 / Sarathi-style scheduling; step times come from the simulator, driven by the predictor's
duration model, not from a GPU), accounts it in process with the sidecar's code, and sends the very
same steps as real gRPC step events through the engine emitter to a sidecar started in this process
(a ``grpc.aio`` server on a free loopback port), whose carbon log must agree request by request.
Prints the summary (the same figures on every run of the same trace: they come from the
deterministic in-process accounting) and writes a PNG plot. Defaults: Llama-2-7B
(meta-llama/Llama-2-7b-hf) on one A100-SXM4-80GB (TP 1), chunk size (token budget) 512, 128
sequences at most, 5 trace minutes (1,445 requests). The files at ``--log`` (and its rotations and
journal) are replaced.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .helpfmt import default_pue, default_region


DEFAULT_MODEL = "meta-llama/Llama-2-7b-hf"
DEFAULT_GPU = "A100-SXM4-80GB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[1].strip()
    parser.add_argument("--minutes", type=float, default=5.0, help="trace minutes to replay (default 5)")
    parser.add_argument("--log", default="out/demo/carbon.jsonl", help="carbon log to write, replaced (default %(default)s)")
    parser.add_argument("--plot", default=None, help="PNG to write (default: beside the log, demo.png)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model (default {DEFAULT_MODEL})")
    parser.add_argument("--gpu", default=DEFAULT_GPU, help=f"GPU (default {DEFAULT_GPU})")
    parser.add_argument("--tp", type=int, default=1, help="tensor parallelism (default 1)")
    parser.add_argument("--chunk-size", type=int, default=512, help="token budget per step (default 512)")
    parser.add_argument("--max-num-seqs", type=int, default=128, help="running sequences at most (default 128)")
    parser.add_argument("--region", default=None, help=f"carbon-intensity region of the bundled table (default {default_region()})")
    parser.add_argument("--pue", type=float, default=None, help=f"PUE (default: {default_pue()})")
    parser.add_argument("--carbon-intensity-g-per-kwh", type=float, default=None, help="grid intensity override")
    parser.add_argument("--predictor", default="default", choices=("default", "roofline"), help="step predictor")
    from .. import config as cfgmod

    cfgmod.add_grid_arguments(parser)
    parser.add_argument("--trace", default=None, help="another trace CSV with the Azure columns")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _clear(log: Path) -> None:
    for p in [log, *log.parent.glob(log.name + ".[0-9]*")]:
        if p.is_file():
            p.unlink()
    journal = Path(str(log) + ".journal")
    if journal.is_dir():
        shutil.rmtree(journal)


class _Sender:
    """Sends each accounted chunk of simulated steps to the live sidecar through the emitter."""

    def __init__(self, emitter, window_s: float):
        from ..client.emitter import Phase

        self.emitter = emitter
        self.phase = Phase
        self.step_id = 0
        self.window_s = window_s
        self.windows: dict[int, list] = {}  # index -> [gpu_j, host_j, idle_j]: power over time, in process

    def __call__(self, sim, chunk, e) -> None:
        em, P = self.emitter, self.phase
        bounds = np.concatenate(([0], np.cumsum(np.bincount(chunk.step_of, minlength=chunk.n_steps))))
        slots, ctx, new, pre = (chunk.slot.tolist(), chunk.context_tokens.tolist(), chunk.new_tokens.tolist(),
                                chunk.is_prefill.tolist())
        reqs = sim.slot_req
        done = {r.slot: r for r in chunk.finished}
        for i in range(chunk.n_steps):
            a, b = int(bounds[i]), int(bounds[i + 1])
            rs = [done.get(s) or reqs[s] for s in slots[a:b]]
            self.step_id += 1
            em.emit_step(self.step_id, float(chunk.start_s[i]), float(chunk.end_s[i]), [r.rid for r in rs],
                         new[a:b], ctx[a:b], [r.prompt for r in rs],
                         [P.PREFILL_NEW if c == 0 else (P.PREFILL_CHUNK if p else P.DECODE)
                          for c, p in zip(ctx[a:b], pre[a:b])])
        for r in chunk.finished:
            em.emit_done(r.rid, output_tokens=r.generated, time_s=r.finish_s, prompt_tokens=r.prompt)
        idx = np.floor(chunk.end_s / self.window_s).astype(np.int64)
        host = e.busy_host_j + e.gap_attributed_j + e.idle_j
        for w in np.unique(idx):
            sel = idx == w
            acc = self.windows.setdefault(int(w), [0.0, 0.0, 0.0])
            acc[0] += float(e.gpu_j[sel].sum())
            acc[1] += float(host[sel].sum())
            acc[2] += float(e.idle_j[sel].sum())


def run(args: argparse.Namespace) -> int:
    import io

    from ..client import Emitter, EmitterConfig, EngineInfo
    from ..config import SidecarConfig
    from ..errors import InputError
    from ..service.carbon_log import read_records
    from ..service.server import SidecarThread
    from ..sim.engine import EngineConfig
    from ..sim.replay import ReplaySetup, load_predictor, run_replay
    from ..sim.replay_text import fmt_summary
    from ..sim.trace import BUNDLED_CONV

    if args.tp < 1:
        raise InputError("tp", "must be positive", ">= 1")
    if not args.minutes > 0:
        raise InputError("minutes", f"must be positive, got {args.minutes!r}", "> 0")
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    _clear(log)
    # --grid: the in-process replay and the sidecar price the steps alike (static region, hourly series,
    # or an API's reading now for the whole trace)
    g = argparse.Namespace(grid=args.grid, grid_url=args.grid_url, region=args.region,
                           carbon_intensity=args.carbon_intensity_g_per_kwh, intensity_csv=None)
    from ..config import apply_grid_to_replay

    apply_grid_to_replay(g)
    args.region, args.carbon_intensity_g_per_kwh = g.region, g.carbon_intensity
    setup = ReplaySetup(trace=str(args.trace or BUNDLED_CONV), trace_format="azure", model=args.model, gpu=args.gpu,
                        tp=args.tp, engine=EngineConfig(max_num_seqs=args.max_num_seqs,
                                                        max_num_batched_tokens=args.chunk_size),
                        predictor=args.predictor, region=args.region,
                        carbon_intensity_g_per_kwh=args.carbon_intensity_g_per_kwh, pue=args.pue,
                        max_arrival_s=args.minutes * 60.0, intensity_csv=g.intensity_csv)
    from ..sim.replay import deployment

    deployment(setup)  # a configuration that does not fit fails here, before anything starts
    predictor = load_predictor(args.predictor)
    window_s = 5.0
    config = SidecarConfig(port=0, log=str(log), predictor=args.predictor, window_s=window_s, region=args.region,
                           pue=args.pue, carbon_intensity_g_per_kwh=args.carbon_intensity_g_per_kwh,
                           fsync="never", grid=f"csv:{g.intensity_csv}" if g.intensity_csv else None)
    t_start = time.perf_counter()
    sidecar = SidecarThread(config, predictor=predictor).start()
    from ..sim.traces import open_trace

    epoch = open_trace(setup.trace, "azure")
    first = next(iter(epoch), None)
    if first is None:
        raise InputError("trace", "no request in the trace")
    epoch_s = epoch.epoch_s or 0.0
    # constant clocks: the engine clock is simulated time, the offset to wall time exactly the trace's start
    emitter = Emitter(
        EngineInfo(engine_name="llmco2-engine-sim", engine_version="llmco2-demo", model_name=args.model, gpu=args.gpu,
                   tp=args.tp, instance_id="demo-engine"),
        EmitterConfig(target=sidecar.address, max_buffered_events=1_000_000, clock=lambda: 0.0,
                      wall_clock=lambda: epoch_s))
    sender = _Sender(emitter, window_s)
    print(f"llmco2 demo: the first {args.minutes:g} min of {Path(setup.trace).name} -> engine simulator (step times "
          f"from the simulator) -> in-process accounting, and the same steps -> gRPC -> sidecar at {sidecar.address}",
          file=sys.stderr)
    replay_lines = io.StringIO()
    try:
        summary = run_replay(setup, requests_out=replay_lines, on_chunk=sender)
        if summary["requests"] == 0:
            raise InputError("minutes", "no request arrives in that many minutes of the trace")
    finally:
        delivered = emitter.flush(300)
        es = emitter.stats()
        emitter.close(5)
        sidecar.flush(300)
        sidecar.stop()
    wall = time.perf_counter() - t_start
    recs = read_records(log, ("request", "window"))
    live = {r["request_id"]: r for r in recs if r["type"] == "request"}
    mine = [json.loads(line) for line in replay_lines.getvalue().splitlines()]
    worst = 0.0
    missing = 0
    for r in mine:
        other = live.get(r["request_id"])
        if other is None:
            missing += 1
            continue
        a, b = r["energy_j"]["total"], other["energy_j"]["total"]
        worst = max(worst, abs(a - b) / max(abs(a), 1e-12))
    agrees = missing == 0 and len(live) == len(mine) and worst <= 1e-6
    summary["sidecar"] = {"records": len(live), "agrees_with_replay": agrees,
                          "tolerance": "per-request energy within 1e-6 (relative)"}
    summary["demo"] = {"trace_minutes": args.minutes, "trace_start_epoch_s": epoch_s, "window_s": window_s,
                       "step_times": "simulated (engine simulator + the predictor's duration model), not measured"}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(fmt_summary(summary))
        print(f"sidecar over gRPC: {len(live)} request records in {log}; "
              + ("each agrees with the in-process accounting (per-request energy within 1e-6)" if agrees else
                 f"DISAGREES with the in-process accounting: {missing} missing, worst relative difference {worst:.2e}"))
    print(f"transport: {es.emitted} events in {es.sent_messages} gRPC messages, {es.dropped} dropped; wall {wall:.1f} s",
          file=sys.stderr)
    if getattr(predictor, "guard", None) is not None:  # how often the idle floor / TDP cap acted (issue 14)
        print(f"{predictor.guard.describe()} (step predictions: the in-process accounting and the sidecar each "
              f"predict the {summary['simulation']['steps']} simulated steps)", file=sys.stderr if args.json else sys.stdout)
    if not args.no_plot:
        out = Path(args.plot) if args.plot else log.with_name("demo.png")
        plot(mine, sender.windows, out, summary)
        print(f"plot: {out}", file=sys.stderr)
    return 0 if delivered and es.dropped == 0 and agrees else 1


def plot(reqs, windows: dict, path: Path, summary: dict) -> None:
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
        ws = summary["demo"]["window_s"]
        keys = sorted(windows)
        mids = [(k + 0.5) * ws for k in keys]
        a2.step(mids, [sum(windows[k][:2]) / ws for k in keys], where="mid", label="total")
        a2.step(mids, [windows[k][0] / ws for k in keys], where="mid", label="GPU (predicted)")
        a2.step(mids, [windows[k][1] / ws for k in keys], where="mid", label="host + idle")
        a2.legend()
    a2.set_xlabel("trace time (s)")
    a2.set_ylabel("average power (W)")
    a2.set_title("Power over time (simulated steps, 5 s windows)")
    st = summary["setup"]
    fig.suptitle(f"{st['model']} on {st['gpu']} (TP {st['tp']}), Azure conversation trace, first "
                 f"{summary['demo']['trace_minutes']:g} min, predictor {st['predictor']}; step times simulated",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
