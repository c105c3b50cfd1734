"""The README's accuracy table: its rows for the shipped model and the prior alone are the committed
accuracy_seeds_clip.json's figures (seeds averaged, groups averaged), not numbers typed by hand."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLUMNS = ("mean", "source: train mlenergy-v3 -> test mlenergy-v2", "source: train mlenergy-v2 -> test mlenergy-v3",
           "gpu=A100", "gpu=B200", "gpu=H100", "eba30")
ROWS = {"llmco2-gnn-v2 (": "same fit as llmco2-gnn, GNN inputs clipped", "physics prior alone": "physics prior alone"}


def _readme_row(start: str) -> list[float]:
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("| " + start):
            return [float(x) for x in re.findall(r"(\d+\.\d)%", line)]
    raise AssertionError(f"README has no accuracy row starting {start!r}")


def test_readme_accuracy_rows_are_the_committed_results():
    sys.path.insert(0, str(REPO / "tools"))
    from card_heldout import result_rows

    rows = result_rows(json.loads((REPO / "benchmarks/results/accuracy_seeds_clip.json").read_text()))
    for start, predictor in ROWS.items():
        mine = [r for r in rows if r["predictor"].startswith(predictor)]
        by_split = {r["split"]: r for r in mine}
        want = [statistics.mean(r["mape"] for r in mine)] + [by_split[c]["mape"] for c in COLUMNS[1:-1]] \
            + [statistics.mean(r["eba30"] for r in mine)]
        got = _readme_row(start)
        assert got == [round(w, 1) for w in want], (start, got, [round(w, 1) for w in want])
