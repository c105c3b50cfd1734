"""``tools/card_heldout.py``: the shipped model file's held-out scores are the committed benchmark
results' (a retrained model or rerun benchmark without restamping fails here)."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools/card_heldout.py"


def test_committed_model_file_is_up_to_date():
    p = subprocess.run([sys.executable, str(TOOL), "--check"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr + "\nrun: python tools/card_heldout.py"


def test_rows_come_from_the_shipped_recipe_only(tmp_path):
    tool = runpy.run_path(str(TOOL))
    acc = {"results": [
        {"split": "gpu=A100", "predictor": "llmco2-gnn (2-GNN + physics prior)", "n": 32, "mape": 8.68, "eba30": 100.0},
        {"split": "gpu=A100", "predictor": "physics prior alone", "n": 32, "mape": 15.3, "eba30": 90.0}]}
    moe = {"results": [
        {"group": "gpu=A100", "predictor": "llmco2-gnn-v2 (shipped)", "n": 5, "mape": 50.0, "eba30": 0.0},
        {"group": "family=mixtral", "predictor": "llmco2-gnn-v2 (shipped)", "n": 28, "mape": 12.55, "eba30": 96.4}]}
    a, m = tmp_path / "acc.json", tmp_path / "moe.json"
    a.write_text(json.dumps(acc)), m.write_text(json.dumps(moe))
    rows = tool["heldout_rows"]([a, m])
    assert [(r["split"], r["mape"], r["from"]) for r in rows] == [("gpu=A100", 8.68, "acc.json"), ("family=mixtral", 12.55, "moe.json")]
    model = tmp_path / "model.json"
    shutil.copy(REPO / "llmco2_sidecar/predictor/weights/llmco2-gnn-v2.json", model)
    cmd = [sys.executable, str(TOOL), "--model-json", str(model), "--results", str(a), "--predictor", "llmco2-gnn"]
    assert subprocess.run(cmd + ["--check"], capture_output=True, timeout=60).returncode == 1
    assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
    assert [r["split"] for r in json.loads(model.read_text())["info"]["heldout"]] == ["gpu=A100"]
    assert subprocess.run(cmd + ["--check"], capture_output=True, timeout=60).returncode == 0
    missing = subprocess.run([sys.executable, str(TOOL), "--results", str(tmp_path / "none.json")], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and "none.json: no such file" in missing.stderr


def test_a_model_trained_on_moe_rows_takes_no_transfer_scores(tmp_path):
    acc = {"results": [{"split": "family=gpt-oss", "predictor": "llmco2-gnn (2-GNN + physics prior)", "n": 65, "mape": 14.0,
                        "eba30": 95.0}]}
    moe = {"results": [{"group": "all MoE rows", "predictor": "llmco2-gnn-v2 (shipped)", "n": 284, "mape": 15.8, "eba30": 82.0}]}
    a, m = tmp_path / "accuracy.json", tmp_path / "moe_transfer.json"
    a.write_text(json.dumps(acc)), m.write_text(json.dumps(moe))
    model = tmp_path / "model.json"
    doc = json.loads((REPO / "llmco2_sidecar/predictor/weights/llmco2-gnn-v2.json").read_text())
    for dense_only, want in ((True, ["family=gpt-oss", "all MoE rows"]), (False, ["family=gpt-oss"])):
        doc.setdefault("info", {})["dense_only"] = dense_only
        model.write_text(json.dumps(doc))
        cmd = [sys.executable, str(TOOL), "--model-json", str(model), "--results", str(a), str(m), "--predictor", "llmco2-gnn"]
        assert subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
        assert [r["split"] for r in json.loads(model.read_text())["info"]["heldout"]] == want


def test_runs_of_one_recipe_are_averaged_per_group(tmp_path):
    tool = runpy.run_path(str(TOOL))
    twin = "same fit as llmco2-gnn, GNN inputs clipped to the training range"
    s0 = {"results": [{"split": "family=qwen3-moe", "predictor": twin, "n": 140, "mape": 12.4, "eba30": 90.0},
                      {"split": "family=qwen3-moe", "predictor": "llmco2-gnn (2-GNN + physics prior)", "n": 140,
                       "mape": 14.5, "eba30": 80.0}]}
    s1 = {"results": [{"split": "family=qwen3-moe", "predictor": twin, "n": 140, "mape": 13.0, "eba30": 92.0}]}
    a, b = tmp_path / "s0.json", tmp_path / "s1.json"
    a.write_text(json.dumps(s0))
    b.write_text(json.dumps(s1))
    rows = tool["heldout_rows"]([a, b], "same fit as llmco2-gnn, GNN inputs clipped", average=True)
    assert [(r["split"], r["mape"], r["eba30"]) for r in rows] == [("family=qwen3-moe", 12.7, 91.0)]
    assert rows[0]["from"] == "s0.json + s1.json"
    assert tool["heldout_rows"]([a, b], "same fit as llmco2-gnn, GNN inputs clipped")[0]["mape"] == 12.4  # first wins


def test_committed_moe_model_file_is_up_to_date():
    """The mixture-of-experts model's scores: its recipe's column, averaged over the three committed seeds."""
    args = ["--model-json", "llmco2_sidecar/predictor/weights/llmco2-gnn-moe-v1.json", "--results",
            "benchmarks/results/accuracy_moe_blockfp8_idle2_s0.json", "benchmarks/results/accuracy_moe_blockfp8_idle2_s1.json",
            "benchmarks/results/accuracy_moe_blockfp8_idle2_s2.json",
            "--predictor", "same fit as llmco2-gnn, GNN inputs clipped", "--average", "--check"]
    p = subprocess.run([sys.executable, str(TOOL), *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr + "\nrun: python tools/card_heldout.py " + " ".join(args[:-1])


def test_seed_file_runs_are_averaged(tmp_path):
    """A benchmarks/accuracy_seeds.py file (one run per seed under ``runs``): each group's figures are
    the mean over its runs, from that one file."""
    from tools.card_heldout import heldout_rows

    def run(seed, mape, eba):
        return {"seed": seed, "results": [
            {"split": "gpu=A100", "predictor": "same fit as llmco2-gnn, GNN inputs clipped", "n": 32, "mape": mape, "eba30": eba},
            {"split": "gpu=A100", "predictor": "physics prior alone", "n": 32, "mape": 99.0, "eba30": 0.0}]}

    f = tmp_path / "seeds.json"
    f.write_text(json.dumps({"runs": [run(0, 10.0, 90.0), run(1, 14.0, 100.0), run(2, 12.0, 95.0)]}))
    rows = heldout_rows([f], "same fit as llmco2-gnn, GNN inputs clipped")
    assert rows == [{"split": "gpu=A100", "predictor": "llmco2-gnn", "n": 32, "mape": 12.0, "eba30": 95.0,
                     "from": "seeds.json"}]
