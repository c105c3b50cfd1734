"""Prediction cost of the step predictor per step graph, batched, on one CPU core.

Usage: python benchmarks/predictor_speed.py [--model FILE] [--steps 1024] [--repeat 20]

Builds realistic mixed steps (Azure-like decode contexts plus a few prefill chunks), runs
``predict_steps`` on ``--steps`` steps at once with ``torch.set_num_threads(1)`` and reports the
best CPU time per step graph: the total, its parts (kernel-graph features, the fused GNN forward, the
torch reference forward, the request shares) and ``predict_step_batch`` (predict_steps and the
shares: what the sidecar and replay pay per batch), each call on a fresh batch as in the sidecar.
Writes benchmarks/results/predictor_speed.{md,json}. The target is <= 50 us per step graph.

A second table times the sidecar's case at low step rates, a call of 4 steps now and then: the
median CPU time of one ``predict_step_batch`` call when the calls come back to back, or 2, 10 and
40 ms apart (the gap slept, or spun on the same core so that it never idles): how much of a small
call's cost at 25 micro-batches a second is the CPU's caches gone cold since the last one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmco2_sidecar.graph import request_shares  # noqa: E402
from llmco2_sidecar.hardware.catalog import load_gpu  # noqa: E402
from llmco2_sidecar.models.catalog import load_model  # noqa: E402
from llmco2_sidecar.predictor.api import Deployment  # noqa: E402
from llmco2_sidecar.predictor.dataset import featurize_steps  # noqa: E402
from llmco2_sidecar.predictor.gnn import DEFAULT_MODEL, GNNPredictor  # noqa: E402
from llmco2_sidecar.service.prediction import predict_step_batch  # noqa: E402
from llmco2_sidecar.workload import Parallelism, StepBatch  # noqa: E402


def make_steps(n_steps: int, batch: int, seed: int = 0) -> StepBatch:
    rng = np.random.default_rng(seed)
    idx = np.repeat(np.arange(n_steps), batch)
    ctx = rng.integers(64, 4096, size=n_steps * batch)
    new = np.ones(n_steps * batch, dtype=np.int64)
    pre = rng.random(n_steps) < 0.2  # a prefill chunk in one step of five
    first = np.arange(n_steps) * batch
    new[first[pre]] = rng.integers(64, 2048, size=int(pre.sum()))
    ctx[first[pre]] = 0
    dur = rng.uniform(0.01, 0.05, size=n_steps)
    return StepBatch(idx.astype(np.int64), ctx.astype(np.int64), new, dur)


def alternating(batches, fn):
    """``fn`` called on each of ``batches`` in turn, one per call."""
    turn = [0]

    def call():
        turn[0] ^= 1
        fn(batches[turn[0]])

    return call


def timeit(fn, repeat: int) -> float:
    """The best of ``repeat`` timings (CPU seconds of this process: other work on a shared machine
    inflates wall time, and the minimum is the least disturbed run)."""
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def spaced_cost(fn, gap_s: float, calls: int, spin: bool) -> float:
    """Median CPU seconds of one ``fn()`` call when calls are ``gap_s`` apart (slept, or spun)."""
    fn()
    times = []
    for _ in range(calls):
        if spin:
            end = time.perf_counter() + gap_s
            while time.perf_counter() < end:
                pass
        elif gap_s > 0:
            time.sleep(gap_s)
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return float(np.median(times))


SPACED_GAPS_S = (0.0, 0.002, 0.01, 0.04)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--steps", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "predictor_speed"))
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {0})
    except (AttributeError, OSError):
        pass
    torch.set_num_threads(1)  # the predictor gives NumPy's BLAS the same count (predictor/threads.py)
    t_start, load_start = time.time(), os.getloadavg()[0]
    model = GNNPredictor.load(args.model)
    rows = []
    for model_id, gpu, tp, batch in (("meta-llama/Llama-3.1-8B", "H100", 1, 32), ("meta-llama/Llama-3.1-70B", "H100", 4, 64),
                                     ("Qwen/Qwen3-32B", "B200", 2, 128)):
        dep = Deployment(load_model(model_id), load_gpu(gpu), Parallelism(tp=tp))
        for n in (1, 4, 64, args.steps):  # 1 and 4: the sidecar's micro-batches at low step rates
            steps = make_steps(n, batch)
            # a fresh batch every call, as in the sidecar (each message is new): two batches in turn,
            # so the step aggregates kept for the last batch (graph/aggregates.py) never serve a call
            fresh = (make_steps(n, batch, seed=1), steps)
            total = timeit(alternating(fresh, lambda sb: model.predict_steps(dep, sb)), args.repeat)
            feat = timeit(alternating(fresh, lambda sb: featurize_steps(dep, sb, model.state.duration, node_major=True)),
                          args.repeat)
            call = timeit(alternating(fresh, lambda sb: predict_step_batch(model, dep, sb)), args.repeat)
            fe = featurize_steps(dep, steps, model.state.duration, node_major=True)
            fused = model._fused()
            inputs = model._fused_inputs(fe, fused)
            forward = timeit(lambda: fused(*inputs), args.repeat)
            tensors = model._tensors(featurize_steps(dep, steps, model.state.duration))

            def fwd():
                with torch.no_grad():
                    model.forward_group(*tensors)

            torch_fwd = timeit(fwd, args.repeat)
            featurize_steps(dep, steps, model.state.duration, node_major=True)
            shares = timeit(lambda: request_shares(dep, steps), args.repeat)  # its aggregates shared with the features
            rows.append({"model": model_id, "gpu": gpu, "tp": tp, "requests_per_step": batch, "steps": n,
                         "nodes": int(fe.features.layer_graph.n_nodes), "us_per_call_total": total * 1e6,
                         "us_per_step_total": total / n * 1e6, "us_per_step_features": feat / n * 1e6,
                         "us_per_step_gnn_forward": forward / n * 1e6, "us_per_step_torch_forward": torch_fwd / n * 1e6,
                         "us_per_step_shares": shares / n * 1e6, "us_per_call_predict_step_batch": call * 1e6,
                         "us_per_step_predict_step_batch": call / n * 1e6})
            print(f"{model_id} {gpu} tp{tp} b{batch} S={n}: {total * 1e6:.0f} us/call, {total / n * 1e6:.1f} us/step, "
                  f"with shares {call * 1e6:.0f} us/call, {call / n * 1e6:.1f} us/step "
                  f"(features {feat / n * 1e6:.1f}, GNN {forward / n * 1e6:.1f}, torch reference {torch_fwd / n * 1e6:.1f}, "
                  f"shares {shares / n * 1e6:.1f})")
    dep = Deployment(load_model("meta-llama/Llama-3.1-8B"), load_gpu("H100"), Parallelism(tp=1))
    fresh = (make_steps(4, 32, seed=1), make_steps(4, 32))
    spaced = []
    for gap in SPACED_GAPS_S:
        for spin in ((False,) if gap == 0 else (False, True)):
            call = alternating(fresh, lambda sb: predict_step_batch(model, dep, sb))
            us = spaced_cost(call, gap, 60, spin) * 1e6
            spaced.append({"gap_ms": gap * 1e3, "gap": "spun" if spin else "slept", "us_per_call": us})
            print(f"4-step call, {gap * 1e3:g} ms apart ({'spun' if spin else 'slept'}): {us:.0f} us CPU (median)")
    meta = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": 1, "model": Path(args.model).name, "repeat": args.repeat,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_start)), "load_start": load_start,
            "load_end": os.getloadavg()[0]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "spaced": spaced}, indent=1) + "\n")
    lines = ["# Step predictor speed (one CPU core, batched)", "",
             f"Command: `python benchmarks/predictor_speed.py` ({meta['date']}; model {meta['model']}, torch {meta['torch']}, "
             f"{meta['threads']} thread for torch and NumPy's BLAS, process pinned to CPU 0, best of {args.repeat}). Machine: "
             f"{meta['cpu']}, {meta['cpus']} logical CPUs, Python {meta['python']}; 1-minute load average at start "
             f"{meta['load_start']:.1f}, at end {meta['load_end']:.1f} (other work shares this machine: the figures are "
             "upper bounds). Target: <= 50 us per step graph, batched. The sidecar closes a micro-batch as soon as a "
             "request finishes, so at low step rates it predicts 1 to 4 steps per call: there the cost per call is what "
             "counts. `predict_steps` = features + the fused NumPy GNN forward + the prior and the power window; the "
             "torch forward is the trained modules' own (the reference the fused one is tested against, not on the "
             "product's path); shares = `request_shares` (attribution, called beside `predict_steps`, on the step "
             "aggregates the features computed). `predict_step_batch` = both, what the sidecar and replay call per "
             "batch. Every timed call but the torch forward's and the shares' gets a fresh batch (two in turn), as "
             "each sidecar message is one.", "",
             "| model | GPU | TP | requests/step | steps per call | nodes | us per call | us/step predict_steps | "
             "features | GNN forward (fused) | torch forward (reference) | shares | predict_step_batch: us per call | "
             "us/step |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['gpu']} | {r['tp']} | {r['requests_per_step']} | {r['steps']} | {r['nodes']} | "
                     f"{r['us_per_call_total']:.0f} | {r['us_per_step_total']:.1f} | {r['us_per_step_features']:.1f} | "
                     f"{r['us_per_step_gnn_forward']:.1f} | {r['us_per_step_torch_forward']:.1f} | "
                     f"{r['us_per_step_shares']:.1f} | {r['us_per_call_predict_step_batch']:.0f} | "
                     f"{r['us_per_step_predict_step_batch']:.1f} |")
    lines += ["", "## A small call now and then (the sidecar at low step rates)", "",
              "meta-llama/Llama-3.1-8B on H100, 32 requests per step, `predict_step_batch` on 4 steps (a fresh batch "
              "each call), 60 calls per row: the median CPU time of one call when the calls come back to back or a gap "
              "apart. `slept`: the process sleeps through the gap (the core may idle or run other work); `spun`: it "
              "busy-waits on its own core, so the core never idles and nothing else runs there. At 100 steps/s with a "
              "finish every 4 steps the sidecar makes one such call every 40 ms.", "",
              "| gap between calls | gap spent | us per call (CPU, median) |", "|---|---|---|"]
    for r in spaced:
        lines.append(f"| {r['gap_ms']:g} ms | {r['gap'] if r['gap_ms'] else '-'} | {r['us_per_call']:.0f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
