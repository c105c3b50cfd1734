"""benchmarks/seed_sets_compare.py: two sets of held-out runs, per group, mean over seeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import seed_sets_compare as ssc  # noqa: E402

CL = "same fit as llmco2-gnn, GNN inputs clipped to the training range"


def _run(tmp_path, name, scores, seeds_file=False):
    results = [[{"split": g, "predictor": CL, "mape": v[k], "n": 5} for g, v in scores.items()]
               for k in range(len(next(iter(scores.values()))))]
    results = [r + [{"split": "gpu=A100", "predictor": "physics prior alone", "mape": 99.0, "n": 5}] for r in results]
    doc = {"runs": [{"seed": k, "results": r} for k, r in enumerate(results)]} if seeds_file else {"results": results[0]}
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_means_changes_and_groups_held_by_one_side(tmp_path, capsys):
    before = _run(tmp_path, "before.json", {"gpu=A100": [10.0, 12.0, 14.0], "model=x": [5.0, 5.0, 5.0]}, seeds_file=True)
    after = [_run(tmp_path, f"after_s{k}.json", {"gpu=A100": [v], "model=y": [w]}) for k, (v, w) in
             enumerate([(9.0, 20.0), (9.0, 21.0), (12.0, 22.0)])]
    out = tmp_path / "cmp.md"
    assert ssc.main(["--before", before, "--after", *after, "--title", "T", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| gpu=A100 | 12.0 (10.0 / 12.0 / 14.0) | 10.0 (9.0 / 9.0 / 12.0) | -2.0 |" in text
    assert "| model=x | 5.0 (5.0 / 5.0 / 5.0) | - | - |" in text and "| model=y | - | 21.0 (20.0 / 21.0 / 22.0) | - |" in text
    assert "| mean over the 1 groups both hold | 12.0 | 10.0 | -2.0 |" in text
    assert "99.0" not in text  # another predictor's rows are not read
    ssc.main(["--before", before, "--after", *after, "--title", "U", "--out", str(out), "--append"])
    assert out.read_text().count("## ") == 2


def test_a_predictor_nobody_has_exits_2(tmp_path, capsys):
    f = _run(tmp_path, "a.json", {"gpu=A100": [1.0]})
    assert ssc.main(["--before", f, "--after", f, "--predictor", "nobody"]) == 2
    assert "nobody" in capsys.readouterr().err
    assert ssc.main(["--before", str(tmp_path / "missing.json"), "--after", f]) == 2


def test_the_committed_gemma_page_is_what_the_script_writes(tmp_path):
    """benchmarks/results/gemma_rows.md's tables come from this script over the committed runs."""
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    page = (results / "gemma_rows.md").read_text()
    before, after = ssc.per_group([str(results / "accuracy_seeds_clip_14d9954.json")], ssc.CLIPPED), \
        ssc.per_group([str(results / "accuracy_seeds_clip_gemma.json")], ssc.CLIPPED)
    for line in ssc.table(before, after):
        assert line in page
    assert before["model=microsoft/Phi-3-mini-4k-instruct"] == pytest.approx([11.1, 11.4, 14.0], abs=0.05)
