"""Two runs of ``benchmarks/accuracy.py`` side by side, per held-out group, for one predictor.

Usage: python benchmarks/compare_accuracy.py BEFORE.json AFTER.json [--predictor llmco2-gnn] [--out FILE.md]

A group held in both runs is compared on its score; where AFTER's group also holds MoE rows (the
source and GPU hold-outs of a dense + MoE run) its dense rows alone (``dense_rows_of_mixed_groups``)
are compared with BEFORE's dense-only score, like for like. Prints (and with ``--out`` writes) a
Markdown table and which groups got worse.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def scores(doc: dict, prefix: str, key: str = "results") -> dict[str, dict]:
    return {r["split"]: r for r in doc.get(key, []) if r["predictor"].startswith(prefix)}


def compare(before: dict, after: dict, prefix: str) -> tuple[list[str], list[str]]:
    b, a, ad = scores(before, prefix), scores(after, prefix), scores(after, prefix, "dense_rows_of_mixed_groups")
    lines = ["| held-out group | before: n, MAPE % | after: n, MAPE % | after, dense rows only: n, MAPE % | change (like for like) |",
             "|---|---|---|---|---|"]
    worse = []
    for split in list(dict.fromkeys([*b, *a])):
        rb, ra, rd = b.get(split), a.get(split), ad.get(split)
        like = rd or ra
        cells = [f"{r['n']}, {r['mape']:.1f}" if r else "-" for r in (rb, ra, rd)]
        change = "-"
        if rb and like:
            d = like["mape"] - rb["mape"]
            change = f"{d:+.1f}"
            if d > 0:
                worse.append(f"{split} ({rb['mape']:.1f} -> {like['mape']:.1f})")
        lines.append(f"| {split} | " + " | ".join(cells) + f" | {change} |")
    return lines, worse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--predictor", default="llmco2-gnn", help="predictor name prefix (default llmco2-gnn)")
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    a = p.parse_args(argv)
    for path in (a.before, a.after):
        if not path.is_file():
            print(f"compare_accuracy: {path}: no such file", file=sys.stderr)
            return 2
    before, after = json.loads(a.before.read_text()), json.loads(a.after.read_text())
    lines, worse = compare(before, after, a.predictor)
    text = "\n".join([f"# {a.predictor}: `{before.get('command')}` (before) vs `{after.get('command')}` (after)", "", *lines, "",
                      f"Worse after, like for like: {', '.join(worse) if worse else 'none'}."]) + "\n"
    print(text, end="")
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
