"""The shipped predictor routes each deployment to the model made for its kind (predictor/routed.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor import default as default_mod
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.predictor.gnn import load_default, load_default_moe
from llmco2_sidecar.predictor.routed import RoutedPredictor
from llmco2_sidecar.workload import Parallelism, StepBatch

STEPS = StepBatch.from_steps([[(0, 256)] * 2, [(300, 1)] * 16], duration_s=[0.08, 0.03])
DENSE = Deployment(load_model("meta-llama/Llama-3.1-8B"), load_gpu("H100"))
MOE = Deployment(load_model("Qwen/Qwen3-30B-A3B"), load_gpu("H100"))


@pytest.fixture(scope="module")
def routed():
    return default_mod.default_predictor()


def test_each_kind_goes_to_its_own_model_and_says_so(routed):
    dense, moe = load_default(), load_default_moe()
    assert isinstance(routed, RoutedPredictor) and moe is not None
    assert (routed.name_for(DENSE), routed.name_for(MOE)) == ("llmco2-gnn-v2", "llmco2-gnn-moe-v1")
    np.testing.assert_array_equal(routed.predict_steps(DENSE, STEPS).energy_j, dense.predict_steps(DENSE, STEPS).energy_j)
    np.testing.assert_array_equal(routed.predict_steps(MOE, STEPS).energy_j, moe.predict_steps(MOE, STEPS).energy_j)
    assert not np.allclose(routed.predict_steps(MOE, STEPS).energy_j, dense.predict_steps(MOE, STEPS).energy_j)
    np.testing.assert_array_equal(routed.predict_duration_s(MOE, StepBatch.from_steps([[(0, 64)]])),
                                  moe.predict_duration_s(MOE, StepBatch.from_steps([[(0, 64)]])))


def test_held_out_scores_are_the_answering_models(routed):
    dense_scores, moe_scores = routed.heldout_scores(DENSE), routed.heldout_scores(MOE)
    assert dense_scores == load_default().heldout_scores() and moe_scores == load_default_moe().heldout_scores()
    assert "family=qwen3-moe" in moe_scores and "precision=mxfp4" in moe_scores
    assert dense_scores != moe_scores


def test_the_moe_model_is_the_one_its_card_describes():
    moe = load_default_moe()
    assert moe.state.clip_inputs and moe.state.info["dense_only"] is False
    assert moe.name == "llmco2-gnn-moe-v1"


def test_one_guard_counts_both_models(routed):
    before = routed.guard.steps
    routed.predict_steps(DENSE, STEPS)
    routed.predict_steps(MOE, STEPS)
    assert routed.guard.steps == before + 2 * STEPS.n_steps


def test_without_a_moe_model_file_the_dense_model_serves_everything(monkeypatch, caplog):
    import llmco2_sidecar.predictor.gnn as gnn

    def broken():
        raise ValueError("truncated file")

    monkeypatch.setattr(gnn, "load_default_moe", broken)
    default_mod.default_predictor.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            p = default_mod.default_predictor()
        assert p.name_for(MOE) == "llmco2-gnn-v2" and "truncated file" in caplog.text
        np.testing.assert_array_equal(p.predict_steps(MOE, STEPS).energy_j, load_default().predict_steps(MOE, STEPS).energy_j)
    finally:
        default_mod.default_predictor.cache_clear()


def test_a_plain_predictor_answers_for_itself():
    from llmco2_sidecar.predictor.roofline import RooflinePredictor

    r = RooflinePredictor()
    assert r.name_for(MOE) == "roofline-analytic" and r.heldout_scores(MOE) == {}
    assert RoutedPredictor(load_default()).name_for(MOE) == "llmco2-gnn-v2"


def test_the_moe_models_fused_path_is_its_reference():
    moe = load_default_moe()
    for dep in (MOE, Deployment(load_model("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"), load_gpu("B200"), Parallelism(tp=4)),
                Deployment(load_model("openai/gpt-oss-120b"), load_gpu("L4"), Parallelism(tp=8))):  # outside its data
        fused = moe.predict_steps(dep, STEPS).energy_j
        ref = moe.predict_steps(dep, STEPS, reference=True).energy_j
        np.testing.assert_allclose(np.log(fused), np.log(ref), atol=1e-5)
