import numpy as np
import torch

from llmco2_sidecar.predictor import gnn as gnn_mod
from llmco2_sidecar.predictor.evaluate import predict_gnn
from llmco2_sidecar.predictor.gnn import GNNConfig, GNNPredictor, load_default
from llmco2_sidecar.predictor.training import TrainOptions, train_gnn
from llmco2_sidecar.workload import StepBatch

OPTS = TrainOptions(epochs=15, eval_every=5)


def _train(tiny_data, config=GNNConfig(), seed=0, val=True):
    ex, feats = tiny_data
    idx = np.arange(len(ex))
    return train_gnn(ex, feats, idx[:-3], idx[-3:] if val else None, config, TrainOptions(**{**OPTS.__dict__, "seed": seed}))


def test_training_is_deterministic(tiny_data):
    a, b = _train(tiny_data, seed=3), _train(tiny_data, seed=3)
    for (k, va), (_, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert torch.equal(va, vb), k
    c = _train(tiny_data, seed=4)
    assert any(not torch.equal(va, vc) for va, vc in zip(a.net.state_dict().values(), c.net.state_dict().values()))


def test_training_lowers_the_error(tiny_data):
    ex, feats = tiny_data
    idx = np.arange(len(ex))
    y = np.array([e.target for e in ex])
    untrained = _train(tiny_data, GNNConfig(use_prior=False), val=False)
    short = train_gnn(ex, feats, idx, None, GNNConfig(use_prior=False), TrainOptions(epochs=1))
    longer = train_gnn(ex, feats, idx, None, GNNConfig(use_prior=False), TrainOptions(epochs=60, weight_decay=0))
    err = lambda m: np.mean(np.abs(predict_gnn(m, ex, feats, idx) / y - 1))  # noqa: E731
    assert err(longer) < err(short)
    assert untrained is not None


def test_predict_steps_shapes_and_units(tiny_data):
    model = _train(tiny_data)
    ex, _ = tiny_data
    dep = ex[0].deployment
    steps = StepBatch.from_steps([[(0, 512), (100, 1)], [(300, 1)] * 8, [(10, 1)]], duration_s=[0.05, 0.02, None])
    p = model.predict_steps(dep, steps)
    assert p.energy_j.shape == p.prefill_energy_j.shape == p.duration_s.shape == (3,)
    assert np.all(p.energy_j > 0) and np.all(np.isfinite(p.energy_j))
    assert p.duration_s[0] == 0.05 and p.duration_s[1] == 0.02
    assert np.isfinite(p.duration_s[2]) and p.duration_s[2] > 0  # predicted where not observed
    assert p.prefill_energy_j[0] > 0 and p.prefill_energy_j[0] <= p.energy_j[0]
    assert p.prefill_energy_j[1] == 0 and p.prefill_energy_j[2] == 0  # decode-only steps
    # a longer observed duration costs more energy (static power)
    p2 = model.predict_steps(dep, StepBatch.from_steps([[(300, 1)] * 8], duration_s=[0.2]))
    assert p2.energy_j[0] > p.energy_j[1]
    empty = model.predict_steps(dep, StepBatch.from_steps([]))
    assert empty.energy_j.shape == (0,)


def test_save_load_round_trip(tiny_data, tmp_path):
    for cfg in (GNNConfig(), GNNConfig(name="nnlqp", two_stage=False, use_prior=False, roofline_features=False, phase_features=False)):
        model = _train(tiny_data, cfg)
        path = model.save(tmp_path / f"{cfg.name}.safetensors")
        assert path.exists() and path.with_suffix(".json").exists()
        loaded = GNNPredictor.load(path)
        assert loaded.name == cfg.name
        ex, feats = tiny_data
        idx = np.arange(len(ex))
        np.testing.assert_allclose(predict_gnn(loaded, ex, feats, idx), predict_gnn(model, ex, feats, idx), rtol=1e-6)
        steps = StepBatch.from_steps([[(0, 64)], [(64, 1)] * 3], duration_s=[None, 0.01])
        a, b = model.predict_steps(ex[0].deployment, steps), loaded.predict_steps(ex[0].deployment, steps)
        np.testing.assert_allclose(a.energy_j, b.energy_j, rtol=1e-6)


def test_load_default_none_without_file(tmp_path, monkeypatch):
    monkeypatch.setattr(gnn_mod, "DEFAULT_MODEL", tmp_path / "absent.safetensors")
    assert load_default() is None


def test_load_default_reads_a_model(tiny_data, tmp_path, monkeypatch):
    model = _train(tiny_data)
    path = model.save(tmp_path / "m.safetensors")
    monkeypatch.setattr(gnn_mod, "DEFAULT_MODEL", path)
    loaded = load_default()
    assert isinstance(loaded, GNNPredictor) and loaded.name == "llmco2-gnn-v2"


def test_feature_column_switches():
    full = GNNConfig()
    nn = GNNConfig(two_stage=False, use_prior=False, roofline_features=False, phase_features=False)
    assert len(nn.node_columns()) < len(full.node_columns())
    assert not any(c.startswith(("prefill_", "decode_")) for c in nn.node_columns())
    assert not any("perf" in c or "mai" in c for c in nn.node_columns())
    assert "log_roofline_s" in full.global_columns() and "log_roofline_s" not in nn.global_columns()


def test_ensemble_averages_members_and_round_trips(tiny_data, tmp_path):
    from llmco2_sidecar.predictor.training import train_ensemble

    ex, feats = tiny_data
    idx = np.arange(len(ex))
    grid = ({"hidden": 8, "weight_decay": 1e-2, "residual_reg": 1.0}, {"hidden": 12, "weight_decay": 0.0, "residual_reg": 0.0})
    ens = train_ensemble(ex, feats, idx[:-3], idx[-3:], GNNConfig(), TrainOptions(epochs=10), grid=grid)
    assert len(ens.nets) == 2 and "val_mape" in ens.state.info
    dep = ex[0].deployment
    steps = StepBatch.from_steps([[(0, 128)], [(128, 1)] * 4], duration_s=[0.03, 0.01])
    # the ensemble's log energy (before the power window) is the mean of its members' log energies
    from llmco2_sidecar.predictor.dataset import featurize_steps

    ens.state.residual_scale, ens.state.residual_bound = 1.0, float("inf")  # the raw members (shrink: test_shrink_window)
    members = [GNNPredictor(n, ens.state) for n in ens.nets]
    fe = featurize_steps(dep, steps, ens.state.duration)
    with torch.no_grad():
        logs = np.mean([m.forward_group(*m._tensors(fe))[1].numpy() for m in members], axis=0)
        np.testing.assert_allclose(ens.forward_group(*ens._tensors(fe))[1].numpy(), logs, rtol=1e-5)
    loaded = GNNPredictor.load(ens.save(tmp_path / "ens.safetensors"))
    assert [n.tot.lin2.in_features for n in loaded.nets] == [8, 12]
    np.testing.assert_allclose(loaded.predict_steps(dep, steps).energy_j, ens.predict_steps(dep, steps).energy_j, rtol=1e-6)


def test_shipped_model_never_exceeds_board_power():
    """A step's predicted GPU energy stays within n_gpus x TDP x duration, also on GPUs the model never
    saw (A100) and for heavy prefill steps."""
    import numpy as np

    from llmco2_sidecar.hardware import load_gpu
    from llmco2_sidecar.models import load_model
    from llmco2_sidecar.predictor.api import Deployment
    from llmco2_sidecar.predictor.gnn import load_default
    from llmco2_sidecar.workload import Parallelism, StepBatch

    model = load_default()
    assert model is not None
    steps = StepBatch.from_steps([[(0, 512)] * 8, [(1000, 1)] * 128, [(0, 2048), (500, 1)], [(3000, 1)] * 16],
                                 [0.05, 0.03, None, 0.002])
    for gpu, tp in (("A100", 1), ("L4", 1), ("H100", 2), ("B200", 1)):
        dep = Deployment(load_model("meta-llama/Llama-2-7b-hf"), load_gpu(gpu), Parallelism(tp=tp))
        pred = model.predict_steps(dep, steps)
        cap = dep.n_gpus * dep.gpu.tdp_w * pred.duration_s
        assert (pred.energy_j <= cap * (1 + 1e-12)).all(), (gpu, pred.energy_j / pred.duration_s)
        assert (pred.prefill_energy_j <= pred.energy_j + 1e-12).all()
        assert (pred.energy_j > 0).all()
