"""Write the figures of the shipped model's card (``MODEL_CARD.md`` beside the model file) from the
committed files: the model's JSON (fitted coefficients, training choices) and
``benchmarks/results/accuracy.json`` (held-out scores of the same recipe, every baseline on the same
splits; or a ``benchmarks/accuracy_seeds.py`` file, its seeds averaged). Only the parts between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` markers
are rewritten; the prose around them is the card's own.

    python tools/model_card.py            # rewrite the generated parts
    python tools/model_card.py --check    # exit 1 when the card differs from what the files say
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "llmco2_sidecar/predictor/weights"
CARD = WEIGHTS / "MODEL_CARD.md"
MODEL_JSON = WEIGHTS / "llmco2-gnn-v2.json"
ACCURACY = REPO / "benchmarks/results/accuracy_seeds_clip.json"

OURS_PREFIX = "same fit as llmco2-gnn, GNN inputs clipped"  # the shipped recipe's column in ACCURACY
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tools"))
from accuracy_report import MOE_GROUPS, TARGET_GROUP_MAPE as TARGET_GROUP, TARGET_MOE_MAPE as TARGET_MOE  # noqa: E402
from accuracy_report import TARGET_SOURCE_MAPE as TARGET_SOURCE  # noqa: E402
from card_heldout import result_rows  # noqa: E402
from llmco2_sidecar.predictor.prior import PRIOR_TERMS  # noqa: E402


def target_of(split: str) -> float:
    if split.startswith("source"):
        return TARGET_SOURCE
    return TARGET_MOE if split.startswith(MOE_GROUPS) else TARGET_GROUP


def seed_average(acc: dict) -> dict:
    """A ``benchmarks/accuracy_seeds.py`` file (one run per seed under ``runs``) as one result file
    (:func:`card_heldout.result_rows`: each group and predictor averaged over the seeds); a plain
    accuracy file unchanged."""
    if "runs" not in acc:
        return acc
    rows = result_rows(acc)
    seeds = ", ".join(str(run["seed"]) for run in acc["runs"])
    # every example is in exactly one source group, so those groups' sizes add up to the examples
    n_all = sum(r["n"] for r in rows if r["split"].startswith("source") and r["predictor"] == rows[0]["predictor"])
    return {"command": acc.get("command", "python benchmarks/accuracy_seeds.py") + f"`, the mean of seeds {seeds}; each run: `"
            + acc["runs"][0]["command"], "wall_s": acc["wall_s"], "n_examples": acc.get("n_examples", n_all or "the"),
            "results": rows}


def heldout_table(acc: dict, ours_prefix: str = OURS_PREFIX) -> str:
    acc = seed_average(acc)
    rows = acc["results"]
    names = list(dict.fromkeys(r["predictor"] for r in rows))
    ours = next(n for n in names if n.startswith(ours_prefix))
    by = {(r["split"], r["predictor"]): r for r in rows}
    splits = list(dict.fromkeys(r["split"] for r in rows))
    out = [f"Command: `{acc['command']}` ({acc['wall_s']:.0f} s wall on the project's shared 2-core CPU VM), {acc['n_examples']} examples; MAPE %, EBA(30%) % "
           f"in brackets for ours; target met in the last column.", "",
           "| held-out group | n | " + " | ".join(names) + " | target | met |", "|---|---|" + "---|" * (len(names) + 2)]
    for s in splits:
        best = min(by[(s, n)]["mape"] for n in names if (s, n) in by)
        cells = []
        for n in names:
            r = by.get((s, n))
            v = "-" if r is None else f"{r['mape']:.1f}"
            if r is not None and r["mape"] == best:
                v = f"**{v}**"
            if n == ours and r is not None:
                v += f" ({r['eba30']:.0f})"
            cells.append(v)
        t = target_of(s)
        met = "yes" if by[(s, ours)]["mape"] <= t else "**no**"
        out.append(f"| {s} | {by[(s, ours)]['n']} | " + " | ".join(cells) + f" | <= {t:g} | {met} |")
    means = [sum(by[(s, n)]["mape"] for s in splits) / len(splits) for n in names]
    out.append("| mean over groups | | " + " | ".join(f"{m:.1f}" for m in means) + " | | |")
    missed = [s for s in splits if by[(s, ours)]["mape"] > target_of(s)]
    missed_txt = ", ".join(f"{s} ({by[(s, ours)]['mape']:.1f}%)" for s in missed)
    out += ["", f"Targets met on {len(splits) - len(missed)} of {len(splits)} groups"
            + (f"; missed: {missed_txt}." if missed else ".")]
    dense = acc.get("dense_rows_of_mixed_groups") or []
    if dense:
        out += ["", "Dense rows of the mixed (source, GPU) groups, ours: " + "; ".join(
            f"{r['split']} {r['mape']:.1f}% (n = {r['n']})" for r in dense if r["predictor"] == ours) + "."]
    return "\n".join(out)


def fit_lines(meta: dict) -> str:
    info = meta.get("info", {})
    coef = meta["prior_coef"]
    nz = ", ".join(f"{n} {c:.3f}" for n, c in zip(PRIOR_TERMS, coef) if abs(c) >= 5e-4)
    d = meta["duration_coef"]
    bound = meta.get("residual_bound")
    return "\n".join([
        f"- Physics prior coefficients (dimensionless, the others 0): {nz}.",
        (f"- Duration model (no observed duration): `b = t_roof + t_compute_bound x (1 / e_gpu - 1)` (e_gpu: the GPU's "
         f"measured GEMM compute efficiency), `t = b + {d[0]:.3f} x b + {d[1] * 1e3:.1f} ms + {d[2] * 1e6:.0f} us x requests`."
         if meta.get("duration_base", "roofline") == "kernel" else
         f"- Duration model (no observed duration): `t = t_roof + {d[0]:.3f} x t_roof + {d[1] * 1e3:.1f} ms + "
         f"{d[2] * 1e6:.0f} us x requests`."),
        f"- GNN residual kept: scale {meta.get('residual_scale', 1.0):g}, bound "
        f"{'none' if bound is None else f'{bound:g} (log units)'}; power window inside the model: "
        f"{meta['config'].get('soft_window', False)}.",
        f"- Trained on {info.get('n_examples')} examples ({', '.join(info.get('trained_on', []))}; dense only: "
        f"{info.get('dense_only', True)}); members' epochs {info.get('refit_epochs')} chosen by early stopping on held-out "
        f"{', '.join(info.get('validation_architectures', []))} (validation MAPE {info.get('chosen_val_mape', float('nan')):.1f}%); "
        f"fit on all examples: MAPE {info.get('fit_mape', float('nan')):.1f}%.",
    ])


def render(card: str, parts: dict[str, str]) -> str:
    for name, body in parts.items():
        pat = re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)", re.S)
        if not pat.search(card):
            raise ValueError(f"MODEL_CARD.md: no <!-- generated:{name} --> ... <!-- /generated:{name} --> block")
        card = pat.sub(lambda m: m.group(1) + body + "\n" + m.group(2), card)
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--card", type=Path, default=CARD)
    p.add_argument("--model-json", type=Path, default=MODEL_JSON)
    p.add_argument("--accuracy", type=Path, default=ACCURACY)
    p.add_argument("--ours", default=OURS_PREFIX, help="the shipped recipe's column: the predictor name it starts "
                   f"with (default {OURS_PREFIX!r})")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if the card would change")
    a = p.parse_args(argv)
    for path in (a.card, a.model_json, a.accuracy):
        if not path.is_file():
            print(f"model_card: {path}: no such file", file=sys.stderr)
            return 2
    card = a.card.read_text()
    try:
        new = render(card, {"fit": fit_lines(json.loads(a.model_json.read_text())),
                            "heldout": heldout_table(json.loads(a.accuracy.read_text()), a.ours)})
    except ValueError as e:
        print(f"model_card: {e}", file=sys.stderr)
        return 2
    if a.check:
        print(f"{a.card.name}: {'up to date' if new == card else 'differs from the model file and results'}")
        return 0 if new == card else 1
    a.card.write_text(new)
    print(f"wrote {a.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
