"""Two sets of held-out runs side by side, per group, for one predictor: the mean over each set's seeds.

Usage: python benchmarks/seed_sets_compare.py --before FILE [FILE ...] --after FILE [FILE ...]
           [--predictor NAME] [--title TEXT] [--note TEXT] [--out FILE.md [--append]]

A FILE is a result JSON of ``benchmarks/accuracy_seeds.py`` (every run in it counts) or of
``benchmarks/accuracy.py`` (one seed). ``--predictor`` is a prefix of the predictor's name as the
files spell it (default: the shipped recipe's column, "same fit as llmco2-gnn, GNN inputs clipped").
Prints (and with ``--out`` writes or appends) a Markdown table: each group's mean MAPE before and
after, each seed's figure, and the change; the mean over the groups both sets hold; and the groups
only one set holds. Used for decisions on the training data, e.g. benchmarks/results/gemma_rows.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

CLIPPED = "same fit as llmco2-gnn, GNN inputs clipped"


def runs_of(path: str | Path) -> list[list[dict]]:
    """The result lists in one file (one per seed)."""
    doc = json.loads(Path(path).read_text())
    if "runs" in doc:
        return [r["results"] for r in doc["runs"]]
    return [doc["results"]]


def per_group(files: list[str], predictor: str) -> dict[str, list[float]]:
    """Group -> the predictor's MAPE in every run of ``files``, in order."""
    out: dict[str, list[float]] = {}
    for f in files:
        for results in runs_of(f):
            for r in results:
                if r["predictor"].startswith(predictor):
                    out.setdefault(r["split"], []).append(float(r["mape"]))
    return out


def table(before: dict[str, list[float]], after: dict[str, list[float]]) -> list[str]:
    lines = ["| held-out group | before: mean (seeds) | after: mean (seeds) | change |", "|---|---|---|---|"]
    both = [g for g in after if g in before]
    for g in list(dict.fromkeys([*before, *after])):
        b, a = before.get(g), after.get(g)
        cell = lambda v: "-" if v is None else f"{np.mean(v):.1f} ({' / '.join(f'{x:.1f}' for x in v)})"  # noqa: E731
        change = "-" if a is None or b is None else f"{np.mean(a) - np.mean(b):+.1f}"
        lines.append(f"| {g} | {cell(b)} | {cell(a)} | {change} |")
    if both:
        mb = np.mean([np.mean(before[g]) for g in both])
        ma = np.mean([np.mean(after[g]) for g in both])
        lines.append(f"| mean over the {len(both)} groups both hold | {mb:.1f} | {ma:.1f} | {ma - mb:+.1f} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", nargs="+", required=True, metavar="FILE")
    ap.add_argument("--after", nargs="+", required=True, metavar="FILE")
    ap.add_argument("--predictor", default=CLIPPED, help=f"predictor name prefix (default {CLIPPED!r})")
    ap.add_argument("--title", default="Held-out MAPE %, before and after")
    ap.add_argument("--note", default="", help="a paragraph under the title")
    ap.add_argument("--out", help="write the section here")
    ap.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    args = ap.parse_args(argv)
    try:
        before, after = per_group(args.before, args.predictor), per_group(args.after, args.predictor)
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        print(f"seed_sets_compare.py: {exc}", file=sys.stderr)
        return 2
    if not before or not after:
        print(f"seed_sets_compare.py: predictor: no rows start with {args.predictor!r}", file=sys.stderr)
        return 2
    cmd = ("python benchmarks/seed_sets_compare.py --before " + " ".join(args.before) + " --after " + " ".join(args.after)
           + (f" --predictor {args.predictor!r}" if args.predictor != CLIPPED else ""))
    text = "\n".join([f"## {args.title}", "", *([args.note, ""] if args.note else []),
                      f"Command: `{cmd}`. Predictor: {args.predictor}.", "", *table(before, after), ""]) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.write_text((out.read_text() if args.append and out.exists() else "") + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
