"""Case studies in the manner of the LLMCO2 paper's Figures 8 and 9, from ``llmco2 replay``.

* GPU choice (paper Fig. 8): Llama-2 7B, 13B and 70B on A100-SXM4-80GB, H100-SXM5-80GB, H200 and
  L40S, each at the smallest tensor parallelism (1, 2, 4, 8) that fits the GPUs' memory;
* tensor parallelism (paper Fig. 9): Llama-2 70B on H100-SXM5-80GB, A100-SXM4-80GB and H200 at TP 1, 2, 4, 8
  (those that do not fit are listed);

each replayed on the Azure LLM inference trace 2023, conversation (the hour, 19,366 requests) and
code (8,819 requests), through the engine simulator (vLLM v1 scheduling, its defaults: 256
sequences, 8,192 tokens per step, chunked prefill) and the shipped predictor, carbon at the
``world`` grid intensity (481 gCO2e/kWh) and PUE 1.58. Everything here comes from the simulator and
the predictor, not from measurements: use it to compare configurations, not as a meter reading.

Run: ``python benchmarks/case_studies.py [--jobs 2] [--predictor default]``; writes
``benchmarks/results/case_studies.{json,md}`` and ``case_studies_gpu.png``, ``case_studies_tp.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmco2_sidecar.errors import InputError  # noqa: E402
from llmco2_sidecar.sim.replay import ReplaySetup, deployment  # noqa: E402
from llmco2_sidecar.sim.whatif import Task, execute  # noqa: E402

# The Azure 2023 traces as the project's shared data folder holds them (a sibling of the checkout,
# as on the development machines), or where --trace-dir / $LLMCO2_AZURE_TRACE_DIR says; the
# conversation hour is also bundled in the package, so only the code trace needs the folder.
DATA = Path(os.environ.get("LLMCO2_AZURE_TRACE_DIR") or ROOT.parent / "shared/data/azure_llm_inference_trace_2023/data")
TRACES = {"conversation": "AzureLLMInferenceTrace_conv.csv", "code": "AzureLLMInferenceTrace_code.csv"}
BUNDLED_CONV = ROOT / "llmco2_sidecar" / "data" / "azure_conv_2023.csv"
MODELS = ["meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-70b-hf"]
GPUS = ["A100-SXM4-80GB", "H100-SXM5-80GB", "H200-SXM-141GB", "L40S"]
TP_MODEL = "meta-llama/Llama-2-70b-hf"
TP_GPUS = ["H100-SXM5-80GB", "A100-SXM4-80GB", "H200-SXM-141GB"]
TPS = [1, 2, 4, 8]
OUT = ROOT / "benchmarks" / "results"


def trace_path(name: str) -> str:
    p = DATA / TRACES[name]
    if not p.exists() and name == "conversation":
        p = BUNDLED_CONV  # the same file, bundled
    if not p.exists():
        raise SystemExit(f"missing {p} (the Azure LLM inference trace 2023, github.com/Azure/AzurePublicDataset: "
                         f"name its folder with --trace-dir or $LLMCO2_AZURE_TRACE_DIR)")
    return str(p)


def fits(setup: ReplaySetup) -> str | None:
    try:
        deployment(setup)
    except InputError as exc:
        return str(exc)
    return None


def plan(predictor: str, minutes: float | None = None) -> tuple[list[tuple[str, str, ReplaySetup]], list[dict]]:
    """(study, trace, setup) for every run, and the configurations that do not fit."""
    runs, unfit = [], []
    for trace in TRACES:
        base = ReplaySetup(trace=trace_path(trace), trace_format="azure", model=MODELS[0], gpu=GPUS[0],
                           predictor=predictor, region="world",
                           max_arrival_s=None if minutes is None else 60.0 * minutes)
        for model in MODELS:
            for gpu in GPUS:
                for tp in TPS:
                    s = replace(base, model=model, gpu=gpu, tp=tp)
                    if fits(s) is None:
                        runs.append(("gpu", trace, s))
                        break
                else:
                    unfit.append({"study": "gpu", "trace": trace, "model": model, "gpu": gpu, "reason": "no TP up to 8 fits"})
        for gpu in TP_GPUS:
            for tp in TPS:
                s = replace(base, model=TP_MODEL, gpu=gpu, tp=tp)
                why = fits(s)
                if why is None:
                    runs.append(("tp", trace, s))
                else:
                    unfit.append({"study": "tp", "trace": trace, "model": TP_MODEL, "gpu": gpu, "tp": tp, "reason": why})
    return runs, unfit


def row(study: str, trace: str, s: dict) -> dict:
    st, e, lat = s["setup"], s["energy_j"], s["latency_s"]
    gpu_j = e["prefill"] + e["decode"] + e["gpu_idle"]
    return {"study": study, "trace": trace, "model": st["model"], "gpu": st["gpu"], "tp": st["tp"],
            "n_gpus": st["n_gpus"], "requests": s["requests"], "rejected": s["simulation"]["rejected"],
            "g_per_1k_output_tokens": s["g_per_1k_output_tokens"], "j_per_output_token": s["j_per_output_token"],
            "operational_g": s["carbon_g"]["operational"], "embodied_g": s["carbon_g"]["embodied"],
            "energy_kwh": e["total"] / 3.6e6, "gpu_idle_share": e["gpu_idle"] / gpu_j if gpu_j else None,
            "busy_share": s["simulation"]["busy_s"] / s["duration_s"] if s["duration_s"] else None,
            "ttft_p99_s": lat["ttft_p99"], "tpot_p99_s": lat["tpot_p99"], "e2e_p99_s": lat["e2e_p99"],
            "preemptions": s["simulation"]["preemptions"], "duration_s": s["duration_s"]}


def short(model: str) -> str:
    return model.split("/")[-1].replace("Llama-2-", "").replace("-hf", "").upper()


def markdown(meta: dict, rows: list[dict], unfit: list[dict]) -> str:
    out = ["# Case studies: which GPU, which tensor parallelism (simulated)", "",
           f"Command: `{meta['command']}` ({meta['date']}). Machine: {meta['machine']}. Predictor: "
           f"{meta['predictor']}. Traces: Azure LLM inference trace 2023 (Splitwise, CC-BY-4.0), conversation "
           f"(19,366 requests, one hour) and code (8,819 requests)"
           + (f", **the first {meta['minutes']:g} minutes of each only**" if meta.get("minutes") else "")
           + f". Engine: simulated vLLM v1 scheduling "
           f"(256 sequences, 8,192 tokens per step, chunked prefill, KV capacity from GPU memory, preemption). "
           f"Carbon: {meta['carbon']}. **Everything here comes from the engine simulator and the predictor, "
           f"not from measurements.** Wall time {meta['wall_s']:.0f} s with {meta['jobs']} worker processes on a "
           f"machine shared with other work.", "",
           "Llama-2 reads 4,096 tokens: as vLLM, the simulator rejects a prompt that fills the context and stops an "
           "output at it (since 2026-12-08); *served* counts the requests each configuration served, *rejected* those "
           "it could not (the context, or a KV cache too small), so carbon per token compares the tokens served.", ""]
    for study, title in (("gpu", "GPU choice (like the paper's Fig. 8): each model at the smallest TP that fits"),
                         ("tp", f"Tensor parallelism for {short(TP_MODEL)} (like the paper's Fig. 9)")):
        out += [f"## {title}", "",
                "| trace | model | GPU | TP | served (rejected) | g CO2e / 1k output tokens | J / output token | kWh | GPU idle share of GPU energy | GPUs busy | p99 TTFT (s) | p99 TPOT (ms) | preemptions |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["study"] != study:
                continue
            out.append(f"| {r['trace']} | {short(r['model'])} | {r['gpu']} | {r['tp']} | {r['requests']:,} ({r['rejected']:,}) | "
                       f"{r['g_per_1k_output_tokens']:.4f} | "
                       f"{r['j_per_output_token']:.3f} | {r['energy_kwh']:.2f} | {100 * r['gpu_idle_share']:.0f}% | "
                       f"{100 * r['busy_share']:.0f}% | {r['ttft_p99_s']:.2f} | {1e3 * (r['tpot_p99_s'] or 0):.1f} | "
                       f"{r['preemptions']} |")
        out.append("")
    if unfit:
        out += ["## Not replayed (do not fit in memory)", ""]
        seen = set()
        for u in unfit:
            key = (u["model"], u["gpu"], u.get("tp"))
            if key in seen:
                continue
            seen.add(key)
            out.append(f"- {short(u['model'])} on {u['gpu']}" + (f" TP {u['tp']}" if "tp" in u else "") + f": {u['reason']}")
        out.append("")
    out += ["## Reading", "", meta["reading"], ""]
    return "\n".join(out)


def reading(rows: list[dict]) -> str:
    lines = []
    for trace in TRACES:
        for model in MODELS:
            rs = [r for r in rows if r["study"] == "gpu" and r["trace"] == trace and r["model"] == model]
            if len(rs) < 2:
                continue
            best = min(rs, key=lambda r: r["g_per_1k_output_tokens"])
            worst = max(rs, key=lambda r: r["g_per_1k_output_tokens"])
            lines.append(f"- {trace}, {short(model)}: lowest carbon per token on {best['gpu']} (TP {best['tp']}), "
                         f"{best['g_per_1k_output_tokens']:.4f} g per 1k output tokens; highest on {worst['gpu']} "
                         f"(TP {worst['tp']}), {worst['g_per_1k_output_tokens']:.4f} g "
                         f"({worst['g_per_1k_output_tokens'] / best['g_per_1k_output_tokens']:.1f}x); GPU idle share "
                         f"{100 * best['gpu_idle_share']:.0f}% vs {100 * worst['gpu_idle_share']:.0f}%.")
        rs = sorted((r for r in rows if r["study"] == "tp" and r["trace"] == trace), key=lambda r: (r["gpu"], r["tp"]))
        for gpu in TP_GPUS:
            g = [r for r in rs if r["gpu"] == gpu]
            if len(g) >= 2:
                lines.append(f"- {trace}, {short(TP_MODEL)} on {gpu}: " + "; ".join(
                    f"TP {r['tp']}: {r['g_per_1k_output_tokens']:.4f} g/1k tokens, p99 TTFT {r['ttft_p99_s']:.2f} s"
                    for r in g) + ".")
    lines.append("- These are what the simulator and the predictor say for these traces at one replica per "
                 "configuration; the predictor is weakest on GPUs without training labels (see "
                 "benchmarks/results/accuracy.md), and step times come from its duration model.")
    return "\n".join(lines)


def plots(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(TRACES), figsize=(12, 4.5), sharey=False)
    for ax, trace in zip(axes, TRACES):
        x = np.arange(len(MODELS))
        w = 0.8 / len(GPUS)
        for j, gpu in enumerate(GPUS):
            ys = []
            for model in MODELS:
                r = [r for r in rows if r["study"] == "gpu" and r["trace"] == trace and r["model"] == model
                     and r["gpu"] == gpu]
                ys.append(r[0]["g_per_1k_output_tokens"] if r else np.nan)
            ax.bar(x + (j - (len(GPUS) - 1) / 2) * w, ys, w, label=gpu)
        ax.set_xticks(x, [short(m) for m in MODELS])
        ax.set_ylabel("gCO2e per 1,000 output tokens")
        ax.set_title(f"Azure 2023 {trace} trace")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("GPU choice (smallest TP that fits), simulated: engine simulator + predictor, not measured", fontsize=10)
    fig.tight_layout()
    fig.savefig(OUT / "case_studies_gpu.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for trace, marker in zip(TRACES, ("o", "s")):
        for gpu in TP_GPUS:
            rs = sorted((r for r in rows if r["study"] == "tp" and r["trace"] == trace and r["gpu"] == gpu),
                        key=lambda r: r["tp"])
            if not rs:
                continue
            tps = [r["tp"] for r in rs]
            axes[0].plot(tps, [r["g_per_1k_output_tokens"] for r in rs], marker=marker, label=f"{gpu}, {trace}")
            axes[1].plot(tps, [r["ttft_p99_s"] for r in rs], marker=marker, label=f"{gpu}, {trace}")
    for ax, yl in zip(axes, ("gCO2e per 1,000 output tokens", "p99 time to first token (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(TPS, [str(t) for t in TPS])
        ax.set_xlabel("tensor parallelism")
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{short(TP_MODEL)}: tensor parallelism, simulated (engine simulator + predictor), not measured",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(OUT / "case_studies_tp.png", dpi=110)
    plt.close(fig)


def main() -> int:
    global DATA
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--predictor", default="default", choices=("default", "roofline"))
    ap.add_argument("--minutes", type=float, default=None, help="replay only the first MINUTES of each trace "
                    "(default: all of it)")
    ap.add_argument("--trace-dir", type=Path, default=None, help=f"folder of AzureLLMInferenceTrace_conv.csv and "
                    f"_code.csv (default: $LLMCO2_AZURE_TRACE_DIR, else {DATA})")
    args = ap.parse_args()
    if args.trace_dir is not None:
        DATA = args.trace_dir
    from llmco2_sidecar.sim.replay import load_predictor

    predictor_name = load_predictor(args.predictor).name  # before the workers start
    runs, unfit = plan(args.predictor, args.minutes)
    print(f"{len(runs)} replays, {len(unfit)} configurations do not fit", file=sys.stderr)
    done = [0]
    t0 = time.perf_counter()

    def tick():
        done[0] += 1
        print(f"\r{done[0]} replays done, {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)

    unique = list(dict.fromkeys(s for _, _, s in runs))  # the TP study shares runs with the GPU study
    n_unique = len(unique)
    print(f"{n_unique} distinct simulations", file=sys.stderr)
    results = execute([Task(s, None) for s in unique], jobs=args.jobs, on_done=tick)
    print(file=sys.stderr)
    wall = time.perf_counter() - t0
    by_setup = {s: res[0] for s, res in zip(unique, results)}
    rows = [row(study, trace, by_setup[s]) for study, trace, s in runs]

    meta = {"command": "python benchmarks/case_studies.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, Python "
                       f"{platform.python_version()} (a shared 2-core VM, busy with other work)",
            "predictor": predictor_name, "jobs": args.jobs, "wall_s": wall, "minutes": args.minutes,
            "carbon": "world grid intensity 481 gCO2e/kWh (Ember 2023), PUE 1.58, embodied over 5 years"}
    meta["reading"] = reading(rows)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "case_studies.json").write_text(json.dumps({"meta": meta, "rows": rows, "does_not_fit": unfit}, indent=2) + "\n")
    (OUT / "case_studies.md").write_text(markdown(meta, rows, unfit))
    plots(rows)
    print(markdown(meta, rows, unfit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
