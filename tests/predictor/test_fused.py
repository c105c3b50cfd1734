"""The fused NumPy inference forward agrees with the torch modules it is built from."""

import numpy as np
import pytest
import torch

from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor import gnn as gnn_mod
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.predictor.fused import FusedForward
from llmco2_sidecar.predictor.gnn import load_default
from llmco2_sidecar.predictor.layers import TwoStageGNN, mean_adjacency
from llmco2_sidecar.workload import Parallelism, StepBatch


def _randomised(net: TwoStageGNN, seed: int) -> TwoStageGNN:
    """Every parameter random (the readout starts at zero, which would hide a wrong readout)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


def _inputs(s=5, n=6, f=7, g=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ei = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 2, 3, 4, 4, 5]])
    return (torch.randn(s, n, f, generator=gen), mean_adjacency(ei, n), torch.randn(s, g, generator=gen),
            torch.randn(s, generator=gen), torch.randn(s, generator=gen))


@pytest.mark.parametrize("members", [[(8, True)], [(8, True), (12, True)], [(6, False)], [(6, False), (5, True)]])
def test_fused_equals_torch(members):
    x, adj, g, lpp, lpt = _inputs()
    nets = [_randomised(TwoStageGNN(7, 4, hidden=h, two_stage=two), seed=i) for i, (h, two) in enumerate(members)]
    with torch.no_grad():
        outs = [n(x, adj, g, lpp, lpt) for n in nets]
    want_pre = torch.stack([o[0] for o in outs]).mean(0).numpy()
    want_tot = torch.stack([o[1] for o in outs]).mean(0).numpy()
    got_pre, got_tot = FusedForward(nets)(x.numpy(), adj.numpy(), g.numpy(), lpp.numpy(), lpt.numpy())
    assert got_pre.dtype == np.float32 and got_tot.shape == (5,)
    np.testing.assert_allclose(got_pre, want_pre, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_tot, want_tot, rtol=1e-5, atol=1e-5)
    assert np.abs(want_tot - lpt.numpy()).max() > 0.1  # the heads do contribute: the check is not vacuous


def test_predictor_rebuilds_the_fused_forward_after_training_changed_a_parameter():
    model = load_default()
    dep = Deployment(load_model("meta-llama/Llama-3.1-8B"), load_gpu("H100"), Parallelism(tp=1))
    steps = StepBatch.from_steps([[(0, 256)], [(256, 1), (0, 64)]], duration_s=[0.02, 0.015])
    before = model.predict_steps(dep, steps).energy_j
    with torch.no_grad():  # an optimizer step changes parameters in place
        model.nets[0].tot.lin2.bias.add_(0.5)
    after = model.predict_steps(dep, steps).energy_j
    np.testing.assert_allclose(after / before, np.exp(0.5 / len(model.nets)), rtol=1e-5)


def test_few_and_many_steps_agree_across_the_switch(monkeypatch):
    """predict_steps takes the fused path up to FUSED_MAX_STEPS steps and torch beyond: same figures."""
    model = load_default()
    dep = Deployment(load_model("Qwen/Qwen3-32B"), load_gpu("B200"), Parallelism(tp=2))
    rng = np.random.default_rng(0)
    steps = StepBatch.from_steps([[(int(rng.integers(0, 3000)), 1)] * 8 + [(0, int(rng.integers(16, 900)))]
                                  for _ in range(20)], duration_s=list(rng.uniform(0.01, 0.05, 20)))
    fused = model.predict_steps(dep, steps)
    monkeypatch.setattr(gnn_mod, "FUSED_MAX_STEPS", 0)
    plain = model.predict_steps(dep, steps)
    np.testing.assert_allclose(fused.energy_j, plain.energy_j, rtol=1e-5)
    np.testing.assert_allclose(fused.prefill_energy_j, plain.prefill_energy_j, rtol=1e-5)


@pytest.mark.parametrize("use_prior,two_stage", [(False, True), (True, False)])
def test_variants_without_prior_or_second_stage_agree_across_the_switch(tiny_data, monkeypatch, use_prior, two_stage):
    """The baselines' variants (no physics prior: a constant log bias; a single GNN) take the same paths."""
    from llmco2_sidecar.predictor.gnn import GNNConfig
    from llmco2_sidecar.predictor.training import TrainOptions, train_gnn

    ex, feats = tiny_data
    model = train_gnn(ex, feats, np.arange(len(ex)), None, GNNConfig(use_prior=use_prior, two_stage=two_stage),
                      TrainOptions(epochs=3))
    dep = ex[0].deployment
    steps = StepBatch.from_steps([[(0, 128)], [(128, 1)] * 4, [(300, 1), (0, 40)]], duration_s=[0.03, 0.01, 0.02])
    fused = model.predict_steps(dep, steps)
    monkeypatch.setattr(gnn_mod, "FUSED_MAX_STEPS", 0)
    plain = model.predict_steps(dep, steps)
    np.testing.assert_allclose(fused.energy_j, plain.energy_j, rtol=1e-5)
    np.testing.assert_allclose(fused.prefill_energy_j, plain.prefill_energy_j, rtol=1e-5)


def test_log_priors_against_hand_computed_values():
    """log prior energies: log(max(terms @ coef, 1e-9)); the prefill one at least 1e-3 of the total;
    float32; the tensor wrapper gives the same numbers; without a prior, the constant log bias."""
    from types import SimpleNamespace

    coef = np.array([2.0, 0.5])
    tot = np.array([[1.0, 2.0], [-3.0, 1.0], [10.0, 0.0]])  # 3.0; negative -> 1e-9; 20.0
    pre = np.array([[0.5, 0.0], [0.0, 0.0], [1e-6, 0.0]])   # 1.0; 0 -> max(1e-9, 1e-12); 2e-6 -> 1e-3 * 20
    state = SimpleNamespace(config=SimpleNamespace(use_prior=True), prior=SimpleNamespace(coef=coef), log_bias=0.0)
    model = gnn_mod.GNNPredictor.__new__(gnn_mod.GNNPredictor)
    model.state = state
    lt, lp = model.log_priors_np(tot, pre)
    assert lt.dtype == np.float32 and lp.dtype == np.float32
    np.testing.assert_array_equal(lt, np.float32([np.log(3.0), np.log(1e-9), np.log(20.0)]))
    np.testing.assert_array_equal(lp, np.float32([np.log(1.0), np.log(1e-9), np.log(0.02)]))
    lt_t, lp_t = model.log_priors(torch.from_numpy(tot), torch.from_numpy(pre))
    assert torch.equal(lt_t, torch.from_numpy(lt)) and torch.equal(lp_t, torch.from_numpy(lp))
    state.config.use_prior, state.log_bias = False, -1.25
    lt, lp = model.log_priors_np(tot, pre)
    np.testing.assert_array_equal(lt, np.float32([-1.25] * 3))
    np.testing.assert_array_equal(lp, lt)
