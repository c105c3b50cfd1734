"""``llmco2 train``: measured data -> the 2-GNN model file and a training report.

Reads the ML.ENERGY v3 model files (default: the copies bundled under
``llmco2_sidecar/training_data/``) and, when CSV files exist there, the project's own per-batch
measurements (``--measurements``, default ``data/measurements``). Writes ``--out`` (.safetensors +
.json) and a Markdown report beside it (data used, rows left out and why, coefficients, held-out
scores of the same recipe per group unless ``--no-heldout``). Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..errors import InputError

#: how the training report names each duration base (predictor.prior.DURATION_BASES)
_BASE_WORDS = {"kernel": "the Roofline time, its compute-bound kernels at the GPU's measured GEMM efficiency",
               "roofline": "the Roofline time"}
BUNDLED_MLENERGY = Path(__file__).resolve().parent.parent / "training_data" / "mlenergy_leaderboard_v3"
BUNDLED_MLENERGY_V2 = Path(__file__).resolve().parent.parent / "training_data" / "mlenergy_leaderboard_v2"
DEFAULT_EPOCHS = 150


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(BUNDLED_MLENERGY), help="ML.ENERGY v3 folder (models/*.json); default: the bundled copy")
    p.add_argument("--data-v2", default=str(BUNDLED_MLENERGY_V2),
                   help="ML.ENERGY v2 folder (chat/<GPU>/<org>/<model>/*.json, sharegpt/*.json); default: the bundled "
                   "copy; 'none' to train on v3 alone")
    p.add_argument("--measurements", default="data/measurements", help="folder of per-batch measurement CSVs (read when present)")
    p.add_argument("--out", default="llmco2-gnn-v2.safetensors", help="model file to write (.safetensors; .json beside it)")
    p.add_argument("--report", default=None, help="Markdown report (default: OUT with .report.md)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-heldout", action="store_true", help="skip the held-out evaluation in the report")
    p.add_argument("--plan", default=None, help="also write the next measurement plan (CSV) to this file, "
                   "e.g. data/measurements/next_plan.csv")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dense-only", action="store_true",
                   help="leave the mixture-of-experts rows out (the shipped llmco2-gnn-v2 is trained this way)")
    p.add_argument("--moe-recipe", action="store_true",
                   help="the MoE recipe (soft power window inside the model; prior design and GNN residual scale/bound "
                   "chosen on held-out architectures inside the training data): benchmarks/results/accuracy_moe*.md. "
                   "Default: the shipped dense recipe")
    p.add_argument("--shrink-by", default="",
                   help="keep the share of the GNN's residual over the physics prior chosen on inner folds that leave one "
                   "GPU kind ('gpu'), one source ('source'), one model family ('family') or one architecture ('model') out of "
                   "the training data, or any of them ('gpu,source') "
                   "(predictor/shrink.py; benchmarks/results/accuracy_shrinkgpu.md). Default: none (the shipped recipe)")
    p.add_argument("--inner-epochs", type=int, default=None, help="epochs of the --shrink-by inner fits (default: --epochs)")
    p.add_argument("--bag", type=int, default=1, help="train each HYPER_GRID point from this many initialisations "
                   "(torch seeds) and average them all (default 1: two members; the predictor's cost grows with the "
                   "members)")
    p.add_argument("--name", default="llmco2-gnn-v2", help="the model's name, reported in every record's `predictor` "
                   "(default llmco2-gnn-v2; the shipped mixture-of-experts model: llmco2-gnn-moe-v1)")
    p.add_argument("--clip-inputs", action=argparse.BooleanOptionalAction, default=True,
                   help="the model clips its GNN's global inputs to the range of its training data (ModelState."
                   "clip_inputs): outside the GPUs, engines and step-time ratios it has seen, the physics prior "
                   "carries the extrapolation (benchmarks/accuracy.py --clip-variant). Default: on, as both shipped "
                   "models (llmco2-gnn-v1 did not clip: --no-clip-inputs)")
    from ..predictor.prior import DURATION_BASES
    from ..predictor.window import STEP_TIMES

    p.add_argument("--step-times", choices=STEP_TIMES, default="uniform",
                   help="how each ML.ENERGY window's steps share the row's mean step time: 'roofline' (each step its "
                   "Roofline time plus the window's constant overhead, so a prefill step lasts longer than a decode "
                   "step: the dense model, llmco2-gnn-v2, since 2026-12-07), 'uniform' (every step the mean: the MoE "
                   "model) or 'kernel' (as roofline, from each step's kernel time: compute-bound kernels at the GPU's "
                   "GEMM efficiency; tried, not used: benchmarks/results/step_times.md part 4). Default: uniform")
    p.add_argument("--prior-on-all", action="store_true",
                   help="fit the physics prior of the early-stopping fits on their whole training side, validation "
                   "architectures included, as the final refit does (the dense model since 2026-12-07)")
    p.add_argument("--duration-base", choices=DURATION_BASES, default="kernel",
                   help="what the duration model (step times where none is observed: replay, what-if, estimate) adds "
                   "its fitted overheads to: 'kernel', the Roofline time with its compute-bound kernels at the GPU's "
                   "measured GEMM efficiency (hardware/gemm_efficiency.csv; the default since 2026-12-07), or "
                   "'roofline', the Roofline time")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared or small machine, more threads than free cores "
                   "makes training many times slower)")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from ..predictor.evaluate import architecture, evaluate, gnn_spec, load_examples, make_splits, prior_spec
    from ..predictor.gnn import GNNConfig
    from ..predictor.training import HYPER_GRID, TrainOptions, bagged_grid, refit_all, train_ensemble
    from ..predictor.splits import validation_split
    from ..predictor.metrics import summary

    from ..predictor.shrink import apply_inner_shrink, choose_shrink_inner, inner_folds, parse_shrink_by

    if args.epochs < 1:
        raise InputError("epochs", f"must be positive, got {args.epochs}", ">= 1")
    try:
        shrink_by = parse_shrink_by(getattr(args, "shrink_by", ""))
    except ValueError as exc:
        raise InputError("shrink-by", str(exc), "gpu, source, family, model, a comma list of them, or none") from None
    inner_epochs = getattr(args, "inner_epochs", None)
    bag = getattr(args, "bag", 1)
    if bag < 1:
        raise InputError("bag", f"must be positive, got {bag}", ">= 1")
    if inner_epochs is not None and inner_epochs < 1:
        raise InputError("inner-epochs", f"must be positive, got {inner_epochs}", ">= 1")
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    t0 = time.time()
    meas = Path(args.measurements) if args.measurements and Path(args.measurements).is_dir() else None
    v2 = None if str(args.data_v2).lower() == "none" else args.data_v2
    step_times = getattr(args, "step_times", "uniform")
    examples, feats, skipped = load_examples(args.data, meas, seed=args.seed, v2_dir=v2, step_times=step_times)
    if args.dense_only:
        keep = [i for i, e in enumerate(examples) if not e.meta.get("moe")]
        skipped.update({examples[i].key: "mixture of experts (--dense-only)" for i in range(len(examples)) if i not in set(keep)})
        examples, feats = [examples[i] for i in keep], [feats[i] for i in keep]
    if not examples:
        raise InputError("data", "no usable training rows found", "ML.ENERGY v3 model files or measurement CSVs")
    config = GNNConfig(name=getattr(args, "name", "llmco2-gnn-v2"), soft_window=args.moe_recipe)
    options = TrainOptions(epochs=args.epochs, seed=args.seed, choose_on_validation=args.moe_recipe,
                           clip_inputs=bool(getattr(args, "clip_inputs", False)),
                           prior_on_all=bool(getattr(args, "prior_on_all", False)),
                           duration_base=getattr(args, "duration_base", "kernel"))
    splits = [] if args.no_heldout else make_splits(examples)
    every = np.arange(len(examples))
    n_inner = [len(inner_folds(examples, every, shrink_by))] + [len(inner_folds(examples, s.train, shrink_by)) for s in splits]
    grid = bagged_grid(HYPER_GRID, bag, args.seed)
    n_fits = len(grid) * (2 + len(splits) + sum(n_inner))
    epochs_total = args.epochs * len(grid) * (2 + len(splits)) + (inner_epochs or args.epochs) * len(grid) * sum(n_inner)
    results = []
    with tqdm(total=epochs_total, disable=args.quiet, desc="llmco2 train", unit="epoch") as bar:
        if splits:
            specs = {"llmco2-gnn": gnn_spec(config, options, progress=bar.update, shrink_by=shrink_by, inner_epochs=inner_epochs,
                                            bag=bag),
                     "physics prior": prior_spec(args.moe_recipe)}
            results, _ = evaluate(examples, feats, splits, specs, seed=args.seed)
        groups = [architecture(e) for e in examples]
        fit_idx, val_idx = validation_split(every, groups, seed=args.seed)
        chosen = train_ensemble(examples, feats, fit_idx, val_idx, config, options, grid=grid, progress=bar.update,
                                shrink=False if shrink_by else None)
        if shrink_by:
            scale, bound, inner = choose_shrink_inner(examples, feats, every, shrink_by, config, options, groups,
                                                      inner_epochs=inner_epochs, grid=grid, progress=bar.update)
            apply_inner_shrink(chosen, scale, bound, inner)
        # the shipped model: every example fitted, each member for the epochs its early stopping chose
        model = refit_all(examples, feats, chosen, config, options, grid=grid, progress=bar.update)
        if "shrink_inner" in chosen.state.info:
            model.state.info["shrink_inner"] = chosen.state.info["shrink_inner"]
    from ..predictor.evaluate import predict_gnn

    pred = predict_gnn(model, examples, feats, np.arange(len(examples)))
    fit_score = summary(pred, [e.target for e in examples])
    model.state.info.update({
        "trained_on": sorted({e.source for e in examples}),
        "dense_only": bool(args.dense_only),
        "n_examples": len(examples),
        "n_fit": len(examples),
        "n_fit_epoch_choice": int(len(fit_idx)),
        "validation_architectures": sorted({architecture(examples[i]) for i in val_idx}),
        "seed": args.seed,
        "epochs": args.epochs,
        "fit_mape": fit_score["mape"],
        "heldout": [r.__dict__ for r in results],
    })
    # the recipe's data switches, recorded where they differ from the default (a file trained without
    # them keeps its bytes)
    if step_times != "uniform":
        model.state.info["step_times"] = step_times
    if getattr(args, "prior_on_all", False):
        model.state.info["prior_on_all"] = True
    out = model.save(args.out)
    report = Path(args.report) if args.report else out.with_suffix(".report.md")
    report.write_text(_report(examples, skipped, model, fit_score, results, n_fits, time.time() - t0))
    if args.plan:
        from ..predictor.plan import AZURE_CONV, PriorPredictor, build_plan, write_plan
        from ..predictor.roofline import RooflinePredictor

        rows = build_plan([model, PriorPredictor(model), RooflinePredictor()], AZURE_CONV,
                          measured_gpus={e.deployment.gpu.gpu_id for e in examples if e.source == "measurements"},
                          measured_models={e.model for e in examples if e.source == "measurements"}, seed=args.seed)
        print(f"wrote {write_plan(rows, args.plan)} ({len(rows)} batches to measure)")
    print(f"wrote {out} (+ .json) and {report} in {time.time() - t0:.0f} s; fit MAPE {fit_score['mape']:.1f}% on "
          f"{len(examples)} examples")
    return 0


def _shrink_origin(info: dict) -> str:
    inner = info.get("shrink_inner")
    if not inner:
        return "chosen on the same validation architectures"
    folds = ", ".join(f"{f['held']} {f['mape_whole']:.1f} -> {f['mape_chosen']:.1f}% (prior alone {f['mape_prior']:.1f}%)"
                      for f in inner.get("folds", []))
    return (f"chosen on inner leave-one-{inner['shrink_by']}-out folds: {folds}" if folds else inner.get("note", "no inner fold"))


def _report(examples, skipped, model, fit_score, results, n_fits, seconds) -> str:
    from collections import Counter

    from ..predictor.evaluate import architecture
    from ..predictor.prior import PRIOR_TERMS

    lines = [f"# Training report: {model.name}", "",
             f"{len(examples)} examples ({', '.join(f'{k}: {v}' for k, v in sorted(Counter(e.source for e in examples).items()))}); "
             f"{n_fits} fits in {seconds:.0f} s.", "", "## Examples by architecture and GPU", "",
             "| architecture | GPU | examples |", "|---|---|---|"]
    for (a, g), n in sorted(Counter((architecture(e), e.gpu) for e in examples).items()):
        lines.append(f"| {a} | {g} | {n} |")
    lines += ["", "## Rows left out", "", "| reason | rows |", "|---|---|"]
    for reason, n in sorted(Counter(skipped.values()).items(), key=lambda kv: -kv[1]):
        lines.append(f"| {reason} | {n} |")
    st = model.state
    lines += ["", "## Fitted coefficients", "",
              "- physics prior (dimensionless, predictor/prior.py): "
              + ", ".join(f"{n} {c:.3g}" for n, c in zip(PRIOR_TERMS, st.prior.coef)),
              f"- duration model (base: {_BASE_WORDS[st.duration.base]}; extra time per base second, s per step, s per "
              f"request, on top of the base): {', '.join(f'{c:.4g}' for c in st.duration.coef)}",
              f"- validation MAPE (held-out architectures inside the training data, used to choose the epochs): "
              f"{st.info.get('chosen_val_mape', st.info.get('val_mape', float('nan'))):.1f}%; members then refitted on every "
              f"example for {st.info.get('refit_epochs')} epochs",
              f"- GNN residual kept ({_shrink_origin(st.info)}): scale {st.residual_scale:g}, bound "
              f"{st.residual_bound:g} (log units); power window inside the model: {st.config.soft_window}",
              f"- fit on all examples: MAPE {fit_score['mape']:.1f}%, EBA(10%) {fit_score['eba10']:.1f}%, EBA(30%) {fit_score['eba30']:.1f}%"]
    if results:
        lines += ["", "## Held-out scores (same recipe, retrained per split)", "",
                  "| held-out group | predictor | n | MAPE % | EBA(10%) % | EBA(30%) % |", "|---|---|---|---|---|---|"]
        for r in results:
            lines.append(f"| {r.split} | {r.predictor} | {r.n} | {r.mape:.1f} | {r.eba10:.1f} | {r.eba30:.1f} |")
    return "\n".join(lines) + "\n"
