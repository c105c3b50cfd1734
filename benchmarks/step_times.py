"""How long the duration model says a step takes, against measured step times it did and did not train on.

Usage: python benchmarks/step_times.py [--seed 0] [--out-dir benchmarks/results] [--measurements data/measurements]

Where a step's wall time is not observed (``llmco2 replay``, ``llmco2 whatif``, ``llmco2 estimate``, the
demo), the duration model supplies it (:class:`~llmco2_sidecar.predictor.prior.DurationModel`), and the
simulated latencies and the idle share of the energy follow from it. The live sidecar reads the engine's
own step times and does not use it. Three parts, two bases of the model:

* ``roofline``: the step's Roofline time plus fitted non-negative overheads (per Roofline second, per step,
  per request), the shipped models' until 2026-12-07;
* ``kernel``: the same overheads on top of the Roofline time with its compute-bound kernels stretched to the
  GPU's measured GEMM compute efficiency (:mod:`llmco2_sidecar.hardware.kernel_efficiency`; Vidur's
  profiles), the shipped models' since.

1. **GEMM efficiency** per GPU and regime (``data/vidur_gemm/``): the compute-bound figure the ``kernel``
   base uses, and the memory-bound and in-between GEMMs' beside it.
2. **ML.ENERGY, held out**: each row's mean step time (v3: vLLM 0.11.1; v2: vLLM 0.4.2, its measured time
   per output token) against the model fitted on the training side of every group split of
   ``benchmarks/accuracy.py`` (the fit takes the newest engine's rows where the training side has any, as
   the shipped fit does, so a v2 test row measures the older engine's extra overhead too).
3. **SplitwiseSim, never trained on** (``data/splitwise/``): Llama-2-70B on DGX-A100 (80 GB) and DGX-H100,
   TP 2, 4, 8: the measured prefill latency of a static batch (one step of batch x prompt tokens) and the
   time per output token (a decode step at the middle of the output), median of 5 repetitions, against the
   model fitted on every v3 row (as shipped). Splitwise's engine is its authors' 2023 setup, not today's
   vLLM: its decode steps carry that engine's overhead, its prefill is compute-bound and engine-light.

4. **ML.ENERGY v3's inter-token latency quantiles** (dense rows, in sample): the median, p90 and p99 ITL each
   row publishes against the same quantiles of the duration model's steps over the row's window (weighted by
   the decode requests in each step: what a request's token gaps see), and of the training windows' own step
   times (Roofline time plus a constant, spread to the measured mean). The p99 gaps are the steps that carry
   a prefill chunk: the one direct timing of prefill work in today's vLLM any training source has.

5. **The project's own measured batches** (``data/measurements/*.csv``, from ``llmco2 profile`` on a lent GPU):
   measured prefill and decode step times against the duration model; empty until a session has a GPU.

Writes step_times.md and .json. No network is trained (each fit is a non-negative least squares, a
fraction of a second).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from llmco2_sidecar.predictor.prior import DURATION_BASES, DurationModel  # noqa: E402
from step_times_itl import QUANTILES, itl_grid, itl_part, own_part  # noqa: E402  (parts 4 and 5)

RESULTS = ROOT / "benchmarks" / "results"
SPLITWISE = ROOT / "data" / "splitwise" / "perf_model.csv"
GEMM_TIMES = ROOT / "data" / "vidur_gemm" / "gemm_times.csv"
SPLITWISE_GPUS = {"a100-80gb": "A100-SXM4-80GB", "h100-80gb": "H100-SXM5-80GB"}
SPLITWISE_MODEL = "meta-llama/Llama-2-70b-hf"


def _stats(pred: np.ndarray, obs: np.ndarray) -> dict:
    err = np.asarray(pred, dtype=np.float64) / np.asarray(obs, dtype=np.float64) - 1.0
    return {"n": int(err.size), "mape": float(np.mean(np.abs(err)) * 100), "bias": float(np.median(err) * 100),
            "median_ape": float(np.median(np.abs(err)) * 100)}


def fitted(feats, examples, idx, base: str) -> DurationModel:
    from llmco2_sidecar.predictor.training import fit_duration

    return fit_duration(feats, examples, np.asarray(idx), base)


def example_predictions(feats, examples, model: DurationModel) -> tuple[np.ndarray, np.ndarray]:
    """Each example's predicted and observed mean step time (probability-weighted over its window)."""
    from llmco2_sidecar.predictor.dataset import example_duration_terms

    a, y = example_duration_terms(feats, examples, model)
    return a[:, 0] + a @ np.maximum(model.coef, 0.0), y


def mlenergy_part(feats, examples) -> dict:
    from llmco2_sidecar.predictor.evaluate import make_splits

    src = np.array([e.source for e in examples])
    dense = np.array([not e.meta.get("moe") for e in examples])
    out = {"in_sample": [], "splits": []}
    for rows, idx in (("dense rows (the dense model's fit)", np.flatnonzero(dense)),
                      ("all rows (the MoE model's fit)", np.arange(len(examples)))):
        for base in DURATION_BASES:
            model = fitted(feats, examples, idx, base)
            pred, obs = example_predictions([feats[i] for i in idx], [examples[i] for i in idx], model)
            out["in_sample"].append({"rows": rows, "base": base, "coef": model.coef.tolist(),
                                     **{s: _stats(pred[src[idx] == s], obs[src[idx] == s]) for s in sorted(set(src))}})
    for split in make_splits(examples):
        row = {"split": split.name, "n": int(len(split.test))}
        test = list(split.test)
        for base in DURATION_BASES:
            model = fitted(feats, examples, split.train, base)
            pred, obs = example_predictions([feats[i] for i in test], [examples[i] for i in test], model)
            row[base] = _stats(pred, obs)
        out["splits"].append(row)
    return out


def splitwise_rows(path: Path = SPLITWISE) -> list[dict]:
    """Median prefill and per-token times (s) per Llama-2-70B configuration on the two catalog GPUs."""
    groups = defaultdict(list)
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["model"] != "llama2-70b" or r["hardware"] not in SPLITWISE_GPUS:
                continue
            key = (r["hardware"], int(r["tensor_parallel"]), int(r["prompt_size"]), int(r["batch_size"]), int(r["token_size"]))
            groups[key].append((float(r["prompt_time"]), float(r["token_time"])))
    rows = []
    for (hw, tp, prompt, batch, out), reps in sorted(groups.items()):
        rows.append({"gpu": SPLITWISE_GPUS[hw], "tp": tp, "prompt": prompt, "batch": batch, "output": out,
                     "prefill_s": statistics.median(p for p, _ in reps) / 1e3,
                     "tpot_s": statistics.median(t for _, t in reps) / 1e3, "reps": len(reps)})
    return rows


def predict_step_s(model: DurationModel, dep, context: int, new: int, batch: int) -> tuple[float, float]:
    """``(predicted, Roofline)`` time of one step of ``batch`` equal slices."""
    from llmco2_sidecar.graph.step_time import step_roofline_s
    from llmco2_sidecar.workload import StepBatch

    steps = StepBatch.from_steps([[(context, new)] * batch])
    return float(model.predict_steps_s(dep, steps)[0]), float(step_roofline_s(dep, steps)[0][0])


def splitwise_part(models: dict[str, DurationModel], rows: list[dict]) -> dict:
    from llmco2_sidecar.hardware import load_gpu
    from llmco2_sidecar.models import load_model
    from llmco2_sidecar.predictor.api import Deployment
    from llmco2_sidecar.workload import Parallelism

    spec = load_model(SPLITWISE_MODEL)
    per_row = []
    for r in rows:
        dep = Deployment(spec, load_gpu(r["gpu"]), Parallelism(tp=r["tp"]))
        rec = dict(r)
        for base, model in models.items():
            rec[f"prefill_{base}_s"], rec["prefill_roofline_only_s"] = predict_step_s(model, dep, 0, r["prompt"], r["batch"])
            rec[f"tpot_{base}_s"], rec["tpot_roofline_only_s"] = predict_step_s(
                model, dep, r["prompt"] + r["output"] // 2, 1, r["batch"])
        per_row.append(rec)
    summary = {}
    for phase in ("prefill", "tpot"):
        for gpu in sorted({r["gpu"] for r in per_row}) + ["all"]:
            sel = [r for r in per_row if gpu in ("all", r["gpu"])]
            obs = np.array([r[f"{phase}_s"] for r in sel])
            cell = {"Roofline alone": _stats(np.array([r[f"{phase}_roofline_only_s"] for r in sel]), obs)}
            for base in models:
                cell[base] = _stats(np.array([r[f"{phase}_{base}_s"] for r in sel]), obs)
            summary[f"{phase}|{gpu}"] = cell
    return {"rows": per_row, "summary": summary}


def render(r: dict) -> str:
    lines = ["# Step times: the duration model against measured step times", "",
             f"Command: `{r['command']}` ({r['date']}; {r['wall_s']:.0f} s on {r['machine']}). Data: the {r['n_examples']} "
             "bundled training rows (ML.ENERGY v3 and v2, dense and MoE, each rebuilt as its steady-state window, seed "
             f"{r['seed']}, step times spread by Roofline time), Vidur's GEMM profiles (`data/vidur_gemm/`) and SplitwiseSim's "
             "latencies (`data/splitwise/`, never trained on). The duration model supplies step times only where none is "
             "observed (replay, what-if, estimate, the demo); the live sidecar reads the engine's.", "",
             "Bases: `roofline` = Roofline time + fitted overheads (the models before 2026-12-07); `kernel` = Roofline time "
             "with its compute-bound kernels at the GPU's measured GEMM compute efficiency + fitted overheads (the shipped "
             "models since). MAPE % and median signed error % (bias; negative: predicted too short).", "",
             "## 1. GEMM efficiency (Vidur's profiles: the bounding Roofline time / the measured time of each GEMM)", "",
             "Median (quartiles), GEMMs by regime (compute-bound: compute time >= 2 x memory time; memory-bound: the "
             "reverse; between: neither). The `kernel` base stretches compute-bound kernels by 1 / the compute-bound figure.", "",
             "| GPU | figure used | compute-bound | memory-bound | between |", "|---|---|---|---|---|"]
    for gpu, d in r["gemm"].items():
        cells = []
        for regime in ("compute", "memory", "between"):
            b = d["regimes"].get(regime)
            cells.append("-" if b is None else f"{b['median']:.2f} ({b['q25']:.2f}-{b['q75']:.2f}), {b['points']} GEMMs")
        lines.append(f"| {gpu} | {d['efficiency']:.2f} | " + " | ".join(cells) + " |")
    srcs = sorted(k for k in r["mlenergy"]["in_sample"][0] if k.startswith("mlenergy"))
    lines += ["", "Other GPUs take a measured GPU's figure (same architecture) or their mean, flagged ASSUMED "
              "(`llmco2_sidecar/hardware/gemm_efficiency.csv`, `kernel_efficiency.efficiency_source`).", "",
              "## 2. ML.ENERGY mean step time", "",
              "Fitted on every row of the kind each shipped model trains on (the fit keeps the newest engine's rows, v3):", "",
              "| rows | base | fitted (k, t0 s, t_req s) | " + " | ".join(srcs) + " |", "|---|---|---|" + "---|" * len(srcs)]
    for d in r["mlenergy"]["in_sample"]:
        lines.append(f"| {d['rows']} | {d['base']} | {', '.join(f'{c:.3g}' for c in d['coef'])} | "
                     + " | ".join(f"{d[s]['mape']:.1f} ({d[s]['bias']:+.1f}), n {d[s]['n']}" for s in srcs) + " |")
    lines += ["", "Held out (fitted on each split's training side):", "",
              "| held-out group | n | " + " | ".join(DURATION_BASES) + " |", "|---|---|" + "---|" * len(DURATION_BASES)]
    for row in r["mlenergy"]["splits"]:
        lines.append(f"| {row['split']} | {row['n']} | " + " | ".join(f"{row[b]['mape']:.1f} ({row[b]['bias']:+.1f})" for b in DURATION_BASES) + " |")
    means = {b: np.mean([row[b]["mape"] for row in r["mlenergy"]["splits"]]) for b in DURATION_BASES}
    lines.append("| mean over groups | | " + " | ".join(f"{means[b]:.1f}" for b in DURATION_BASES) + " |")
    sw = r["splitwise"]["summary"]
    cols = ["Roofline alone"] + list(DURATION_BASES)
    lines += ["", "## 3. SplitwiseSim (Llama-2-70B, TP 2/4/8; never trained on)", "",
              "The dense model's duration fit (dense v3 rows) of each base, and the Roofline time alone. MAPE % "
              "(median signed error %) [median absolute error %]:", "",
              "| phase | GPU | n | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for key, cell in sw.items():
        phase, gpu = key.split("|")
        name = "prefill (batch x prompt, one step)" if phase == "prefill" else "time per output token"
        lines.append(f"| {name} | {gpu} | {cell[cols[0]]['n']} | " + " | ".join(
            f"{cell[c]['mape']:.1f} ({cell[c]['bias']:+.1f}) [{cell[c]['median_ape']:.1f}]" for c in cols) + " |")
    odd = [x for x in r["splitwise"]["rows"] if x["prefill_kernel_s"] > 2 * x["prefill_s"]]
    if odd:
        lines += ["", "Rows the model puts at more than twice the measured prefill (kept in the figures): " + "; ".join(
            f"{x['gpu']} TP{x['tp']} batch {x['batch']} x {x['prompt']} tokens: measured {x['prefill_s'] * 1e3:.0f} ms, "
            f"`kernel` {x['prefill_kernel_s'] * 1e3:.0f} ms" for x in odd)
            + " (the same configuration at half the batch measured "
            + "; ".join(f"{_half_batch(r, x) * 1e3:.0f} ms" for x in odd) + ": a recording slip in the source, not a fast kernel)."]
    it = r["itl"]
    lines += ["", "## 4. ML.ENERGY v3 inter-token latency quantiles (dense rows, in sample)", "",
              f"{it['n']} rows. Each row's published median, p90 and p99 ITL against the same quantiles of the steps of "
              "its window, weighted by their decode requests; `training window`: the windows' own step times (Roofline "
              "time + a constant, spread to the measured mean), what the energy model trains on; `kernel spread`: the "
              "same spread from each step's kernel time (`--step-times kernel`), tried and not used: its p99 comes closer "
              "in the median but every quantile's MAPE is worse. MAPE % (median signed error %). The p99 gaps are the "
              "steps that carry a prefill chunk.", "",
              "| steps from | " + " | ".join(label for label, _ in QUANTILES) + " |", "|---|" + "---|" * len(QUANTILES)]
    for name, cells in it["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{cells[label]['mape']:.1f} ({cells[label]['bias']:+.1f})"
                                               for label, _ in QUANTILES) + " |")
    labels = [q for q, _ in QUANTILES] + ["mean"]
    lines += ["", "One compute-bound efficiency for every GPU, the overheads refitted without the held-out architecture "
              "(leave-one-architecture-out over the same rows), MAPE % (median signed error %): what these token gaps "
              "would choose if the efficiency were fitted to them.", "",
              "| efficiency | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for g in r["itl_grid"]:
        lines.append(f"| {g['efficiency']:.1f} | " + " | ".join(f"{g[k]['mape']:.1f} ({g[k]['bias']:+.1f})" for k in labels) + " |")
    own = r["own"]
    lines += ["", "## 5. The project's own measured batches (`data/measurements/`, a lent GPU)", ""]
    if not own["rows"]:
        lines.append(own.get("error") or f"None yet ({own['n']} measured batches): no session with a GPU has run the "
                     "profiling harness. Once one has, this part compares each batch's measured prefill and decode step "
                     "times with the duration model, the question part 4 leaves open.")
    else:
        cols = sorted({c for cells in own["rows"].values() for c in cells})
        lines += [f"{own['n']} measured batches (HF transformers eager on the lent GPU, not vLLM). MAPE % (median signed "
                  "error %):", "", "| phase | GPU | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for key, cells in own["rows"].items():
            head, gpu = key.split("|")
            lines.append(f"| {head} | {gpu} | " + " | ".join(
                f"{cells[c]['mape']:.1f} ({cells[c]['bias']:+.1f}), n {cells[c]['n']}" if c in cells else "-" for c in cols) + " |")
    lines += ["", r["reading"], ""]
    return "\n".join(lines)


def _half_batch(r: dict, x: dict) -> float:
    for y in r["splitwise"]["rows"]:
        if (y["gpu"], y["tp"], y["prompt"], y["output"], y["batch"]) == (x["gpu"], x["tp"], x["prompt"], x["output"], x["batch"] // 2):
            return y["prefill_s"]
    return float("nan")


def reading(r: dict) -> str:
    sw = r["splitwise"]["summary"]
    pre, tpot = sw["prefill|all"], sw["tpot|all"]
    ins = {d["base"]: d for d in r["mlenergy"]["in_sample"] if d["rows"].startswith("dense")}
    v3 = {b: ins[b]["mlenergy-v3"]["mape"] for b in ins}
    means = {b: float(np.mean([row[b]["mape"] for row in r["mlenergy"]["splits"]])) for b in DURATION_BASES}
    it = r["itl"]["rows"]
    best = min(r["itl_grid"], key=lambda g: np.mean([g[q]["mape"] for q, _ in QUANTILES]))["efficiency"]
    return ("Reading: the `kernel` base buys realistic prefill at a small cost on the training engine's decode steps. "
            f"Prefill on SplitwiseSim (never trained on): median error {pre['roofline']['bias']:+.0f}% with `roofline`, "
            f"{pre['kernel']['bias']:+.0f}% with `kernel` (MAPE {pre['roofline']['mape']:.0f} -> {pre['kernel']['mape']:.0f}%); "
            "still short, as Splitwise's 2023 stack ran prefill slower than Vidur's GEMMs (the H100 most). ML.ENERGY v3's "
            f"dense rows in sample: {v3['roofline']:.1f} -> {v3['kernel']:.1f}% MAPE, worse: its mean step times are "
            "decode-dominated and the fit had absorbed kernel inefficiency into a per-step constant; held out, the mean "
            f"over groups {means['roofline']:.1f} -> {means['kernel']:.1f}%. Per-token decode on SplitwiseSim "
            f"({tpot['kernel']['bias']:+.0f}% with either base) and every v2 row (vLLM 0.4.2, about -70%) are slower "
            "engines than the v3 fit describes: the duration model describes today's vLLM, and even there a mean "
            f"step time is off by about {v3['kernel']:.0f}%. Today's vLLM's own token gaps (part 4) split the same way: "
            f"the p99 gaps, steps carrying a prefill chunk, {it['roofline']['p99']['bias']:+.0f}% -> "
            f"{it['kernel']['p99']['bias']:+.0f}% (median error), the p50 and p90 further off (MAPE "
            f"{it['roofline']['p50']['mape']:.0f} -> {it['kernel']['p50']['mape']:.0f}%, {it['roofline']['p90']['mape']:.0f} -> "
            f"{it['kernel']['p90']['mape']:.0f}%): both bases leave prefill-carrying steps short. Fitted to those gaps, "
            f"the efficiency would be {best:.1f}: held out, MAPE rises at every quantile as it falls, only the p99's "
            "median error improves. The `kernel` base stands on the kernels' own measurement (Vidur) and the independent "
            "prefill check (SplitwiseSim) against this evidence from the training engine, whose windows' prefill work is "
            "synthetic (prompts from each task's mean with the Azure trace's spread, no prefix caching). Treat replayed "
            "TTFT and TPOT as estimates within tens of percent, not measurements; where an engine's step times are known, "
            "the live sidecar uses them.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="seed of the steady-state windows (default 0)")
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--measurements", default=str(ROOT / "data" / "measurements"),
                    help="the project's own measured batches (part 5; default data/measurements)")
    args = ap.parse_args(argv)
    from llmco2_sidecar.cli.train import BUNDLED_MLENERGY, BUNDLED_MLENERGY_V2
    from llmco2_sidecar.hardware.kernel_efficiency import derive
    from llmco2_sidecar.predictor.evaluate import load_examples

    t0, load = time.time(), os.getloadavg()[0]
    print("loading the training rows ...", file=sys.stderr)
    examples, feats, _ = load_examples(BUNDLED_MLENERGY, None, seed=args.seed, v2_dir=BUNDLED_MLENERGY_V2,
                                       step_times="roofline")
    print("GEMM efficiency ...", file=sys.stderr)
    gemm = derive(GEMM_TIMES)
    print("ML.ENERGY splits ...", file=sys.stderr)
    ml = mlenergy_part(feats, examples)
    print("SplitwiseSim ...", file=sys.stderr)
    dense = np.array([i for i, e in enumerate(examples) if not e.meta.get("moe")])
    models = {b: fitted(feats, examples, dense, b) for b in DURATION_BASES}
    sw = splitwise_part(models, splitwise_rows())
    print("ML.ENERGY v3 ITL quantiles ...", file=sys.stderr)
    itl = itl_part(feats, examples, models, Path(BUNDLED_MLENERGY))
    # the windows spread from kernel times instead (`--step-times kernel`; tried, not used by either model)
    k_examples, k_feats, _ = load_examples(BUNDLED_MLENERGY, None, seed=args.seed, v2_dir=BUNDLED_MLENERGY_V2,
                                           step_times="kernel")
    itl["rows"]["training window, kernel spread (not used)"] = \
        itl_part(k_feats, k_examples, {}, Path(BUNDLED_MLENERGY))["rows"]["training window"]
    r = {"command": "python benchmarks/step_times.py" + (f" --seed {args.seed}" if args.seed else ""),
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seed": args.seed, "n_examples": len(examples),
         "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()} (1-min load {load:.2f})",
         "gemm": gemm,
         "mlenergy": ml, "splitwise": sw, "itl": itl, "itl_grid": itl_grid(feats, examples, Path(BUNDLED_MLENERGY)),
         "own": own_part(Path(args.measurements), models)}
    r["wall_s"] = time.time() - t0
    r["reading"] = reading(r)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_times.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / "step_times.md").write_text(render(r))
    print(f"wrote {out / 'step_times.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
