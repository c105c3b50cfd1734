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
* ``accuracy.json``: the dense-only recipe of the shipped ``llmco2-gnn-v1`` (dense groups).

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
MOE_GROUPS = ("family=qwen3-moe", "family=gpt-oss", "model=deepseek-ai/DeepSeek-V3", "family=llama-4", "family=mixtral",
              "precision=fp8", "precision=mxfp4")


def _scores(path: Path) -> dict[tuple[str, str], float]:
    return {(r["split"], r["predictor"]): float(r["mape"]) for r in json.loads(path.read_text())["results"]}


def _mape(pred, true) -> float:
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    return float(100 * np.mean(np.abs(pred / true - 1)))


def dense_model_on_moe_rows() -> dict[str, float]:
    """The shipped dense-only model's prediction of every MoE example, by example key."""
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
    return dict(zip([e.key for e in ex], predict_gnn(model, ex, featurize(ex), np.arange(len(ex)))))


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
                       "dense_model": shipped_dense.get((s, OURS))})
    dense_pred = dense_model_on_moe_rows()
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
        moe_rows.append({"group": g, "n": n, "moe_model": float(np.mean(per_seed_moe)),
                         "moe_model_per_seed": per_seed_moe, "dense_model": float(np.mean(per_seed_dense))})

    def f(x):
        return "-" if x is None else f"{x:.1f}"

    lines = ["# Which model serves which deployment", "",
             f"Command: `python benchmarks/moe_model.py` ({time.time() - t0:.0f} s on this project's 2-core CPU VM), over "
             "the committed runs `accuracy_moe_block_s0/s1/s2` (dense + MoE rows, block-scaled FP8 feature, seeds 0, 1 "
             "and 2), `accuracy_moe_today_s0/s1/s2` (the same before the feature and the input clipping) and `accuracy.md` (the "
             "shipped dense-only recipe, one seed). MAPE % on held-out groups, J per output token; seeds averaged.", "",
             "## The mixture-of-experts model against the dense-only one on the MoE rows of each held-out group", "",
             "Both never saw the group: the MoE model's recipe is refitted per split without it; the dense model never saw "
             "any MoE row. Same rows, same truth.", "",
             "| held-out group (its MoE rows) | n | llmco2-gnn-moe-v1's recipe (seeds 0, 1, 2) | llmco2-gnn-v1 (dense only) |",
             "|---|---|---|---|"]
    for r in moe_rows:
        seeds = " / ".join(f"{x:.1f}" for x in r["moe_model_per_seed"])
        best_moe = r["moe_model"] < r["dense_model"]
        lines.append(f"| {r['group']} | {r['n']} | {'**' if best_moe else ''}{r['moe_model']:.1f}{'**' if best_moe else ''} "
                     f"({seeds}) | {'' if best_moe else '**'}{r['dense_model']:.1f}{'' if best_moe else '**'} |")
    m_moe = float(np.mean([r["moe_model"] for r in moe_rows]))
    m_dense = float(np.mean([r["dense_model"] for r in moe_rows]))
    lines += [f"| mean over these groups | | {m_moe:.1f} | {m_dense:.1f} |", "",
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
              f"groups: {', '.join(worse) or 'none'}. So `llmco2-gnn-v1` keeps serving dense models, and "
              "`llmco2-gnn-moe-v1` serves mixtures of experts (predictor/routed.py)."]
    out = Path(args.out_dir)
    (out / "moe_model.md").write_text("\n".join(lines) + "\n")
    (out / "moe_model.json").write_text(json.dumps({"moe_rows": moe_rows, "groups": groups, "means": means,
                                                    "moe_rows_mean": {"moe_model": m_moe, "dense_model": m_dense}},
                                                   indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
