"""``llmco2 catalog models``: the held-out column reads the shipped model file's scores, the most
specific group first, and never flatters a quantised model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from llmco2_sidecar.predictor.heldout import model_score

REPO = Path(__file__).resolve().parents[2]


def test_heldout_prefers_the_model_then_its_family_and_takes_the_worse_format():
    held = {"model=Qwen/Qwen3-8B": 7.4, "family=qwen3": 9.6, "family=deepseek": 33.4, "precision=fp8": 25.8}
    assert model_score(held, "Qwen/Qwen3-8B", None, "qwen3")[0] == 7.4
    assert model_score(held, "Qwen/Qwen3-8B-Instruct", "Qwen/Qwen3-8B", "qwen3")[0] == 7.4  # an alias: its base
    assert model_score(held, "Qwen/Qwen3-4B", None, "qwen3")[0] == 9.6
    assert model_score(held, "Qwen/Qwen3-8B-FP8", "Qwen/Qwen3-8B", "qwen3", "fp8")[0] == 25.8
    assert model_score(held, "deepseek-ai/DeepSeek-V3", None, "deepseek", "fp8")[0] == 33.4
    assert model_score(held, "x/unknown", None, "unknown")[0] is None
    assert model_score(held, "x/unknown-fp8", None, "unknown", "fp8")[0] == 25.8


def test_catalog_column_matches_the_shipped_model_file():
    """Each model's figure is the held-out score of the shipped model that serves it: llmco2-gnn-v2 for
    dense models, llmco2-gnn-moe-v1 for mixtures of experts."""
    def scores(name):
        info = json.loads((REPO / f"llmco2_sidecar/predictor/weights/{name}.json").read_text())["info"]
        return {r["split"]: r["mape"] for r in info["heldout"]}

    dense_groups, moe_groups = scores("llmco2-gnn-v2"), scores("llmco2-gnn-moe-v1")
    assert dense_groups and moe_groups, "a shipped model file carries no held-out scores: run tools/card_heldout.py"
    p = subprocess.run([sys.executable, "-m", "llmco2_sidecar.cli.main", "catalog", "models", "--json"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    models = json.loads(p.stdout)["models"]
    scored = {k: m["heldout_mape"] for k, m in models.items() if m.get("heldout_mape") is not None}
    assert len(scored) >= 10
    for hf_id, mape in scored.items():
        groups = moe_groups if models[hf_id]["experts"] else dense_groups
        assert mape in groups.values(), (hf_id, mape)
    if "model=Qwen/Qwen3-8B" in dense_groups:
        assert models["Qwen/Qwen3-8B"]["heldout_mape"] == dense_groups["model=Qwen/Qwen3-8B"]
    assert models["Qwen/Qwen3-235B-A22B"]["heldout_mape"] == moe_groups["model=Qwen/Qwen3-235B-A22B"]
    # Gemma-2 27B is not in the training data, Gemma-2 9B is (held out as a model only): the 9B's figure
    assert models["google/gemma-2-27b"]["heldout_mape"] == dense_groups["model=google/gemma-2-9b"]


def test_catalog_gpus_shows_each_gpus_gemm_efficiency_and_flags_the_assumed_ones():
    out = subprocess.run([sys.executable, "-m", "llmco2_sidecar.cli.main", "catalog", "gpus", "--json"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    gpus = json.loads(out)["gpus"]
    assert gpus["H100-SXM5-80GB"]["gemm_efficiency_source"].startswith("MEASURED")
    assert gpus["B200"]["gemm_efficiency_source"].startswith("ASSUMED")
    assert all(0.3 < g["gemm_efficiency"] <= 1.0 for g in gpus.values())
    text = subprocess.run([sys.executable, "-m", "llmco2_sidecar.cli.main", "catalog", "gpus"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout
    b200 = next(line for line in text.splitlines() if line.strip().startswith("B200"))
    h100 = next(line for line in text.splitlines() if line.strip().startswith("H100-SXM5-80GB"))
    assert f"GEMM {gpus['B200']['gemm_efficiency']:.2f}*" in b200 and "*" not in h100
