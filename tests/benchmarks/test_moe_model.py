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


def test_blockfp8_lines_compare_seed_by_seed(tmp_path):
    """The block-scaled FP8 runs against the conversion runs: MoE rows per group and every split, both columns."""
    prior = MOD["PRIOR"]

    def fake(seed, fp8_pred, scores):
        d = run([("precision=fp8", "q", fp8_pred, 1.0), ("precision=fp8", "dense", 5.0, 1.0)])
        d["predictions"][prior] = d["predictions"][CLIPPED]
        d["results"] = [{"split": sp, "predictor": col, "mape": v} for sp, (a, b) in scores.items()
                        for col, v in ((CLIPPED, a), (prior, b))]
        return d

    for seed, (dq, bf) in enumerate([(0.8, 0.9), (0.7, 0.95)]):
        (tmp_path / MOD["DEQUANT"].format(seed)).write_text(json.dumps(fake(seed, dq, {"precision=fp8": (20.0, 21.0)})))
        (tmp_path / MOD["BLOCKFP8"].format(seed)).write_text(json.dumps(fake(seed, bf, {"precision=fp8": (15.0, 19.0)})))
    lines, js = MOD["blockfp8_lines"]([0, 1], {"q"}, tmp_path)
    text = "\n".join(lines)
    assert "| precision=fp8 | 1 | 25.0 (20.0 / 30.0) | 7.5 (10.0 / 5.0) |" in text  # the dense row left out
    assert "| precision=fp8 | 20.0 | 15.0 | 21.0 | 19.0 |" in text
    assert js["means"]["groups_blockfp8"] == pytest.approx(15.0)


def test_the_runs_named_shipped_are_the_ones_the_makefile_writes_into_the_moe_card():
    make = (ROOT / "Makefile").read_text()
    line = next(x for x in make.splitlines() if "--results" in x and "accuracy_moe" in x)
    assert MOD["SHIPPED_RUNS"].replace("{}", "$(s)") in line
    assert MOD["SHIPPED_RUNS"] != MOD["STEPTIMES"]  # tried, not adopted: the MoE model keeps uniform step times
