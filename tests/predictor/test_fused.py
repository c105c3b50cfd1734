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


def _case(s=5, n=6, n_static=3, n_dyn=4, n_glob=5, seed=0):
    """Raw features (static per node, dynamic per step), a model reading some of the columns, its
    normalisation, and the torch reference's normalised inputs."""
    rng = np.random.default_rng(seed)
    ei = torch.tensor([[0, 1, 1, 2, 3, 4], [1, 2, 3, 4, 4, 5]])
    adj = mean_adjacency(ei, n)
    static = rng.normal(size=(n, n_static)) * 2
    dyn = (rng.normal(size=(n, s, n_dyn)) * 3 + 10).astype(np.float32)  # node-major, raw (not centred)
    glob = (rng.normal(size=(s, n_glob)) * 2 + 5).astype(np.float32)
    node_cols = np.array([0, 2, 3, 4, 6])  # static 0 and 2, dynamic 0, 1 and 3 (dynamic 2 and static 1 unread)
    glob_cols = np.array([4, 0, 1])
    norm = {"node_mean": rng.normal(size=node_cols.size).astype(np.float32) + 3,
            "node_std": rng.uniform(0.5, 3, node_cols.size).astype(np.float32),
            "glob_mean": rng.normal(size=glob_cols.size).astype(np.float32) + 2,
            "glob_std": rng.uniform(0.5, 3, glob_cols.size).astype(np.float32)}
    full = np.concatenate([np.broadcast_to(static.astype(np.float32), (s, n, n_static)), dyn.transpose(1, 0, 2)], axis=2)
    x = (full[:, :, node_cols] - norm["node_mean"]) / norm["node_std"]
    g = (glob[:, glob_cols] - norm["glob_mean"]) / norm["glob_std"]
    lpp, lpt = rng.normal(size=s).astype(np.float32), rng.normal(size=s).astype(np.float32)
    ref_inputs = (torch.from_numpy(x.astype(np.float32)), adj, torch.from_numpy(g.astype(np.float32)),
                  torch.from_numpy(lpp), torch.from_numpy(lpt))
    fused_args = dict(norm=norm, node_cols=node_cols, glob_cols=glob_cols, n_static=n_static, n_dynamic=n_dyn,
                      n_global=n_glob)
    return ref_inputs, fused_args, (static.astype(np.float32), adj.numpy(), dyn, glob, lpp, lpt)


@pytest.mark.parametrize("steps", [1, 5, 300])  # 300: several blocks of the graph part, per-head layer 2
@pytest.mark.parametrize("members", [[(8, True)], [(8, True), (12, True)], [(6, False)], [(6, False), (5, True)]])
def test_fused_equals_torch(members, steps):
    """Normalisation, the static node features and the heads folded into the weights: the same
    predictions as the torch modules on normalised features (float32 last digits aside)."""
    (x, adj, g, lpp, lpt), fargs, (static, adj_np, dyn, glob, lpp_np, lpt_np) = _case(s=steps, seed=steps)
    nets = [_randomised(TwoStageGNN(x.shape[2], g.shape[1], hidden=h, two_stage=two), seed=i)
            for i, (h, two) in enumerate(members)]
    with torch.no_grad():
        outs = [n(x, adj, g, lpp, lpt) for n in nets]
    want_pre = torch.stack([o[0] for o in outs]).mean(0).numpy()
    want_tot = torch.stack([o[1] for o in outs]).mean(0).numpy()
    fused = FusedForward(nets, **fargs)
    got_pre, got_tot = fused(fused.plan(static, adj_np), dyn, glob, lpp_np, lpt_np)
    assert got_pre.dtype == np.float32 and got_tot.shape == (steps,)
    np.testing.assert_allclose(got_pre, want_pre, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(got_tot, want_tot, rtol=1e-5, atol=2e-5)
    assert np.abs(want_tot - lpt_np).max() > 0.1  # the heads do contribute: the check is not vacuous


def test_fused_block_paths_agree():
    """Small blocks (one block-diagonal product) and large ones (one product per head) agree."""
    (x, adj, g, _, _), fargs, (static, adj_np, dyn, glob, lpp, lpt) = _case(s=40, seed=3)
    nets = [_randomised(TwoStageGNN(x.shape[2], g.shape[1], hidden=h), seed=i) for i, h in enumerate((8, 12))]
    fused = FusedForward(nets, **fargs)
    plan = fused.plan(static, adj_np)
    fused.DENSE_ROWS = 0
    per_head = fused(plan, dyn, glob, lpp, lpt)
    fused.DENSE_ROWS = 10 ** 9
    dense = fused(plan, dyn, glob, lpp, lpt)
    fused.BLOCK_STEPS = 7
    blocks = fused(plan, dyn, glob, lpp, lpt)
    for a, b in ((per_head, dense), (dense, blocks)):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-6, atol=1e-6)


def test_gathered_aggregation_equals_the_adjacency_product():
    """The second layer's mean aggregation as two row gathers (GraphPlan.gather) gives the same
    floats as the [N, N] product; a node averaging three predecessors falls back to the product."""
    from llmco2_sidecar.predictor.fused import _gather_form

    (x, adj, g, _, _), fargs, (static, adj_np, dyn, glob, lpp, lpt) = _case(s=70, seed=4)
    nets = [_randomised(TwoStageGNN(x.shape[2], g.shape[1], hidden=h), seed=i) for i, h in enumerate((8, 12))]
    fused = FusedForward(nets, **fargs)
    plan = fused.plan(static, adj_np)
    assert plan.gather is not None
    fused.GATHER_COLS = 0
    gathered = fused(plan, dyn, glob, lpp, lpt)
    fused.GATHER_COLS = 10 ** 9
    product = fused(plan, dyn, glob, lpp, lpt)
    for a, b in zip(gathered, product):
        np.testing.assert_array_equal(a, b)
    p0, p1, w = plan.gather
    h = np.random.default_rng(0).random((adj_np.shape[0], 9)).astype(np.float32)
    np.testing.assert_array_equal((h[p0] + h[p1]) * w, adj_np @ h)
    three = mean_adjacency(torch.tensor([[0, 1, 2], [3, 3, 3]]), 4).numpy()
    assert _gather_form(three) is None


_SHIPPED_CASES = [("meta-llama/Llama-2-7b-hf", "H100", 1), ("meta-llama/Llama-3.1-70B", "H100", 4),
                  ("Qwen/Qwen3-32B", "B200", 2), ("meta-llama/Llama-2-13b-hf", "A100-SXM4-80GB", 1),
                  ("Qwen/Qwen3-30B-A3B", "H100", 2), ("openai/gpt-oss-20b", "H100", 1)]


@pytest.mark.parametrize("model_id,gpu,tp", _SHIPPED_CASES)
def test_shipped_model_fused_path_equals_its_torch_forward(model_id, gpu, tp):
    """The product's path (node-major features, fused forward) against the trained model's own torch
    forward on the training featurisation: within 1e-5 relative in energy, every step, with and
    without observed durations, for 1 step and for more than one block of steps."""
    model = load_default()
    dep = Deployment(load_model(model_id), load_gpu(gpu), Parallelism(tp=tp))
    rng = np.random.default_rng(7)
    for n_steps, observed in ((1, True), (3, False), (200, True)):
        steps = StepBatch.from_steps(
            [[(int(rng.integers(1, 4000)), 1)] * int(rng.integers(1, 40)) + ([(0, int(rng.integers(16, 2000)))] if i % 4 == 0 else [])
             for i in range(n_steps)],
            duration_s=list(rng.uniform(0.01, 0.08, n_steps)) if observed else None)
        fused = model.predict_steps(dep, steps)
        ref = model.predict_steps(dep, steps, reference=True)
        np.testing.assert_allclose(fused.energy_j, ref.energy_j, rtol=1e-5)
        np.testing.assert_allclose(fused.prefill_energy_j, ref.prefill_energy_j, rtol=1e-5, atol=1e-12)
        np.testing.assert_array_equal(fused.duration_s, ref.duration_s)


def test_node_major_features_are_the_training_features():
    """featurize_steps(node_major=True) holds the same numbers as the training layout, transposed."""
    from llmco2_sidecar.graph.kernels import KERNEL_TYPES
    from llmco2_sidecar.predictor.dataset import featurize_steps

    model = load_default()
    dep = Deployment(load_model("Qwen/Qwen3-30B-A3B"), load_gpu("H100"), Parallelism(tp=2))
    steps = StepBatch.from_steps([[(100, 1), (0, 300)], [(5, 1)] * 9, [(0, 4000)]], duration_s=[0.02, None, 0.05])
    a = featurize_steps(dep, steps, model.state.duration)
    b = featurize_steps(dep, steps, model.state.duration, node_major=True)
    n_static = len(KERNEL_TYPES) + 3
    np.testing.assert_array_equal(b.features.node_dyn.transpose(1, 0, 2), a.node_x[:, :, n_static:])
    np.testing.assert_array_equal(np.broadcast_to(b.features.layer_graph.static_nodes.astype(np.float32), a.node_x[:, :, :n_static].shape),
                                  a.node_x[:, :, :n_static])
    np.testing.assert_array_equal(a.global_x, b.global_x)
    assert b.node_x.shape == (3, a.node_x.shape[1], 0)


def test_filled_durations_give_the_features_of_observed_ones():
    """A missing duration is filled by the duration model; the features then equal those of the same
    steps with that duration observed (one featurisation pass, not two)."""
    from llmco2_sidecar.predictor.dataset import featurize_steps

    model = load_default()
    dep = Deployment(load_model("meta-llama/Llama-3.1-8B"), load_gpu("H100"), Parallelism(tp=1))
    steps = StepBatch.from_steps([[(100, 1), (0, 300)], [(5, 1)] * 9], duration_s=[0.02, None])
    filled = featurize_steps(dep, steps, model.state.duration)
    observed = featurize_steps(dep, StepBatch(steps.request_step, steps.context_tokens, steps.new_tokens,
                                              filled.duration_s), model.state.duration)
    assert filled.duration_s[0] == 0.02 and np.isfinite(filled.duration_s[1])
    for field in ("node_x", "global_x", "prior_tot", "prior_pre", "e_low", "e_high"):
        np.testing.assert_array_equal(getattr(filled, field), getattr(observed, field))


def test_predictor_rebuilds_the_fused_forward_after_training_changed_a_parameter():
    model = load_default()
    dep = Deployment(load_model("meta-llama/Llama-3.1-8B"), load_gpu("H100"), Parallelism(tp=1))
    steps = StepBatch.from_steps([[(0, 256)], [(256, 1), (0, 64)]], duration_s=[0.02, 0.015])
    before = model.predict_steps(dep, steps).energy_j
    with torch.no_grad():  # an optimizer step changes parameters in place
        model.nets[0].tot.lin2.bias.add_(0.5)
    after = model.predict_steps(dep, steps).energy_j
    np.testing.assert_allclose(after / before, np.exp(0.5 / len(model.nets)), rtol=1e-5)


@pytest.mark.parametrize("use_prior,two_stage", [(False, True), (True, False)])
def test_variants_without_prior_or_second_stage_agree_with_torch(tiny_data, use_prior, two_stage):
    """The baselines' variants (no physics prior: a constant log bias; a single GNN) through the fused
    forward give their torch modules' predictions."""
    from llmco2_sidecar.predictor.gnn import GNNConfig
    from llmco2_sidecar.predictor.training import TrainOptions, train_gnn

    ex, feats = tiny_data
    model = train_gnn(ex, feats, np.arange(len(ex)), None, GNNConfig(use_prior=use_prior, two_stage=two_stage),
                      TrainOptions(epochs=3))
    dep = ex[0].deployment
    steps = StepBatch.from_steps([[(0, 128)], [(128, 1)] * 4, [(300, 1), (0, 40)]], duration_s=[0.03, 0.01, 0.02])
    fused = model.predict_steps(dep, steps)
    plain = model.predict_steps(dep, steps, reference=True)
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


def test_numpy_blas_team_follows_torch_intra_op_threads():
    """The fused forward's products run on NumPy's BLAS: its team takes torch's intra-op thread count
    (the sidecar's predictor_threads, replay's one thread) at the next prediction."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from llmco2_sidecar.predictor import threads

    def blas_threads() -> set:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before_torch, before_blas = torch.get_num_threads(), max(blas_threads())
    model = load_default()
    dep = Deployment(load_model("meta-llama/Llama-3.1-8B"), load_gpu("H100"), Parallelism(tp=1))
    steps = StepBatch.from_steps([[(0, 64)]], duration_s=[0.01])
    try:
        torch.set_num_threads(2)
        model.predict_steps(dep, steps)
        if blas_threads() != {2}:
            pytest.skip("the environment caps NumPy's BLAS at one thread (OPENBLAS_NUM_THREADS)")
        torch.set_num_threads(1)
        model.predict_steps(dep, steps)
        assert blas_threads() == {1}
    finally:
        torch.set_num_threads(before_torch)
        threadpool_limits(limits=before_blas, user_api="blas")
        threads._applied[0] = None
