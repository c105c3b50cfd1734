"""The shipped GNN was trained before the MoE node types existed: loading it widens its first layer
(zero columns; a new type reads as its parent type) so that it predicts exactly what it did on dense
graphs, and MoE graphs get the parent types' view. Checked against the raw weights run the old way."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llmco2_sidecar.graph import NODE_FEATURE_NAMES
from llmco2_sidecar.graph.kernels import KERNEL_TYPE_PARENT
from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.predictor.dataset import featurize_steps
from llmco2_sidecar.predictor.gnn import ALL_GLOBALS, DEFAULT_MODEL, GNNConfig, GNNPredictor, ModelState
from llmco2_sidecar.predictor.layers import TwoStageGNN
from llmco2_sidecar.predictor.prior import DurationModel, PhysicsPrior
from llmco2_sidecar.workload import Parallelism, StepBatch

STEPS = StepBatch.from_steps([[(0, 700)], [(0, 300), (512, 1), (4000, 1)], [(8191, 1)] * 64], duration_s=[0.08, None, 0.03])


NEW_NODE = [f"type_{t}" for t in KERNEL_TYPE_PARENT]
NEW_GLOBAL = ["log_active_params", "log1p_experts", "experts_per_token", "mean_weight_bits"]


@pytest.fixture(scope="module")
def old_path(tmp_path_factory):
    """The shipped model as a file trained before the MoE columns existed: its weights and
    normalisation for those columns removed (a no-op where the shipped file predates them)."""
    from safetensors.torch import save_file

    src = GNNPredictor.load(DEFAULT_MODEL).save(tmp_path_factory.mktemp("m") / "cur.safetensors")
    meta = json.loads(src.with_suffix(".json").read_text())
    t = load_file(str(src))
    keep_n = [j for j, c in enumerate(meta["node_columns"]) if c not in NEW_NODE]
    keep_g = [j for j, c in enumerate(meta["global_columns"]) if c not in NEW_GLOBAL]
    G = len(meta["global_columns"])
    for k, w in list(t.items()):
        if k in ("norm.node_mean", "norm.node_std"):
            t[k] = w[keep_n]
        elif k in ("norm.glob_mean", "norm.glob_std", "norm.glob_lo", "norm.glob_hi"):  # lo/hi: a clipping model
            t[k] = w[keep_g]
        elif k.endswith(("conv1.lin_l.weight", "conv1.lin_r.weight")):
            t[k] = w[:, keep_n].contiguous()
        elif k.endswith("lin1.weight"):
            pooled = w.shape[1] - G - (1 if ".tot." in k and meta["config"]["two_stage"] else 0)
            cols = list(range(pooled)) + [pooled + j for j in keep_g] + list(range(pooled + G, w.shape[1]))
            t[k] = w[:, cols].contiguous()
    meta["node_columns"] = [meta["node_columns"][j] for j in keep_n]
    meta["global_columns"] = [meta["global_columns"][j] for j in keep_g]
    out = src.with_name("old.safetensors")
    save_file(t, str(out), metadata={"format_version": str(meta["format_version"])})
    out.with_suffix(".json").write_text(json.dumps(meta))
    return out


def _old_predictor(path) -> GNNPredictor:
    """The pre-MoE file run on its own (narrower) columns, without any widening."""
    meta = json.loads(path.with_suffix(".json").read_text())
    tensors = load_file(str(path))
    cfg = GNNConfig(**meta["config"])
    nets = []
    for i, hidden in enumerate(meta["member_hidden"]):
        net = TwoStageGNN(len(meta["node_columns"]), len(meta["global_columns"]), int(hidden), cfg.two_stage)
        net.load_state_dict({k[len(f"net{i}."):]: v for k, v in tensors.items() if k.startswith(f"net{i}.")})
        nets.append(net)
    norm = {k[5:]: tensors[k].numpy() for k in tensors if k.startswith("norm.")}
    state = ModelState(cfg, norm, PhysicsPrior(np.array(meta["prior_coef"])),
                       DurationModel(np.array(meta["duration_coef"]), meta.get("duration_base", "roofline")),
                       float(meta["log_bias"]), meta.get("info", {}), float(meta.get("residual_scale", 1.0)),
                       float("inf") if meta.get("residual_bound") is None else float(meta["residual_bound"]),
                       bool(meta.get("clip_inputs", False)))  # the shipped model clips its inputs
    old = GNNPredictor(nets, state)
    old._node_idx = np.array([NODE_FEATURE_NAMES.index(c) for c in meta["node_columns"]])
    old._glob_idx = np.array([ALL_GLOBALS.index(c) for c in meta["global_columns"]])
    return old, meta


def _forward(pred: GNNPredictor, fe) -> np.ndarray:
    with torch.no_grad():
        _, lt = pred.forward_group(*pred._tensors(fe))
    return lt.double().numpy()


def test_old_file_lacks_the_moe_columns(old_path):
    meta = json.loads(old_path.with_suffix(".json").read_text())
    assert not set(NEW_NODE) & set(meta["node_columns"]) and not set(NEW_GLOBAL) & set(meta["global_columns"])
    assert GNNConfig(**meta["config"]).node_columns() != meta["node_columns"]  # so loading it widens


@pytest.mark.parametrize("model,gpu,tp", [("meta-llama/Llama-3.1-8B", "H100", 1), ("Qwen/Qwen3-32B", "A100", 4)])
def test_widened_model_equals_the_old_one_on_dense_graphs(old_path, model, gpu, tp):
    old, _ = _old_predictor(old_path)
    new = GNNPredictor.load(old_path)
    dep = Deployment(load_model(model), load_gpu(gpu), Parallelism(tp=tp))
    fe = featurize_steps(dep, STEPS, new.state.duration)
    np.testing.assert_allclose(_forward(new, fe), _forward(old, fe), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new.predict_steps(dep, STEPS).energy_j, old.predict_steps(dep, STEPS).energy_j, rtol=1e-5)


def test_moe_nodes_read_as_their_parent_types(old_path):
    old, meta = _old_predictor(old_path)
    new = GNNPredictor.load(old_path)
    dep = Deployment(load_model("deepseek-ai/DeepSeek-V3"), load_gpu("H200"), Parallelism(tp=8, dp=2, ep=16))
    fe = featurize_steps(dep, STEPS, new.state.duration)
    seen = fe.node_x.copy()  # what the old model should see: each new type's one-hot moved to its parent
    for child, parent in KERNEL_TYPE_PARENT.items():
        c, p = NODE_FEATURE_NAMES.index(f"type_{child}"), NODE_FEATURE_NAMES.index(f"type_{parent}")
        seen[:, :, p] += seen[:, :, c]
        seen[:, :, c] = 0
    assert fe.node_x[:, :, NODE_FEATURE_NAMES.index("type_expert_linear")].any()
    fe_old = type(fe)(**{**fe.__dict__, "node_x": seen})
    np.testing.assert_allclose(_forward(new, fe), _forward(old, fe_old), rtol=1e-5, atol=1e-5)
    e = new.predict_steps(dep, STEPS).energy_j
    assert np.isfinite(e).all() and (e > 0).all()


def test_dropped_columns_still_refused(tmp_path):
    new = GNNPredictor.load(DEFAULT_MODEL)
    path = new.save(tmp_path / "m.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["node_columns"] = meta["node_columns"] + ["type_from_the_future"]
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="retrain"):
        GNNPredictor.load(path)
