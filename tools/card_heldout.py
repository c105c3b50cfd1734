"""Write the shipped predictor's held-out scores into its model file's ``info.heldout``, where
``llmco2 catalog`` reads them ("heldout" column), from the committed accuracy results.

    python tools/card_heldout.py                      # the defaults below (the shipped llmco2-gnn-v2)
    python tools/card_heldout.py --check              # exit 1 when the model file is not up to date

The scores come from benchmarks that retrain the shipped recipe per held-out group
(``benchmarks/accuracy.py``: every model, family, GPU and source group of the recipe's own training
data) and from the shipped model scored on groups it never saw (``benchmarks/moe_transfer.py``:
the mixture-of-experts families, for a model trained without them; not read for a model whose
``info.dense_only`` is false, which trained on those rows). ``llmco2 train`` without
``--no-heldout`` computes the first kind itself; this tool saves rerunning an hour of training to
restate figures a committed benchmark already measured. Only rows of the recipe that is shipped are
taken: predictor names starting with ``llmco2-gnn``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL_JSON = REPO / "llmco2_sidecar/predictor/weights/llmco2-gnn-v2.json"
SOURCES = (REPO / "benchmarks/results/accuracy_seeds_clip.json", REPO / "benchmarks/results/moe_transfer.json")
#: the shipped dense recipe's columns: accuracy_seeds.py's clipped fits, moe_transfer.py's shipped model
SHIPPED_COLUMNS = ("same fit as llmco2-gnn, GNN inputs clipped", "llmco2-gnn-v2")


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def result_rows(data: dict) -> list[dict]:
    """The rows of a result file; a ``benchmarks/accuracy_seeds.py`` file (one run per seed under ``runs``)
    as one row per (group, predictor), its MAPE and EBA(30%) the mean over the seeds."""
    if "runs" not in data:
        return data.get("results", [])
    groups: dict = {}
    for run in data["runs"]:
        for r in run.get("results", []):
            groups.setdefault((r.get("split") or r.get("group"), r["predictor"]), []).append(r)
    return [{"split": s, "predictor": p, "n": rs[0]["n"], "mape": sum(float(r["mape"]) for r in rs) / len(rs),
             "eba30": sum(float(r["eba30"]) for r in rs) / len(rs)} for (s, p), rs in groups.items()]


def heldout_rows(paths: list[Path], predictor: str = "llmco2-gnn", average: bool = False) -> list[dict]:
    """``{split, predictor, n, mape, eba30, from}`` of the shipped recipe (result rows whose predictor
    name starts with ``predictor``), first source first; a group already taken from an earlier file is
    not taken again. ``average``: the files are runs of one recipe (seeds): each group's figures are
    their mean over the files that have it."""
    prefixes = (predictor,) if isinstance(predictor, str) else tuple(predictor)
    rows, seen = [], {}
    for path in paths:
        for r in result_rows(json.loads(path.read_text())):
            split = r.get("split") or r.get("group")
            if not split or not str(r.get("predictor", "")).startswith(prefixes):
                continue
            if split in seen:
                if average:
                    seen[split].append((path, r))
                continue
            seen[split] = [(path, r)]
            rows.append(split)
    out = []
    for split in rows:
        runs = seen[split]
        out.append({"split": split, "predictor": "llmco2-gnn", "n": int(runs[0][1]["n"]),
                    "mape": round(sum(float(r["mape"]) for _, r in runs) / len(runs), 2),
                    "eba30": round(sum(float(r["eba30"]) for _, r in runs) / len(runs), 1),
                    "from": " + ".join(_shown(p) for p, _ in runs)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-json", type=Path, default=MODEL_JSON, help=f"the model's JSON (default {MODEL_JSON.relative_to(REPO)})")
    p.add_argument("--results", type=Path, nargs="+", default=list(SOURCES),
                   help="result JSON files, most specific first (default: accuracy.json, moe_transfer.json)")
    p.add_argument("--predictor", nargs="+", default=list(SHIPPED_COLUMNS), help="take the result rows whose predictor "
                   "name starts with one of these (default: the shipped recipe's columns, " + ", ".join(map(repr, SHIPPED_COLUMNS)) + ")")
    p.add_argument("--average", action="store_true", help="the result files are runs of one recipe (seeds): each "
                   "group's figures are their mean (default: the first file that has the group)")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if the model file would change")
    a = p.parse_args(argv)
    for path in [a.model_json, *a.results]:
        if not path.is_file():
            print(f"card_heldout: {path}: no such file", file=sys.stderr)
            return 2
    doc = json.loads(a.model_json.read_text())
    results = [r.resolve() for r in a.results]
    if doc.get("info", {}).get("dense_only", True) is False:  # trained on MoE rows: a dense-to-MoE transfer
        results = [r for r in results if r.name != "moe_transfer.json"]  # score does not describe it
    rows = heldout_rows(results, a.predictor, a.average)
    if a.check:
        same = doc.get("info", {}).get("heldout") == rows
        print(f"{a.model_json.name}: info.heldout {'up to date' if same else 'differs from the results'} ({len(rows)} groups)")
        return 0 if same else 1
    doc.setdefault("info", {})["heldout"] = rows
    a.model_json.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")  # as the model's own save
    print(f"wrote {len(rows)} held-out groups into {a.model_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
