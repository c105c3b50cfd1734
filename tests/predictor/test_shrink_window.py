"""The power window inside the model (physics.soft_window_log) and the GNN residual's scale and bound
(GNNPredictor.shrink, training.choose_shrink)."""

import json

import numpy as np
import pytest
import torch

from llmco2_sidecar.hardware.catalog import load_catalog
from llmco2_sidecar.predictor.dataset import pack
from llmco2_sidecar.predictor.evaluate import predict_gnn
from llmco2_sidecar.predictor.gnn import GNNConfig, GNNPredictor
from llmco2_sidecar.predictor.physics import SOFT_WINDOW_CAP, soft_window_log
from llmco2_sidecar.predictor.training import TrainOptions, choose_shrink, train_gnn
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.workload import Parallelism, StepBatch


@pytest.mark.parametrize("ratio", [0.03, 0.12, 0.3, 0.7])
def test_soft_window_is_strictly_inside_monotone_and_keeps_the_middle(ratio):
    lo, hi = ratio * 100.0, 100.0
    e = np.geomspace(lo / 1e3, hi * 1e3, 4001)
    out = np.exp(soft_window_log(np.log(e), np.log(lo), np.log(hi)))
    assert (out >= lo * (1 - 1e-12)).all() and (out < hi).all()  # e far below the floor: the floor (to rounding)
    if ratio <= 0.3:  # every catalog GPU: idle <= 0.3 x TDP; the cap then sits at 0.98 x the limit (+ a tiny lift)
        assert (out < SOFT_WINDOW_CAP * hi * 1.001).all()
    assert (np.diff(out) >= 0).all()  # a larger raw energy never comes out smaller
    mid = (e >= 2 * lo) & (e <= hi / 2)
    if mid.any():
        np.testing.assert_allclose(out[mid], e[mid], rtol=1e-3)


def test_soft_window_torch_equals_numpy_and_has_gradients():
    le = np.log(np.array([0.5, 5.0, 50.0, 500.0, 5000.0]))
    lo, hi = np.log(np.full(5, 10.0)), np.log(np.full(5, 700.0))
    ref = soft_window_log(le, lo, hi)
    t = torch.tensor(le, requires_grad=True)
    got = soft_window_log(t, torch.tensor(lo), torch.tensor(hi), xp=torch)
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-12)
    got.sum().backward()
    g = t.grad.numpy()
    assert np.isfinite(g).all() and (g >= 0).all() and (g <= 1 + 1e-9).all()
    assert g[2] > 0.99 and g[-1] < 0.01  # in the middle the raw energy passes through; far above the cap, not


def _model(tiny_data, config=GNNConfig(soft_window=True)):
    ex, feats = tiny_data
    idx = np.arange(len(ex))
    return train_gnn(ex, feats, idx[:-3], idx[-3:], config, TrainOptions(epochs=10, eval_every=5))


def _push_residual(model, log_shift):
    """Make the total head's residual exactly ``log_shift`` on every step."""
    with torch.no_grad():
        for net in model.nets:
            net.tot.lin2.weight.zero_()
            net.tot.lin2.bias.fill_(log_shift)


STEPS = [[(0, 128)], [(0, 1024)] * 8, [(0, 8192)], [(100, 1)], [(1000, 1)] * 32, [(4000, 1)] * 256,
         [(0, 512), *[(800, 1)] * 64]]


@pytest.mark.parametrize("shift", [6.0, -6.0])
def test_a_model_with_the_soft_window_never_needs_the_guard(tiny_data, shift):
    """Whatever the GNN says (a residual of e^6 either way), every catalog GPU's steps come out inside
    [idle, power limit] without the hard guard acting; the same network with the hard clamp needs it
    (so the test can fail)."""
    from llmco2_sidecar.models import load_model

    spec = load_model("meta-llama/Llama-2-7b-hf")
    soft, hard = _model(tiny_data), _model(tiny_data, GNNConfig(soft_window=False))
    for m in (soft, hard):
        _push_residual(m, shift)
    for gpu in sorted(load_catalog().gpus.values(), key=lambda g: g.gpu_id):
        dep = Deployment(spec, gpu, Parallelism(tp=1 if spec.weight_bytes < 0.6 * gpu.memory_bytes else 8))
        steps = StepBatch.from_steps(STEPS, [None] * len(STEPS))
        p = soft.predict_steps(dep, steps)
        hard.predict_steps(dep, steps)
        w = p.energy_j / (dep.n_gpus * p.duration_s)
        # inside the closed window: with a residual of e^-6 the soft floor is reached to float precision
        # (the L4's measured 16 W idle is 22% of its 72 W limit)
        assert (w >= gpu.idle_w * (1 - 1e-9)).all() and (w < gpu.tdp_w).all(), gpu.gpu_id
    assert soft.guard.tdp_bound == 0 and soft.guard.idle_bound == 0, soft.guard.describe()
    assert hard.guard.tdp_bound + hard.guard.idle_bound > 0


def test_scale_zero_is_the_prior_and_the_bound_limits_the_residual(tiny_data):
    ex, feats = tiny_data
    idx = np.arange(len(ex))
    dep = ex[0].deployment
    steps = StepBatch.from_steps([[(0, 256)], [(256, 1)] * 4], [0.02, 0.01])  # few steps: the fused NumPy path
    model = _model(tiny_data)

    def both():
        return predict_gnn(model, ex, feats, idx), model.predict_steps(dep, steps).energy_j

    _push_residual(model, 0.0)
    base = both()  # a zero residual: the prior inside the soft window
    _push_residual(model, 0.1)
    small = both()
    _push_residual(model, 2.0)
    assert not np.allclose(both()[0], base[0], rtol=1e-3)
    model.state.residual_scale = 0.0
    for got, want in zip(both(), base):
        np.testing.assert_allclose(got, want, rtol=1e-9)
    model.state.residual_scale, model.state.residual_bound = 1.0, 0.1
    for got, want in zip(both(), small):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    _push_residual(model, 0.2)
    model.state.residual_scale, model.state.residual_bound = 0.5, float("inf")
    for got, want in zip(both(), small):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_choose_shrink_pulls_a_wrong_gnn_back_to_the_prior(tiny_data):
    ex, feats = tiny_data
    val = np.arange(len(ex))[-6:]
    model = _model(tiny_data)
    vp = pack([feats[i] for i in val], [ex[i] for i in val], model._node_idx, model._glob_idx, model.state.norm)
    _push_residual(model, 1.0)  # every step 2.7 x too high
    before = np.mean(np.abs(model.predict_packed(vp) / vp.target.numpy() - 1))
    scale, bound = choose_shrink(model, vp)
    after = np.mean(np.abs(model.predict_packed(vp) / vp.target.numpy() - 1))
    assert scale * min(bound, 1.0) < 0.5 and after < before / 2
    assert model.state.info["residual_scale"] == scale


def test_shrink_and_window_round_trip_and_old_files_keep_the_hard_clamp(tiny_data, tmp_path):
    ex, feats = tiny_data
    idx = np.arange(len(ex))
    model = _model(tiny_data)
    model.state.residual_scale, model.state.residual_bound = 0.5, 0.2
    loaded = GNNPredictor.load(model.save(tmp_path / "m.safetensors"))
    assert (loaded.state.residual_scale, loaded.state.residual_bound, loaded.state.config.soft_window) == (0.5, 0.2, True)
    np.testing.assert_allclose(predict_gnn(loaded, ex, feats, idx), predict_gnn(model, ex, feats, idx), rtol=1e-6)
    meta_path = tmp_path / "m.json"
    meta = json.loads(meta_path.read_text())
    for k in ("residual_scale", "residual_bound"):
        del meta[k]
    del meta["config"]["soft_window"]
    meta_path.write_text(json.dumps(meta))
    old = GNNPredictor.load(tmp_path / "m.safetensors")
    assert (old.state.residual_scale, old.state.residual_bound, old.state.config.soft_window) == (1.0, float("inf"), False)


def test_the_low_precision_prior_terms_are_computed_only_for_a_prior_that_uses_them(tiny_data, monkeypatch):
    from dataclasses import replace

    from llmco2_sidecar.predictor import prior as prior_mod

    calls = []
    real = prior_mod.roofline16_s
    monkeypatch.setattr(prior_mod, "roofline16_s", lambda *a: calls.append(1) or real(*a))
    ex, _ = tiny_data
    dep = ex[0].deployment
    fp8 = replace(dep, model=replace(dep.model, weight_bits=8, gemm_dtype="fp8"))
    steps = StepBatch.from_steps([[(500, 1)] * 16, [(0, 256)]], [0.02, 0.03])
    model = _model(tiny_data)
    model.state.prior.coef[prior_mod.N_BASE_TERMS:] = 0.0
    before = model.predict_steps(fp8, steps).energy_j
    assert not calls  # the hot path skips the second Roofline pass
    model.state.prior.coef[prior_mod.N_BASE_TERMS] = 0.2
    after = model.predict_steps(fp8, steps).energy_j
    assert calls and (after > before).all()
