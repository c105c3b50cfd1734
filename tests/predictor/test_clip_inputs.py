"""The GNN's global inputs clipped to the training side's range (``ModelState.clip_inputs``): a no-op
on the rows it trained on, the same in the fused and reference paths, kept in the model file."""

import numpy as np
import pytest

from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.predictor.evaluate import clipped_inputs_spec, gnn_spec, predict_gnn
from llmco2_sidecar.predictor.gnn import GNNConfig, GNNPredictor
from llmco2_sidecar.predictor.training import TrainOptions
from llmco2_sidecar.workload import StepBatch

FAST = TrainOptions(epochs=6, eval_every=3)


@pytest.fixture(scope="module")
def fitted_model(tiny_data):
    ex, feats = tiny_data
    fitted: dict = {}
    train, test = np.arange(len(ex))[:-3], np.arange(len(ex))[-3:]
    ours = gnn_spec(GNNConfig(), FAST, fitted=fitted)(ex, feats, train, 0)
    return ex, feats, train, test, ours, fitted


def test_the_range_is_the_training_sides_and_clipping_leaves_those_rows_alone(fitted_model):
    ex, feats, train, test, ours, fitted = fitted_model
    model = next(iter(fitted.values()))
    n = model.state.norm
    g = np.concatenate([feats[i].global_x[:, model._glob_idx] for i in train])
    np.testing.assert_array_equal(n["glob_lo"], g.min(0).astype(np.float32))
    np.testing.assert_array_equal(n["glob_hi"], g.max(0).astype(np.float32))
    before = predict_gnn(model, ex, feats, train)
    model.state.clip_inputs = True
    try:
        np.testing.assert_allclose(predict_gnn(model, ex, feats, train), before, rtol=1e-6)
    finally:
        model.state.clip_inputs = False


def test_the_clipped_twin_is_the_same_fit_with_clipping(fitted_model):
    ex, feats, train, test, ours, fitted = fitted_model
    model = next(iter(fitted.values()))
    clipped = clipped_inputs_spec(fitted, pop=False)(ex, feats, train, 0)
    got = clipped(test)
    assert model.state.clip_inputs is False  # restored
    model.state.clip_inputs = True
    try:
        np.testing.assert_allclose(got, predict_gnn(model, ex, feats, test), rtol=1e-12)
    finally:
        model.state.clip_inputs = False


def test_fused_and_reference_paths_clip_alike_and_the_file_keeps_it(fitted_model, tmp_path):
    """A deployment far outside the tiny training data (an L4, a 70B model at TP 4): the clipped
    prediction differs from the unclipped one, and both inference paths agree on it."""
    *_, fitted = fitted_model
    model = next(iter(fitted.values()))
    model.state.clip_inputs = True
    try:
        path = model.save(tmp_path / "clip.safetensors")
    finally:
        model.state.clip_inputs = False
    loaded = GNNPredictor.load(path)
    assert loaded.state.clip_inputs and "glob_lo" in loaded.state.norm
    from llmco2_sidecar.workload import Parallelism

    dep = Deployment(load_model("meta-llama/Llama-2-70b-hf"), load_gpu("A100-SXM4-80GB"), Parallelism(tp=4))
    steps = StepBatch.from_steps([[(0, 512)] * 2, [(600, 1)] * 32], duration_s=[0.4, 0.09])
    fused = loaded.predict_steps(dep, steps).energy_j
    ref = loaded.predict_steps(dep, steps, reference=True).energy_j
    np.testing.assert_allclose(np.log(fused), np.log(ref), atol=1e-5)
    loaded.state.clip_inputs = False
    loaded._fused_fwd = None
    unclipped = loaded.predict_steps(dep, steps).energy_j
    assert not np.allclose(unclipped, fused, rtol=1e-4)


def test_scope_range_unbounds_every_column_outside_the_scope():
    from llmco2_sidecar.predictor.dataset import scope_range

    norm = {"glob_lo": np.array([0.0, 1.0, 2.0], dtype=np.float32), "glob_hi": np.array([5.0, 6.0, 7.0], dtype=np.float32),
            "glob_mean": np.zeros(3, dtype=np.float32)}
    out = scope_range(norm, ["log_hidden", "tdp_kw", "log_duration_s"], ("tdp_kw", "log_duration_s"))
    np.testing.assert_array_equal(out["glob_lo"], [-np.inf, 1.0, 2.0])
    np.testing.assert_array_equal(out["glob_hi"], [np.inf, 6.0, 7.0])
    assert out["glob_mean"] is norm["glob_mean"] and norm["glob_lo"][0] == 0.0  # the model's own norm untouched


def test_the_conditions_twin_clips_the_gpu_and_engine_inputs_only(tiny_data):
    """A held-out deployment whose GPU facts and model size both lie outside the training side's range:
    clipping everything, clipping the GPU and engine inputs only, and clipping nothing give three
    different predictions, and the conditions twin is the model with its range scoped."""
    from llmco2_sidecar.predictor.dataset import CONDITION_GLOBALS, scope_range
    from llmco2_sidecar.predictor.evaluate import CLIPPED, CLIPPED_CONDITIONS

    assert not CLIPPED_CONDITIONS.startswith("same fit as llmco2-gnn, GNN inputs clipped")  # tools select CLIPPED by prefix
    assert CLIPPED.startswith("same fit as llmco2-gnn, GNN inputs clipped")
    ex, feats = tiny_data
    train = np.array([i for i, e in enumerate(ex) if e.gpu == "H100" and "Qwen" in e.model])  # one GPU, one model
    test = np.array([i for i, e in enumerate(ex) if e.gpu == "B200" and "Llama" in e.model])  # another GPU and model, TP 2
    fitted: dict = {}
    gnn_spec(GNNConfig(), FAST, fitted=fitted)(ex, feats, train, 0)
    model = next(iter(fitted.values()))
    everything = clipped_inputs_spec(fitted, pop=False)(ex, feats, train, 0)(test)
    conditions = clipped_inputs_spec(fitted, pop=False, scope=CONDITION_GLOBALS)(ex, feats, train, 0)(test)
    nothing = predict_gnn(model, ex, feats, test)
    assert model.state.clip_inputs is False and np.isfinite(model.state.norm["glob_lo"]).all()  # restored
    assert not np.allclose(conditions, everything, rtol=1e-4) and not np.allclose(conditions, nothing, rtol=1e-4)
    model.state.clip_inputs = True
    keep = model.state.norm
    model.state.norm = scope_range(keep, list(model.state.config.global_columns()), CONDITION_GLOBALS)
    try:
        np.testing.assert_allclose(conditions, predict_gnn(model, ex, feats, test), rtol=1e-12)
    finally:
        model.state.clip_inputs, model.state.norm = False, keep


def test_the_shape_gated_twin_falls_back_to_the_prior_outside_the_trained_shapes(tiny_data, monkeypatch):
    """Trained on Qwen3-8B alone: a Llama-3.1-8B row (32 layers against 36, another FFN width) is outside
    the trained shapes and is predicted with the residual off (the model's own prior); a Qwen3-8B row is
    inside and gets the clipped prediction. Both with the inputs clipped, as shipped."""
    from llmco2_sidecar.predictor import evaluate
    from llmco2_sidecar.predictor.evaluate import SHAPE_GATED, shape_gated_spec, shape_outside

    assert not SHAPE_GATED.startswith("same fit as llmco2-gnn, GNN inputs clipped")
    ex, feats = tiny_data
    qwen = np.array([i for i, e in enumerate(ex) if "Qwen" in e.model])
    train, inside = qwen[:-2], qwen[-2:]
    outside = np.array([i for i, e in enumerate(ex) if "Llama" in e.model])[:3]
    fitted: dict = {}
    gnn_spec(GNNConfig(), FAST, fitted=fitted)(ex, feats, train, 0)
    model = next(iter(fitted.values()))
    assert not any(shape_outside(model, feats[i]) for i in inside)
    assert all(shape_outside(model, feats[i]) for i in outside)
    calls = []
    real = evaluate.predict_gnn

    def spy(m, examples, feats_, idx):
        calls.append((sorted(np.asarray(idx).tolist()), m.state.residual_scale, m.state.clip_inputs))
        return real(m, examples, feats_, idx)

    monkeypatch.setattr(evaluate, "predict_gnn", spy)
    gated = shape_gated_spec(fitted, pop=False)(ex, feats, train, 0)
    got = gated(np.concatenate([inside, outside]))
    assert calls == [(sorted(inside.tolist()), 1.0, True), (sorted(outside.tolist()), 0.0, True)]
    assert gated.info == {"n_outside_shapes": len(outside)} and got.shape == (len(inside) + len(outside),)
    assert (model.state.clip_inputs, model.state.residual_scale) == (False, 1.0)  # restored
