"""Held-out accuracy of every predictor on the same group splits, and the paper's Table 5 ablation.

Usage: python benchmarks/accuracy.py [--data DIR] [--data-v2 DIR|none] [--measurements DIR] [--epochs 150]
                                     [--seed 0] [--jobs 2] [--ablation]

Data: the ML.ENERGY v3 rows (vLLM 0.11.1 on H100 and B200) and v2 rows (vLLM 0.4.2 on A100-40GB and
H100) bundled under llmco2_sidecar/training_data/ (steady-state J per output token; each row rebuilt
as a weighted steady-state window, see llmco2_sidecar/predictor/window.py and mlenergy_v2.py) plus
data/measurements/*.csv when present. Splits: leave one source out (both directions), leave one GPU
kind out, leave one model family out, leave one model architecture out. Every learned predictor is
refitted per split on the training side only; GNN early stopping and every other choice use held-out
architectures inside the training side, never the test groups.

``--jobs N`` scores the splits in N worker processes (each one torch thread: on a shared 2-core
machine one thread per process is many times faster than torch's default of one per core).

Writes benchmarks/results/accuracy.md (tables), accuracy.json (all numbers) and the plots
accuracy_scatter.png (predicted vs measured, log-log, one colour per predictor) and
accuracy_mape.png (MAPE per held-out group).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmco2_sidecar.cli.train import BUNDLED_MLENERGY, BUNDLED_MLENERGY_V2, DEFAULT_EPOCHS  # noqa: E402
from llmco2_sidecar.predictor.evaluate import (CLIPPED, CLIPPED_CONDITIONS, OURS, SHAPE_GATED, WHOLE, Result, ablation_specs, evaluate, load_examples,  # noqa: E402
                                               make_splits, predictor_specs)
from llmco2_sidecar.predictor.shrink import parse_shrink_by  # noqa: E402
from llmco2_sidecar.predictor.window import STEP_TIMES  # noqa: E402

ABLATION_ORDER = [  # (label in Table 5 style, predictor name in the results)
    ("1 GNN (NNLQP-style)", "NNLQP (1 GNN)"),
    ("+ prefill/decode (2 GNN)", "+ prefill/decode (2 GNN)"),
    ("+ Roofline features (= paper's 2-GNN)", "LLMCO2 paper 2-GNN (no prior)"),
    ("+ targeted refinement", "+ targeted refinement"),
    ("+ physics prior, no refinement (ours, shipped)", OURS),
    ("+ physics prior + refinement", "+ physics prior + refinement"),
]


sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_report import dense_subset_json, dense_subset_lines, plots, shrink_lines, table, target_lines  # noqa: E402


_WORK = None  # (examples, feats, splits, seed, epochs, t0): inherited by the forked workers
_PREDICTORS = ""  # --predictors: inherited by the forked workers
_MOE_RECIPE = False  # --moe-recipe: inherited by the forked workers
_SHRINK = ((), None, 1, False)  # (--shrink-by kinds, --inner-epochs, --bag, --clip-variant): inherited by the forked workers


def _selected(specs: dict, prefixes: str) -> dict:
    """The predictors whose name starts with one of the comma-separated ``prefixes`` (all when empty)."""
    want = tuple(p.strip() for p in prefixes.split(",") if p.strip())
    if OURS.startswith(want):
        want += (WHOLE, CLIPPED, CLIPPED_CONDITIONS, SHAPE_GATED)  # ours' twins (--shrink-by, --clip-variant) come with ours
    return {n: v for n, v in specs.items() if not want or n.startswith(want)}


def _work(job: tuple[int, int, bool]) -> tuple[list[Result], dict]:
    import torch

    torch.set_num_threads(1)
    k, n, ablation = job
    examples, feats, splits, seed, epochs, t0 = _WORK
    if ablation:
        specs = {name: v for name, v in ablation_specs(epochs=epochs).items()
                 if name in ("+ prefill/decode (2 GNN)", "+ targeted refinement", "+ physics prior + refinement")}
    else:
        specs = _selected(predictor_specs(epochs=epochs, moe_recipe=_MOE_RECIPE, shrink_by=_SHRINK[0],
                                          inner_epochs=_SHRINK[1], bag=_SHRINK[2], clip_variant=_SHRINK[3],
                                          clip_inputs=_SHRINK[4], prior_on_all=_SHRINK[5]), _PREDICTORS)
    log = lambda msg: print(f"[{time.time() - t0:6.0f} s] worker {k}: {msg}", flush=True)  # noqa: E731
    return evaluate(examples, feats, splits[k::n], specs, seed=seed, progress=log)


def _run_parallel(specs: dict, n_splits: int, jobs: int, log, ablation: bool) -> tuple[list[Result], dict]:
    """Score the splits in ``jobs`` forked workers (split k goes to worker k mod jobs); results come
    back in the splits' order."""
    jobs = max(1, min(jobs, n_splits))
    work = [(k, jobs, ablation) for k in range(jobs)]
    if jobs == 1:
        parts = [_work(work[0])]
    else:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            parts = pool.map(_work, work)
    split_order = {s.name: i for i, s in enumerate(_WORK[2])}
    results = sorted((r for p in parts for r in p[0]), key=lambda r: split_order[r.split])
    points: dict = {}
    for p in parts:
        for name, d in p[1].items():
            cur = points.setdefault(name, {"pred": [], "true": [], "split": [], "idx": []})
            for key in cur:
                cur[key].append(d[key])
    points = {n: {k: np.concatenate(v) for k, v in d.items()} for n, d in points.items()}
    return results, points


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(BUNDLED_MLENERGY), help="ML.ENERGY v3 folder (default: bundled)")
    ap.add_argument("--data-v2", default=str(BUNDLED_MLENERGY_V2), help="ML.ENERGY v2 folder (default: bundled; 'none')")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes over the splits (default 2)")
    ap.add_argument("--dense-only", action="store_true", help="leave the mixture-of-experts rows out (the shipped model's data)")
    ap.add_argument("--splits", default="", help="only the splits whose name starts with one of these comma-separated "
                    "prefixes, e.g. 'family=gpt-oss,precision=' (default: all)")
    ap.add_argument("--measurements", default=str(ROOT / "data" / "measurements"))
    ap.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--moe-recipe", action="store_true", help="ours and the prior alone with the MoE recipe's switches "
                    "(soft power window; prior design and GNN residual scale/bound chosen on the training side); default: "
                    "the shipped dense recipe")
    ap.add_argument("--shrink-by", default="", help="ours keeps the share of its GNN residual over the prior chosen on "
                    "inner folds of each split's training side that leave one GPU kind ('gpu'), one source ('source'), one "
                    "model family ('family') or one architecture ('model') out, or any of them ('gpu,source') "
                    "(predictor/shrink.py); adds the column '" + WHOLE + "' (the same fits, "
                    "residual whole). Default: none (the shipped recipe)")
    ap.add_argument("--inner-epochs", type=int, default=None, help="epochs of the inner fits of --shrink-by "
                    "(default: --epochs)")
    ap.add_argument("--bag", type=int, default=1, help="ours' ensemble trains each HYPER_GRID point from this many "
                    "initialisations (torch seeds) and averages them all (default 1: the shipped recipe's two members)")
    ap.add_argument("--predictors", default="", help="only the predictors whose name starts with one of these "
                    "comma-separated prefixes, e.g. 'llmco2-gnn,physics prior' (default: all; the others' figures on the "
                    "same splits then come from another run, which the output must name)")
    ap.add_argument("--prefix", default="accuracy", help="output file names: PREFIX.md, PREFIX.json, PREFIX_scatter.png, "
                    "PREFIX_mape.png (default accuracy; the dense + MoE recipe's run: accuracy_moe)")
    ap.add_argument("--clip-variant", action="store_true", help="adds the columns '" + CLIPPED + "': ours' same fits "
                    "with the GNN's global inputs clipped to each split's training range (ModelState.clip_inputs), and '"
                    + CLIPPED_CONDITIONS + "': only the GPU and engine inputs clipped (predictor/dataset.py CONDITION_GLOBALS)")
    ap.add_argument("--clip-inputs", action="store_true", help="ours fitted as the shipped dense model is: its GNN's "
                    "global inputs clipped to each split's training range (llmco2 train --clip-inputs), its inner folds "
                    "(--shrink-by) scored that way too")
    ap.add_argument("--prior-on-all", action="store_true", help="ours' physics prior fitted on the whole training "
                    "side, its early-stopping architectures included (default: the networks' rows only, as shipped)")
    ap.add_argument("--step-times", choices=STEP_TIMES, default="uniform", help="how each ML.ENERGY window's steps share "
                    "the row's mean step time: 'uniform' (the shipped models' data) or 'roofline' (each step its Roofline "
                    "time plus the window's constant overhead: predictor/window.py spread_step_times) or 'kernel' (the "
                    "same from each step's kernel time)")
    ap.add_argument("--ablation", action="store_true", help="also score the paper's Table 5 ablation (3 more GNN variants)")
    args = ap.parse_args()
    try:
        shrink_by = parse_shrink_by(args.shrink_by)
    except ValueError as exc:
        print(f"accuracy.py: --shrink-by: {exc}", file=sys.stderr)
        return 2
    if args.bag < 1:
        print(f"accuracy.py: --bag: must be positive, got {args.bag}", file=sys.stderr)
        return 2
    if args.inner_epochs is not None and args.inner_epochs < 1:
        print(f"accuracy.py: --inner-epochs: must be positive, got {args.inner_epochs}", file=sys.stderr)
        return 2
    t0 = time.time()
    load0 = os.getloadavg()[0]
    meas = args.measurements if Path(args.measurements).is_dir() else None
    v2 = None if str(args.data_v2).lower() == "none" else args.data_v2
    examples, feats, skipped = load_examples(args.data, meas, seed=args.seed, v2_dir=v2, step_times=args.step_times)
    if args.dense_only:
        keep = [i for i, e in enumerate(examples) if not e.meta.get("moe")]
        skipped.update({examples[i].key: "mixture of experts (--dense-only)" for i in set(range(len(examples))) - set(keep)})
        examples, feats = [examples[i] for i in keep], [feats[i] for i in keep]
    splits = make_splits(examples)
    if args.splits:
        splits = [s for s in splits if s.name.startswith(tuple(p.strip() for p in args.splits.split(",") if p.strip()))]
    specs = _selected(predictor_specs(epochs=args.epochs, moe_recipe=args.moe_recipe, shrink_by=shrink_by,
                                      inner_epochs=args.inner_epochs, bag=args.bag, clip_variant=args.clip_variant,
                                      clip_inputs=args.clip_inputs, prior_on_all=args.prior_on_all),
                      args.predictors)
    if not specs:
        print(f"accuracy.py: predictors: none starts with {args.predictors!r}", file=sys.stderr)
        return 2
    log = lambda msg: print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)  # noqa: E731
    global _WORK, _PREDICTORS, _MOE_RECIPE, _SHRINK
    _PREDICTORS, _MOE_RECIPE, _SHRINK = args.predictors, args.moe_recipe, (shrink_by, args.inner_epochs, args.bag,
                                                                           args.clip_variant, args.clip_inputs,
                                                                           args.prior_on_all)
    _WORK = (examples, feats, splits, args.seed, args.epochs, t0)
    results, points = _run_parallel(specs, len(splits), args.jobs, log, ablation=False)
    names = list(specs)
    abl_results: list[Result] = []
    if args.ablation:
        abl_results, _ = _run_parallel(specs, len(splits), args.jobs, log, ablation=True)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    sources = sorted({e.source for e in examples})
    by = {(r.split, r.predictor): r for r in results}
    split_names = list(dict.fromkeys(r.split for r in results))
    lead = OURS if OURS in names else names[0]  # a --predictors run without ours: the first one it ran
    wins = [s for s in split_names if all(by[(s, lead)].mape < by[(s, n)].mape for n in names if n not in (lead, WHOLE, CLIPPED, CLIPPED_CONDITIONS, SHAPE_GATED))]
    wall = time.time() - t0
    counts = {}
    for e in examples:
        counts[(e.source, e.gpu)] = counts.get((e.source, e.gpu), 0) + 1
    count_txt = ", ".join(f"{n} {src} on {g}" for (src, g), n in sorted(counts.items()))
    targets = target_lines(results, points, lead)
    dense_lines = dense_subset_lines(examples, points, names)
    cmd = f"python benchmarks/accuracy.py --epochs {args.epochs} --seed {args.seed} --jobs {args.jobs}" + (
        " --dense-only" if args.dense_only else "") + (
        f" --splits '{args.splits}'" if args.splits else "") + (
        f" --prefix {args.prefix}" if args.prefix != "accuracy" else "") + (
        f" --predictors '{args.predictors}'" if args.predictors else "") + (" --moe-recipe" if args.moe_recipe else "") + (
        f" --shrink-by {','.join(shrink_by)}" if shrink_by else "") + (
        f" --inner-epochs {args.inner_epochs}" if args.inner_epochs else "") + (f" --bag {args.bag}" if args.bag > 1 else "") + (
        " --clip-variant" if args.clip_variant else "") + (" --clip-inputs" if args.clip_inputs else "") + (
        " --prior-on-all" if args.prior_on_all else "") + (
        f" --step-times {args.step_times}" if args.step_times != "uniform" else "")
    lines = [
        "# Predictor accuracy on held-out groups", "",
        f"Command: `{cmd}` ({wall:.0f} s wall on this project's 2-core CPU VM, shared with other jobs at the time: "
        f"1-min load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end).",
        "",
        f"Data: {len(examples)} examples ({count_txt}). mlenergy-v3: ML.ENERGY leaderboard v3, vLLM 0.11.1, "
        "steady-state GPU J per output token, 1-8 GPUs; mlenergy-v2: ML.ENERGY leaderboard v2, vLLM 0.4.2, chat task, "
        "TP 1-8, the measured time per output token as the step duration. Models with a bundled architecture; "
        "each row rebuilt as a weighted steady-state window. Metric unit: J per output token. "
        f"{len(skipped)} rows of the bundled files left out ({'; '.join(sorted(set(skipped.values())))}); "
        "the bundled copies' SOURCE.md files list what was not copied.",
        "Splits: `source` trains on one source and tests on the other (both directions); `gpu=X` leaves one GPU kind "
        "out (train on the others, any source); `family=` and `model=` leave a model family or architecture out (a family "
        "with a single architecture is scored once, as `model=`). Every GNN variant (ours and the GNN baselines) is the "
        "same two-member ensemble over `HYPER_GRID` (predictor/training.py), each member early-stopped on held-out "
        "architectures inside the training side; the physics prior's design (datasheet-scaled terms, busy-time multiples, "
        "coefficient bounds) was chosen before this run, and no choice ever used a test group."
        + (" MoE recipe (`--moe-recipe`): ours keeps the power window inside the model (a soft window at 0.98 x the power "
           "limit and above idle, trained through) and keeps `scale x clip(residual, -bound, bound)` of the GNN's "
           "log-residual over the prior, scale and bound chosen per split on the same validation architectures "
           "(`training.choose_shrink`); ours and the prior alone choose the prior's design (one fit over every row, or the "
           "16-bit physics from 16-bit rows plus low-precision busy terms) by inner leave-one-architecture-out on the "
           "training side; the GNN baselines are unchanged." if args.moe_recipe else "")
        + (f" Ours with `--bag {args.bag}`: each `HYPER_GRID` point trained from {args.bag} initialisations (torch seeds), "
           f"all {2 * args.bag} members averaged; the GNN baselines keep two members." if args.bag > 1 else ""),
        "",
        *([f"Only {', '.join(names)} ran here (`--predictors`); the other predictors on the same splits come from a "
           "full run, named where these figures are used.", ""] if args.predictors else []),
        "## Targets (issues 14 and 15) for " + lead, "", *targets, "",
        f"**{lead} beats every other predictor's MAPE on {len(wins)} of {len(split_names)} held-out groups**"
        + (f" (not on: {', '.join(s for s in split_names if s not in wins)})." if len(wins) < len(split_names) else "."),
        *dense_lines,
        *shrink_lines(results, shrink_by, args.inner_epochs or args.epochs),
        "", "## MAPE % (lower is better; best per row in bold)", "", *table(results, names, "mape"),
        "", "## EBA(10%) % (share within 10%)", "", *table(results, names, "eba10"),
        "", "## EBA(30%) % (share within 30%)", "", *table(results, names, "eba30"),
    ]
    if abl_results:
        allr = {(r.split, r.predictor): r for r in results + abl_results}
        lines += ["", "## Ablation (paper Table 5 steps; mean over the held-out groups above)", "",
                  "| variant | MAPE % | EBA(10%) % | EBA(30%) % |", "|---|---|---|---|"]
        for label, name in ABLATION_ORDER:
            rs = [allr[(s, name)] for s in split_names if (s, name) in allr]
            if rs:
                lines.append(f"| {label} | {np.mean([r.mape for r in rs]):.1f} | {np.mean([r.eba10 for r in rs]):.1f} | "
                             f"{np.mean([r.eba30 for r in rs]):.1f} |")
        lines += ["", "Targeted refinement here re-weights the worst-predicted *training* rows (no new labels exist); "
                  "the real targeted sampling is the next measurement plan, `data/measurements/next_plan.csv`."]
    lines += ["", f"Plots: `{args.prefix}_scatter.png` (predicted vs measured, log-log), `{args.prefix}_mape.png` (MAPE per group)."]
    if not abl_results:
        lines += ["", "The paper's Table 5 ablation was not rerun with the two sources (`--ablation` adds it: three "
                  "more GNN variants per split)."]
    (out / f"{args.prefix}.md").write_text("\n".join(lines) + "\n")
    (out / f"{args.prefix}.json").write_text(json.dumps({
        "command": cmd, "wall_s": wall,
        "n_examples": len(examples), "sources": sources, "skipped_rows": len(skipped),
        "results": [r.__dict__ for r in results], "ablation": [r.__dict__ for r in abl_results],
        "dense_rows_of_mixed_groups": dense_subset_json(examples, points, names),
        "predictions": {n: {"split": p["split"].tolist(), "example": [examples[i].key for i in p["idx"]],
                            "pred": np.round(p["pred"], 6).tolist(), "true": np.round(p["true"], 6).tolist()}
                        for n, p in points.items()},
    }, indent=1) + "\n")
    plots(points, results, names, out, args.prefix)
    log(f"wrote {out / (args.prefix + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
