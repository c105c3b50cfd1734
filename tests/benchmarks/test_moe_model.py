"""moe_model.py's comparison of the shipped MoE recipe with the CUDA-core conversion runs: the MoE rows of a
group scored from a run's predictions, the seeds both have, and the committed conversion runs it reads."""

import json
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MOD = runpy.run_path(str(ROOT / "benchmarks" / "moe_model.py"))
CLIPPED = MOD["CLIPPED"]


def run(preds):
    split, ex, pred, true = zip(*preds)
    return {"predictions": {CLIPPED: {"split": list(split), "example": list(ex), "pred": list(pred), "true": list(true)}}}


def test_moe_rows_of_a_group_only():
    r = run([("family=gpt-oss", "a", 1.1, 1.0), ("family=gpt-oss", "dense", 2.0, 1.0), ("family=mixtral", "b", 1.5, 1.0),
             ("family=gpt-oss", "c", 0.7, 1.0)])
    mape, n = MOD["moe_rows_mape"](r, "family=gpt-oss", {"a", "b", "c"})
    assert n == 2 and mape == pytest.approx(20.0)  # |+10%| and |-30%|, the dense row left out


def test_dequant_lines_compare_on_the_same_seeds():
    moe_rows = [{"group": "family=gpt-oss", "n": 2, "moe_model_same_seeds": 18.0, "dequant": 12.0,
                 "dequant_per_seed": [11.0, 13.0]}]
    groups = [{"split": "family=gpt-oss", "moe_model_same_seeds": 18.0, "dequant": 12.0, "prior": 18.3,
               "dequant_prior": 16.6},
              {"split": "family=qwen3", "moe_model_same_seeds": None, "dequant": None, "prior": 9.4, "dequant_prior": None}]
    text = "\n".join(MOD["dequant_lines"](moe_rows, groups, [0, 1]))
    assert "| family=gpt-oss | 2 | 18.0 | 12.0 (11.0 / 13.0) |" in text
    assert "| family=gpt-oss | 18.0 | 12.0 | 18.3 | 16.6 |" in text and "family=qwen3" not in text
    assert "seeds 0, 1" in text


def test_committed_conversion_runs_are_read():
    seeds = MOD["dequant_seeds"]()
    assert seeds, "no committed benchmarks/results/accuracy_moe_dequant_s*.json"
    for s in seeds:
        data = json.loads((ROOT / "benchmarks" / "results" / f"accuracy_moe_dequant_s{s}.json").read_text())
        assert CLIPPED in data["predictions"] and f"--seed {s}" in data["command"]
