"""Which trained model serves which deployment, and why: the mixture-of-experts model against the
dense-only one, over training seeds, from committed accuracy runs.

Usage: python benchmarks/moe_model.py [--out-dir benchmarks/results]

Reads (all committed under benchmarks/results/):

* ``accuracy_moe_block_s{0,1,2}.json``: ``benchmarks/accuracy.py --clip-variant`` over dense and MoE rows
  with the block-scaled FP8 feature, seeds 0, 1 and 2; its column "same fit as llmco2-gnn, GNN inputs
  clipped to the training range" is the recipe of the shipped ``llmco2-gnn-moe-v1`` (``llmco2 train
  --name llmco2-gnn-moe-v1 --clip-inputs``), the column "llmco2-gnn (2-GNN + physics prior)" the same
  fits unclipped;
* ``accuracy_moe_today_s{0,1,2}.json``: the same runs at the code before the feature and the clipping;
* ``accuracy.json``: the dense-only recipe's own run (dense groups; the dense model scored on MoE rows is the one shipped now);
* ``accuracy_moe_dequant_s{0,1,2}.json`` where committed (any of the seeds): the MoE recipe's runs with
  the CUDA-core conversion of low-precision weights in the kernel graph and the prior
  (``graph/dequant.py``), shown beside the shipped recipe on the seeds both have;
* ``accuracy_moe_blockfp8_s{0,1,2}.json`` where committed: the same recipe with block-scaled FP8's
  activation quantisation pass, the experts' 64-row M tiles and their promotion on B200
  (``graph/blockfp8.py``), shown beside the conversion runs on the seeds both have.

and scores the shipped dense-only model on every MoE row itself (as ``moe_transfer.py``: it never saw
one), so that the MoE rows of each held-out MoE group compare the two models on the same rows. Every
figure is a MAPE on held-out groups (J per output token); seeds are averaged. Writes moe_model.md and
moe_model.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
OURS = "llmco2-gnn (2-GNN + physics prior)"
CLIPPED = "same fit as llmco2-gnn, GNN inputs clipped to the training range"
PRIOR = "physics prior alone"
SEEDS = (0, 1, 2)
DEQUANT = "accuracy_moe_dequant_s{}.json"
BLOCKFP8 = "accuracy_moe_blockfp8_s{}.json"
#: the same recipe and code after main's idle-power catalog (2026-12-07): the shipped MoE model's own runs
BLOCKFP8_IDLE = "accuracy_moe_blockfp8_idle_s{}.json"
#: the same after the idle powers' second pass (B200 139/192 W, A100-40GB context 58 W, H100 85/117 W)
BLOCKFP8_IDLE2 = "accuracy_moe_blockfp8_idle2_s{}.json"
#: the same with the dense model's data switches (2026-12-07 night): per-step times in the windows and the
#: held-out fits' prior on their whole training side (``--step-times roofline --prior-on-all``)
STEPTIMES = "accuracy_moe_steptimes_s{}.json"
#: the run set whose mean is the shipped MoE model's info.heldout (the Makefile's card_heldout line)
SHIPPED_RUNS = BLOCKFP8_IDLE2
MOE_GROUPS = ("family=qwen3-moe", "family=gpt-oss", "model=deepseek-ai/DeepSeek-V3", "family=llama-4", "family=mixtral",
              "precision=fp8", "precision=mxfp4")


def _scores(path: Path) -> dict[tuple[str, str], float]:
    return {(r["split"], r["predictor"]): float(r["mape"]) for r in json.loads(path.read_text())["results"]}


def _mape(pred, true) -> float:
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    return float(100 * np.mean(np.abs(pred / true - 1)))


def moe_rows_mape(run: dict, group: str, keys) -> tuple[float, int]:
    """MAPE of the MoE recipe's column (``CLIPPED``) of one run on the MoE rows (``keys``) of a group."""
    p = run["predictions"][CLIPPED]
    idx = [i for i, s in enumerate(p["split"]) if s == group and p["example"][i] in keys]
    return _mape([p["pred"][i] for i in idx], [p["true"][i] for i in idx]), len(idx)


def dequant_seeds(results: Path = RESULTS, pattern: str = DEQUANT) -> list[int]:
    """The seeds of the committed runs with the CUDA-core conversion (``DEQUANT``, or ``pattern``)."""
    return [s for s in SEEDS if (results / pattern.format(s)).is_file()]


def dense_model_on_moe_rows() -> tuple[str, dict[str, float]]:
    """The shipped dense-only model's name and its prediction of every MoE example, by example key."""
    import torch

    from llmco2_sidecar.cli.train import BUNDLED_MLENERGY, BUNDLED_MLENERGY_V2
    from llmco2_sidecar.predictor.dataset import featurize, mlenergy_examples
    from llmco2_sidecar.predictor.evaluate import predict_gnn
    from llmco2_sidecar.predictor.gnn import load_default
    from llmco2_sidecar.predictor.mlenergy import load_rows
    from llmco2_sidecar.predictor.mlenergy_v2 import load_v2_rows

    torch.set_num_threads(1)
    model = load_default()
    if not model.state.info.get("dense_only", True):
        raise SystemExit("moe_model.py: the shipped dense model was trained on MoE rows; its MoE scores are not held out")
    rows = [r for r in load_rows(BUNDLED_MLENERGY) + load_v2_rows(BUNDLED_MLENERGY_V2) if r.architecture == "MoE"]
    ex, _ = mlenergy_examples(rows, seed=0)
    return model.name, dict(zip([e.key for e in ex], predict_gnn(model, ex, featurize(ex), np.arange(len(ex)))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=str(RESULTS))
    args = ap.parse_args()
    t0 = time.time()
    block = [json.loads((RESULTS / f"accuracy_moe_block_s{s}.json").read_text()) for s in SEEDS]
    before = [_scores(RESULTS / f"accuracy_moe_today_s{s}.json") for s in SEEDS]
    after = [{(r["split"], r["predictor"]): float(r["mape"]) for r in b["results"]} for b in block]
    shipped_dense = _scores(RESULTS / "accuracy.json")
    splits = [r["split"] for r in block[0]["results"] if r["predictor"] == OURS]
    dq_seeds = dequant_seeds()
    dq_runs = [json.loads((RESULTS / DEQUANT.format(s)).read_text()) for s in dq_seeds]
    dq = [{(r["split"], r["predictor"]): float(r["mape"]) for r in b["results"]} for b in dq_runs]
    same = [after[SEEDS.index(s)] for s in dq_seeds]  # the shipped recipe on the seeds the new runs have

    def mean(tables, split, name):
        vals = [t.get((split, name)) for t in tables]
        return float(np.mean(vals)) if all(v is not None for v in vals) else None

    dense_rows = [{(r["split"], r["predictor"]): float(r["mape"]) for r in b.get("dense_rows_of_mixed_groups", [])}
                  for b in block]
    groups = []
    for s in splits:
        groups.append({"split": s, "before": mean(before, s, OURS), "moe_model": mean(after, s, CLIPPED),
                       "moe_model_dense_rows": mean(dense_rows, s, CLIPPED),
                       "unclipped": mean(after, s, OURS), "prior": mean(after, s, PRIOR),
                       "dense_model": shipped_dense.get((s, OURS)),
                       "moe_model_same_seeds": mean(same, s, CLIPPED) if dq else None,
                       "dequant": mean(dq, s, CLIPPED) if dq else None,
                       "dequant_prior": mean(dq, s, PRIOR) if dq else None})
    dense_name, dense_pred = dense_model_on_moe_rows()
    moe_rows = []
    for g in MOE_GROUPS:
        per_seed_moe, per_seed_dense, n = [], [], 0
        for b in block:
            p = b["predictions"][CLIPPED]
            idx = [i for i, s in enumerate(p["split"]) if s == g and p["example"][i] in dense_pred]
            true = [p["true"][i] for i in idx]
            per_seed_moe.append(_mape([p["pred"][i] for i in idx], true))
            per_seed_dense.append(_mape([dense_pred[p["example"][i]] for i in idx], true))
            n = len(idx)
        per_seed_dq = [moe_rows_mape(b, g, dense_pred)[0] for b in dq_runs]
        moe_rows.append({"group": g, "n": n, "moe_model": float(np.mean(per_seed_moe)),
                         "moe_model_per_seed": per_seed_moe, "dense_model": float(np.mean(per_seed_dense)),
                         "dequant": float(np.mean(per_seed_dq)) if dq_runs else None, "dequant_per_seed": per_seed_dq,
                         "moe_model_same_seeds": float(np.mean([per_seed_moe[SEEDS.index(s)] for s in dq_seeds]))
                         if dq_runs else None})

    def f(x):
        return "-" if x is None else f"{x:.1f}"

    lines = ["# Which model serves which deployment", "",
             f"Command: `python benchmarks/moe_model.py` ({time.time() - t0:.0f} s on this project's 2-core CPU VM), over "
             "the committed runs `accuracy_moe_block_s0/s1/s2` (dense + MoE rows, block-scaled FP8 feature, seeds 0, 1 "
             "and 2), `accuracy_moe_today_s0/s1/s2` (the same before the feature and the input clipping) and `accuracy.md` (the "
             "shipped dense-only recipe, one seed)" + (f", and `accuracy_moe_dequant_s*` (seeds {', '.join(map(str, dq_seeds))}: "
             "the CUDA-core conversion of low-precision weights)" if dq_seeds else "")
             + (", `accuracy_moe_blockfp8_s*` (block-scaled FP8's quantisation pass, expert M tiles and B200 promotion)"
                if dequant_seeds(pattern=BLOCKFP8) else "") + ". MAPE % on held-out groups, J per "
             "output token; seeds averaged. The dense-only model's column is scored here on the current code's features "
             "(its prior's compute term includes the conversion on GPUs without the format, and since 2026-12-07 "
             "graph/blockfp8.py's counts for block-scaled FP8 models: its FP8 column read 25.1 before them).", "",
             "## The mixture-of-experts model against the dense-only one on the MoE rows of each held-out group", "",
             "Both never saw the group: the MoE model's recipe is refitted per split without it; the dense model never saw "
             "any MoE row. Same rows, same truth.", "",
             f"| held-out group (its MoE rows) | n | llmco2-gnn-moe-v1's recipe before the conversion (seeds 0, 1, 2) | "
             f"{dense_name} (dense only) |",
             "|---|---|---|---|"]
    for r in moe_rows:
        seeds = " / ".join(f"{x:.1f}" for x in r["moe_model_per_seed"])
        best_moe = r["moe_model"] < r["dense_model"]
        lines.append(f"| {r['group']} | {r['n']} | {'**' if best_moe else ''}{r['moe_model']:.1f}{'**' if best_moe else ''} "
                     f"({seeds}) | {'' if best_moe else '**'}{r['dense_model']:.1f}{'' if best_moe else '**'} |")
    m_moe = float(np.mean([r["moe_model"] for r in moe_rows]))
    m_dense = float(np.mean([r["dense_model"] for r in moe_rows]))
    lines += [f"| mean over these groups | | {m_moe:.1f} | {m_dense:.1f} |", ""]
    if dq_runs:
        lines += dequant_lines(moe_rows, groups, dq_seeds)
    bf_seeds = [x for x in dequant_seeds(pattern=BLOCKFP8) if x in dq_seeds]
    bf_json = {}
    if bf_seeds:
        bf_lines, bf_json = blockfp8_lines(bf_seeds, dense_pred)
        lines += bf_lines
        # later run sets on the same seeds, each against the one before it; shipped_key names the shipped
        # model's own (its info.heldout)
        stages = [
            (BLOCKFP8_IDLE, BLOCKFP8, "idle_catalog", "## The same after the idle-power catalog",
             "`accuracy_moe_blockfp8_idle_s*` (seeds {seeds}): the same command at the code merged with main's idle-power "
             "catalog (GPU idle power from public readings: among the training GPUs only H100's changed, 84 -> 85 W), "
             "against `accuracy_moe_blockfp8_s*` on the same seeds.", ("blockfp8", "blockfp8 + idle catalog")),
            (BLOCKFP8_IDLE2, BLOCKFP8_IDLE, "idle_second_pass", "## The same after the idle powers' second pass",
             "`accuracy_moe_blockfp8_idle2_s*` (seeds {seeds}): the same command at the code merged with the idle powers' "
             "second pass (B200 139/192 W bare/context, A100-40GB context 58 W, H100 85/117 W), the code of the shipped "
             "model file, against the first pass's runs on the same seeds.", ("first pass", "second pass")),
            (STEPTIMES, BLOCKFP8_IDLE2, "step_times", "## The same with per-step times and the prior on the whole training side",
             "`accuracy_moe_steptimes_s*` (seeds {seeds}): the same command with `--step-times roofline --prior-on-all` "
             "(the dense model's data switches since 2026-12-07: each window's steps last their Roofline time plus the "
             "window's constant overhead; the held-out fits' prior fitted on their early-stopping architectures too), "
             "against the second pass's runs on the same seeds. Not adopted: the MoE rows' mean is worse (the shipped "
             "MoE model keeps uniform step times).", ("uniform step times", "per-step times + prior on all")),
        ]
        prev_seeds, done = bf_seeds, []
        for pattern, before, key, title, text, labels in stages:
            seeds = [x for x in dequant_seeds(pattern=pattern) if x in prev_seeds]
            if not seeds:
                break
            done.append((pattern, before, key, title, text.format(seeds=", ".join(map(str, seeds))), labels, seeds))
            prev_seeds = seeds
        for pattern, before, key, title, text, labels, seeds in done:
            own = pattern == SHIPPED_RUNS
            head = [title + (": the shipped llmco2-gnn-moe-v1's own runs" if own else ""), "",
                    text + (" The shipped model's `info.heldout` is these runs' mean." if own else ""), ""]
            il, ij = blockfp8_lines(seeds, dense_pred, before=before, after=pattern, head=head, labels=labels)
            lines += il
            bf_json[key] = ij
    lines += [
              "## Every held-out group, dense and MoE", "",
              "`before`: dense + MoE rows at the code before the block-scaled FP8 feature and the clipping; `MoE model`: "
              "the shipped MoE recipe (feature + clipped inputs); `unclipped`: the same fits, inputs not clipped; "
              "`dense model`: the shipped dense-only recipe's own run (`accuracy.md`, dense groups only, one seed); "
              "`MoE model, dense rows`: the MoE recipe on the dense rows of a source or GPU hold-out, like for like with "
              "`dense model`.", "",
              "| held-out group | before | MoE model | unclipped | physics prior alone | MoE model, dense rows | dense model |",
              "|---|---|---|---|---|---|---|"]
    for g in groups:
        lines.append(f"| {g['split']} | {f(g['before'])} | {f(g['moe_model'])} | {f(g['unclipped'])} | {f(g['prior'])} | "
                     f"{f(g['moe_model_dense_rows'])} | {f(g['dense_model'])} |")
    keys = ("before", "moe_model", "unclipped", "prior")
    means = {k: float(np.mean([g[k] for g in groups])) for k in keys}
    lines.append(f"| mean over all {len(groups)} groups | " + " | ".join(f"{means[k]:.1f}" for k in keys) + " | | |")
    worse = [g["split"] for g in groups if g["dense_model"] is not None
             and (g["moe_model_dense_rows"] if g["moe_model_dense_rows"] is not None else g["moe_model"]) > g["dense_model"]]
    lines += ["", "Trained on dense and MoE rows, one model would be worse than the dense-only recipe on these dense "
              f"groups: {', '.join(worse) or 'none'}. So the dense-only model (`{dense_name}`) keeps serving dense models, and "
              "`llmco2-gnn-moe-v1` serves mixtures of experts (predictor/routed.py)."]
    out = Path(args.out_dir)
    (out / "moe_model.md").write_text("\n".join(lines) + "\n")
    (out / "moe_model.json").write_text(json.dumps({"moe_rows": moe_rows, "groups": groups, "means": means,
                                                    "dequant_seeds": dq_seeds, "blockfp8": bf_json,
                                                    "moe_rows_mean": {"moe_model": m_moe, "dense_model": m_dense}},
                                                   indent=1) + "\n")
    print("\n".join(lines))
    return 0


def dequant_lines(moe_rows: list[dict], groups: list[dict], seeds: list[int]) -> list[str]:
    """The section comparing the shipped MoE recipe with the same recipe plus the CUDA-core conversion
    (graph/dequant.py), on the seeds the conversion runs have."""
    def f(x):
        return "-" if x is None else f"{x:.1f}"

    names = ", ".join(str(s) for s in seeds)
    out = ["## With the CUDA-core conversion of low-precision weights (graph/dequant.py)", "",
           f"The MoE model's recipe with the conversion in the kernel graph and the prior (`accuracy_moe_dequant_s*`, "
           f"seeds {names}) against the same recipe before it, on the same seeds (`accuracy_moe_block_s*`, the tables "
           "above and below); the prior alone beside them. Same splits, same rows; the conversion's ops per element were "
           "fixed before any of these scores. `llmco2-gnn-moe-v1` is retrained with the conversion where all three seeds "
           "exist (its `info.heldout`: these runs' mean).", "",
           "### MoE rows of each held-out MoE group", "",
           f"| held-out group (its MoE rows) | n | before the conversion (seeds {names}) | with conversion (per seed) |",
           "|---|---|---|---|"]
    for r in moe_rows:
        per = " / ".join(f"{x:.1f}" for x in r["dequant_per_seed"])
        out.append(f"| {r['group']} | {r['n']} | {r['moe_model_same_seeds']:.1f} | {r['dequant']:.1f} ({per}) |")
    a = float(np.mean([r["moe_model_same_seeds"] for r in moe_rows]))
    b = float(np.mean([r["dequant"] for r in moe_rows]))
    out += [f"| mean over these groups | | {a:.1f} | {b:.1f} |", "", "### Every held-out group in those runs", "",
            "| held-out group | before the conversion | with conversion | prior alone, before | prior alone, with conversion |",
            "|---|---|---|---|---|"]
    rows = [g for g in groups if g["dequant"] is not None]
    for g in rows:
        out.append(f"| {g['split']} | {f(g['moe_model_same_seeds'])} | {f(g['dequant'])} | {f(g['prior'])} | "
                   f"{f(g['dequant_prior'])} |")
    if rows:
        m = [float(np.mean([g[k] for g in rows])) for k in ("moe_model_same_seeds", "dequant")]
        out.append(f"| mean over these {len(rows)} groups | {m[0]:.1f} | {m[1]:.1f} | | |")
    out += ["", "`prior alone, before` is the three-seed column of the table below (the prior's fit has no seed of its "
            "own; its figures move a little between seeds through the seeded rebuilding of each row's window).", ""]
    return out


def blockfp8_lines(seeds: list[int], moe_keys, results: Path = RESULTS, before: str = DEQUANT, after: str = BLOCKFP8,
                   head: list[str] | None = None, labels: tuple[str, str] = ("before", "with blockfp8")) -> tuple[list[str], dict]:
    """The section comparing the runs with graph/blockfp8.py (``after``) against the conversion runs (``before``:
    the recipe of the model shipped before it), seed by seed on the seeds both have; ``moe_keys``: the MoE
    examples' keys; ``head``: the section's heading and text (default: that comparison's)."""
    dq = [json.loads((results / before.format(s)).read_text()) for s in seeds]
    bf = [json.loads((results / after.format(s)).read_text()) for s in seeds]
    names = ", ".join(str(s) for s in seeds)
    out = head if head is not None else [
        "## With block-scaled FP8's quantisation pass, expert M tiles and B200 promotion (graph/blockfp8.py)", "",
        f"`accuracy_moe_blockfp8_s*` (seeds {names}) against `accuracy_moe_dequant_s*` (the same seeds, the recipe of "
        "`llmco2-gnn-moe-v1` before this change): same command, splits and rows; only block-scaled FP8 models' graphs "
        "differ (Qwen3-235B-FP8, DeepSeek-V3/R1), every split's fit sees them. The counts were fixed before any of these "
        "scores (graph/blockfp8.py).", ""]
    out = list(out) + ["### MoE rows of each held-out MoE group", "",
                       f"| held-out group (its MoE rows) | n | {labels[0]} (per seed) | {labels[1]} (per seed) |",
                       "|---|---|---|---|"]
    js = {"seeds": seeds, "moe_rows": [], "groups": []}
    for g in MOE_GROUPS:
        a = [moe_rows_mape(b, g, moe_keys) for b in dq]
        b_ = [moe_rows_mape(b, g, moe_keys) for b in bf]
        ma, mb = float(np.mean([x for x, _ in a])), float(np.mean([x for x, _ in b_]))
        js["moe_rows"].append({"group": g, "n": a[0][1], "before": ma, "blockfp8": mb,
                               "before_per_seed": [x for x, _ in a], "blockfp8_per_seed": [x for x, _ in b_]})
        out.append(f"| {g} | {a[0][1]} | {ma:.1f} ({' / '.join(f'{x:.1f}' for x, _ in a)}) | "
                   f"{mb:.1f} ({' / '.join(f'{x:.1f}' for x, _ in b_)}) |")
    m = [float(np.mean([r[k] for r in js["moe_rows"]])) for k in ("before", "blockfp8")]
    out += [f"| mean over these groups | | {m[0]:.1f} | {m[1]:.1f} |", "", "### Every held-out group in those runs", "",
            f"| held-out group | {labels[0]} | {labels[1]} | prior alone, {labels[0]} | prior alone, {labels[1]} |",
            "|---|---|---|---|---|"]
    ta = [{(r["split"], r["predictor"]): float(r["mape"]) for r in d["results"]} for d in dq]
    tb = [{(r["split"], r["predictor"]): float(r["mape"]) for r in d["results"]} for d in bf]
    splits = [r["split"] for r in bf[0]["results"] if r["predictor"] == CLIPPED]
    for sp in splits:
        row = {"split": sp}
        for key, tabs, col in (("before", ta, CLIPPED), ("blockfp8", tb, CLIPPED), ("prior_before", ta, PRIOR),
                               ("prior_blockfp8", tb, PRIOR)):
            vals = [t.get((sp, col)) for t in tabs]
            row[key] = float(np.mean(vals)) if all(v is not None for v in vals) else None
        js["groups"].append(row)
        out.append(f"| {sp} | " + " | ".join("-" if row[k] is None else f"{row[k]:.1f}"
                                             for k in ("before", "blockfp8", "prior_before", "prior_blockfp8")) + " |")
    gm = [float(np.mean([r[k] for r in js["groups"]])) for k in ("before", "blockfp8")]
    out += [f"| mean over these {len(splits)} groups | {gm[0]:.1f} | {gm[1]:.1f} | | |", ""]
    js["means"] = {"moe_rows_before": m[0], "moe_rows_blockfp8": m[1], "groups_before": gm[0], "groups_blockfp8": gm[1]}
    return out, js


if __name__ == "__main__":
    sys.exit(main())
