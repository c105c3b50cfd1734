"""The error to expect on a deployment, from the predictor's held-out scores (predictor/heldout.py)."""

from __future__ import annotations

import json

import pytest

from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor import heldout
from llmco2_sidecar.predictor.heldout import expected_error, scores_from_info

HELD = {
    "source: train mlenergy-v3 -> test mlenergy-v2": 15.0,
    "source: train mlenergy-v2 -> test mlenergy-v3": 17.0,  # mean 16.0
    "gpu=A100": 9.0, "gpu=H100": 13.0, "gpu=B200": 14.0,
    "family=llama-3": 12.0, "family=qwen3": 9.6,
    "model=Qwen/Qwen3-8B": 7.4, "model=microsoft/Phi-3-mini-4k-instruct": 18.5,
    "family=qwen3-moe": 17.6, "family=gpt-oss": 9.0, "family=deepseek": 33.4,
    "precision=fp8": 25.8, "precision=mxfp4": 9.0,
}


def test_the_serving_stack_floor_applies_to_a_well_known_model():
    e = expected_error(load_model("Qwen/Qwen3-8B"), "H100-SXM5-80GB", HELD)
    assert e.mape_pct == pytest.approx(16.0)  # its own 7.4, but any user's stack is a new source
    assert e.groups == ("model=Qwen/Qwen3-8B", "source") and "leave-one-source-out" in e.basis


def test_a_worse_group_than_the_floor_wins_and_fp8_is_never_flattered():
    e = expected_error(load_model("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"), "H100-SXM5-80GB", HELD)
    assert e.mape_pct == 25.8 and e.groups[:2] == ("family=qwen3-moe", "precision=fp8")
    assert expected_error(load_model("deepseek-ai/DeepSeek-V3"), "B200", HELD).mape_pct == 33.4
    assert expected_error(load_model("microsoft/Phi-3-mini-4k-instruct"), "A100-SXM4-40GB", HELD).mape_pct == 18.5


def test_an_unseen_gpu_kind_takes_the_worst_gpu_holdout():
    held = dict(HELD, **{"gpu=B200": 21.0})
    seen = expected_error(load_model("Qwen/Qwen3-8B"), "B200", held)
    unseen = expected_error(load_model("Qwen/Qwen3-8B"), "L4", held)
    assert seen.mape_pct == pytest.approx(16.0)  # B200 is in the data: its hold-out is not this user's case
    assert unseen.mape_pct == 21.0 and "gpu=B200" in unseen.groups and "not in the training data" in unseen.basis


def test_a_family_never_seen_takes_the_worst_holdout_of_its_kind():
    dense = expected_error(load_model("meta-llama/Llama-2-7b-hf"), "A100-SXM4-80GB", HELD)
    assert dense.mape_pct == 18.5 and dense.groups[0] == "model=microsoft/Phi-3-mini-4k-instruct"
    moe_held = {k: v for k, v in HELD.items() if k != "family=qwen3-moe"}
    moe = expected_error(load_model("Qwen/Qwen3-30B-A3B"), "H100-SXM5-80GB", moe_held)
    assert moe.mape_pct == 33.4 and "mixture-of-experts" in moe.basis  # not a dense family's figure


def test_no_scores_no_figure():
    assert expected_error(load_model("Qwen/Qwen3-8B"), "H100-SXM5-80GB", {}) is None
    assert scores_from_info({}) == {} and scores_from_info({"heldout": "not a list ["}) == {}


def test_only_the_shipped_recipes_rows_are_read_in_either_form():
    rows = [{"split": "gpu=A100", "predictor": "llmco2-gnn", "mape": 8.7},
            {"split": "gpu=A100", "predictor": "Roofline (analytic)", "mape": 16.4},
            {"split": "family=qwen3", "predictor": "llmco2-gnn (2-GNN + physics prior)", "mape": 9.6}]
    assert scores_from_info({"heldout": rows}) == {"gpu=A100": 8.7, "family=qwen3": 9.6}
    assert scores_from_info({"heldout": repr(rows)}) == {"gpu=A100": 8.7, "family=qwen3": 9.6}


def test_the_shipped_model_states_a_figure_from_its_own_card():
    info = json.loads(heldout.SHIPPED_MODEL.with_suffix(".json").read_text())["info"]
    held = scores_from_info(info)
    assert held == heldout.shipped_scores() and held
    e = expected_error(load_model("meta-llama/Llama-3.1-8B"), "H100-SXM5-80GB")
    src = [v for k, v in held.items() if k.startswith("source")]
    assert e.mape_pct == pytest.approx(max(held["model=meta-llama/Llama-3.1-8B"], sum(src) / len(src)))


def test_predictors_report_their_scores():
    from llmco2_sidecar.predictor.gnn import load_default
    from llmco2_sidecar.predictor.roofline import RooflinePredictor

    assert load_default().heldout_scores() == heldout.shipped_scores()
    assert RooflinePredictor().heldout_scores() == {}


def test_a_mixture_of_experts_is_judged_by_the_model_that_serves_it():
    moe = heldout.shipped_scores(moe=True)
    assert moe and moe != heldout.shipped_scores() and "family=qwen3-moe" in moe
    e = expected_error(load_model("Qwen/Qwen3-30B-A3B"), "H100-SXM5-80GB")
    src = [v for k, v in moe.items() if k.startswith("source")]
    assert e.mape_pct == pytest.approx(max(moe["model=Qwen/Qwen3-30B-A3B"], sum(src) / len(src)))


def test_a_new_model_of_a_family_known_through_one_model_takes_that_models_holdout():
    """Gemma-2 27B: not in the training data, but Gemma-2 9B is (held out as a model, never as a family):
    its hold-out, not the worst of every family (the 27B has a sibling in training; the 9B held out had none)."""
    held = dict(HELD, **{"model=google/gemma-2-9b": 10.3, "source: train mlenergy-v3 -> test mlenergy-v2": 9.0,
                         "source: train mlenergy-v2 -> test mlenergy-v3": 9.0})
    e = expected_error(load_model("google/gemma-2-27b-it"), "H100-SXM5-80GB", held)
    assert e.mape_pct == 10.3 and e.groups[0] == "model=google/gemma-2-9b" and "(gemma)" in e.basis
    unseen = expected_error(load_model("meta-llama/Llama-2-7b-hf"), "H100-SXM5-80GB", held)
    assert unseen.mape_pct == 18.5 and "never seen" in unseen.basis  # llama-2: no model of it anywhere


def test_model_score_falls_back_to_the_worst_of_the_familys_models():
    from llmco2_sidecar.predictor.heldout import model_score

    held = {"model=google/gemma-2-9b": 10.3, "model=meta-llama/Llama-3.1-8B": 9.1, "precision=fp8": 12.0}
    assert model_score(held, "google/gemma-2-27b-it", "google/gemma-2-27b", "gemma") == (10.3, ("model=google/gemma-2-9b",))
    assert model_score(held, "x/unknown", None, "unknown") == (None, ())
    assert model_score(held, "x/unknown-FP8", None, "unknown", "fp8") == (12.0, ("precision=fp8",))
