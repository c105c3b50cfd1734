"""fp8_diagnosis.py: row keys parsed, errors grouped by GPU and batch bucket, FP8 rows paired with the 16-bit
twin at the same weight bytes per GPU (twice the GPUs)."""

import json
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MOD = runpy.run_path(str(ROOT / "benchmarks" / "fp8_diagnosis.py"))
KEY8 = "mlenergy-v3|Qwen/Qwen3-235B-A22B-Instruct-2507-FP8|lm-arena-chat|B200x2|tp1|seqs8"
KEY16 = "mlenergy-v3|Qwen/Qwen3-235B-A22B-Instruct-2507|lm-arena-chat|B200x4|tp1|seqs8"


def test_parse_key_and_buckets():
    k = MOD["parse_key"](KEY8)
    assert (k["gpu"], k["n_gpus"], k["seqs"], k["model"]) == ("B200", 2, 8, "Qwen3-235B-A22B-Instruct-2507-FP8")
    assert [MOD["bucket"](b) for b in (8, 16.0, 17, 128, 129)] == ["b<=16", "b<=16", "16<b<=128", "16<b<=128", "b>128"]


def test_error_tables_pool_seeds(tmp_path, monkeypatch):
    clipped, prior = MOD["CLIPPED"], MOD["PRIOR"]
    for s, (g, p) in enumerate([(0.8, 0.6), (0.9, 0.7)]):
        preds = {c: {"split": ["precision=fp8", "gpu=A100"], "example": [KEY8, KEY8], "pred": [v, 9.0], "true": [1.0, 1.0]}
                 for c, v in ((clipped, g), (prior, p))}
        (tmp_path / f"run_s{s}.json").write_text(json.dumps({"predictions": preds}))
    monkeypatch.setitem(MOD["error_tables"].__globals__, "RESULTS", tmp_path)
    lines, js = MOD["error_tables"](["run", "missing"], "precision=fp8", {KEY8: 8.0})
    cells = js["run"]["cells"]
    assert cells["all"]["n"] == 1 and cells["all"]["bias"] == pytest.approx(-15.0) and cells["all"]["prior_mape"] == pytest.approx(35.0)
    assert cells["gpu, batch / B200 / b<=16"]["mape"] == pytest.approx(15.0)
    assert "`missing`: no committed seeds." in lines


def test_twins_match_twice_the_gpus():
    def row(key, prec, n, step_ms, w):
        return {"key": key, "model": MOD["parse_key"](key)["model"], "precision": prec, "gpu": "B200", "n_gpus": n,
                "batch": 8.0, "step_ms": step_ms, "roofline_ms": 6.5, "measured_w_per_gpu": w}
    lines, pairs = MOD["twin_lines"]([row(KEY8, "fp8", 2, 37.3, 903.0), row(KEY16, "bfloat16", 4, 20.1, 641.0)])
    assert len(pairs) == 1
    p = pairs[0]
    assert p["time_ratio"] == pytest.approx(37.3 / 20.1) and p["energy_ratio"] == pytest.approx(37.3 * 903 / (20.1 * 641))
