import json

from llmco2_sidecar.cli.main import main
from llmco2_sidecar.hardware.catalog import load_gpu
from llmco2_sidecar.models.catalog import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.predictor.gnn import GNNPredictor
from llmco2_sidecar.predictor.plan import PLAN_COLUMNS, AZURE_CONV, build_plan, read_plan, write_plan
from llmco2_sidecar.predictor.roofline import RooflinePredictor
from llmco2_sidecar.workload import Parallelism


def _write_mlenergy(folder, rows):
    (folder / "models").mkdir(parents=True)
    by_model = {}
    for r in rows:
        by_model.setdefault(r.model_id, []).append(r)
    for model_id, rows in by_model.items():
        doc = {"model_id": model_id, "task": "lm-arena-chat", "architecture": "Dense Transformer",
               "weight_precision": "bfloat16", "configurations": [{
                   "gpu_model": r.gpu, "num_gpus": r.num_gpus, "max_num_seqs": r.max_num_seqs,
                   "avg_batch_size": r.avg_batch_size, "avg_output_len": r.avg_output_len,
                   "energy_per_token_joules": r.energy_per_token_j, "avg_power_watts": r.avg_power_w,
                   "output_throughput_tokens_per_sec": r.output_tokens_per_s,
                   "parallelization": {"tensor_parallel": r.tp, "data_parallel": 1},
                   "output_length_distribution": {"bins": list(r.hist_edges), "counts": list(r.hist_counts)},
               } for r in rows]}
        (folder / "models" / (model_id.replace("/", "__") + "__lm-arena-chat.json")).write_text(json.dumps(doc))
    return folder


def test_llmco2_train_end_to_end(tmp_path, capsys, tiny_mlenergy_rows):
    data = _write_mlenergy(tmp_path / "mle", tiny_mlenergy_rows)
    out = tmp_path / "m.safetensors"
    args = ["train", "--data", str(data), "--data-v2", "none", "--measurements", str(tmp_path / "none"), "--out", str(out),
            "--epochs", "4", "--seed", "1", "--quiet"]
    assert main(args) == 0
    assert out.exists() and out.with_suffix(".json").exists()
    report = out.with_suffix(".report.md").read_text()
    assert "Held-out scores" in report and "gpu=B200" in report
    model = GNNPredictor.load(out)
    assert model.state.info["n_examples"] == 12 and model.state.info["seed"] == 1
    assert model.state.info["dense_only"] is False  # benchmarks/moe_transfer.py refuses such a model
    assert not model.state.config.soft_window and "GNN residual kept" in report  # the shipped dense recipe
    # deterministic: the same command gives the same weights
    out2 = tmp_path / "m2.safetensors"
    assert main(args[:-5] + ["--out", str(out2), "--epochs", "4", "--seed", "1", "--quiet", "--no-heldout"]) == 0
    assert out.read_bytes() == out2.read_bytes()
    out3 = tmp_path / "m3.safetensors"
    assert main(args[:-5] + ["--out", str(out3), "--epochs", "4", "--seed", "1", "--quiet", "--no-heldout", "--moe-recipe"]) == 0
    assert GNNPredictor.load(out3).state.config.soft_window
    clipped = GNNPredictor.load(out3)  # clipping is the default (both shipped models clip)
    assert clipped.state.clip_inputs and model.state.clip_inputs
    assert (clipped.state.norm["glob_lo"] <= clipped.state.norm["glob_hi"]).all()
    out4 = tmp_path / "noclip.safetensors"
    assert main(args[:-5] + ["--out", str(out4), "--epochs", "4", "--seed", "1", "--quiet", "--no-heldout",
                             "--no-clip-inputs"]) == 0  # llmco2-gnn-v1's recipe
    assert not GNNPredictor.load(out4).state.clip_inputs


def test_llmco2_train_shrink_by_gpu_and_bag(tmp_path, capsys, tiny_mlenergy_rows):
    """--shrink-by gpu: the residual's scale and bound come from inner leave-one-GPU-out folds of all the
    training data (the tiny set: H100 and B200), recorded in the model file and the report; --bag 2: four
    members."""
    data = _write_mlenergy(tmp_path / "mle", tiny_mlenergy_rows)
    out = tmp_path / "s.safetensors"
    assert main(["train", "--data", str(data), "--data-v2", "none", "--measurements", str(tmp_path / "none"),
                 "--out", str(out), "--epochs", "4", "--inner-epochs", "3", "--seed", "1", "--quiet", "--no-heldout",
                 "--shrink-by", "gpu", "--bag", "2"]) == 0
    model = GNNPredictor.load(out)
    inner = model.state.info["shrink_inner"]
    assert [f["held"] for f in inner["folds"]] == ["gpu=B200", "gpu=H100"] and inner["inner_epochs"] == 3
    assert model.state.info["residual_scale"] == model.state.residual_scale and len(model.nets) == 4
    assert "inner leave-one-gpu-out folds: gpu=B200" in out.with_suffix(".report.md").read_text()
    assert main(["train", "--data", str(data), "--shrink-by", "precision", "--quiet"]) == 2
    assert "shrink-by" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--bag", "0", "--quiet"]) == 2
    assert "bag" in capsys.readouterr().err


def test_llmco2_train_bad_input(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--epochs", "2", "--quiet"]) == 2
    assert "data" in capsys.readouterr().err
    assert main(["train", "--epochs", "0", "--quiet"]) == 2


def test_plan_round_trip_and_ranking(tmp_path):
    class Scaled(RooflinePredictor):
        name = "scaled"

        def predict_steps(self, dep, steps):
            p = super().predict_steps(dep, steps)
            # disagrees with plain Roofline far more on L4 than elsewhere
            p.energy_j = p.energy_j * (3.0 if dep.gpu.gpu_id == "L4" else 1.1)
            return p

    rows = build_plan([RooflinePredictor(), Scaled()], AZURE_CONV, measured_gpus=set(), measured_models=set(),
                      n_candidates=40, n_plan=8, seed=0)
    assert 0 < len(rows) <= 8
    assert rows[0].gpu == "L4"  # the largest disagreement comes first
    assert len({r.gpu for r in rows}) > 1  # round-robin over GPUs
    for r in rows:
        dep = Deployment(load_model(r.model), load_gpu(r.gpu), Parallelism(tp=r.tp))
        assert r.output >= 2 and r.batch >= 1 and r.layers == dep.model.num_layers
    path = write_plan(rows, tmp_path / "plan.csv")
    assert path.read_text().splitlines()[0] == ",".join(PLAN_COLUMNS)
    assert read_plan(path) == rows


def test_llmco2_train_step_times_and_prior_on_all_are_recorded(tmp_path, tiny_mlenergy_rows):
    """``--step-times roofline --prior-on-all`` (the dense model's recipe) land in the file's info; a file
    trained without them carries neither key (its bytes stay those of before the switches); a bad
    choice is refused."""
    data = _write_mlenergy(tmp_path / "mle", tiny_mlenergy_rows)
    common = ["train", "--data", str(data), "--data-v2", "none", "--measurements", str(tmp_path / "none"),
              "--epochs", "2", "--no-heldout", "--quiet"]
    assert main(common + ["--out", str(tmp_path / "a.safetensors"), "--step-times", "roofline", "--prior-on-all"]) == 0
    assert main(common + ["--out", str(tmp_path / "b.safetensors")]) == 0
    on = json.loads((tmp_path / "a.json").read_text())["info"]
    off = json.loads((tmp_path / "b.json").read_text())["info"]
    assert on["step_times"] == "roofline" and on["prior_on_all"] is True
    assert "step_times" not in off and "prior_on_all" not in off
    import pytest

    with pytest.raises(SystemExit):
        main(common + ["--out", str(tmp_path / "c.safetensors"), "--step-times", "measured"])


def test_llmco2_train_duration_base_is_recorded_and_changes_only_the_duration_model(tmp_path, tiny_mlenergy_rows):
    """``--duration-base`` (default ``kernel``) lands in the file as ``duration_base``; the networks and the
    prior are the same bytes either way (no training row lacks its duration); a bad choice is refused."""
    import pytest

    data = _write_mlenergy(tmp_path / "mle", tiny_mlenergy_rows)
    common = ["train", "--data", str(data), "--data-v2", "none", "--measurements", str(tmp_path / "none"),
              "--epochs", "2", "--no-heldout", "--quiet"]
    assert main(common + ["--out", str(tmp_path / "k.safetensors")]) == 0
    assert main(common + ["--out", str(tmp_path / "r.safetensors"), "--duration-base", "roofline"]) == 0
    k = json.loads((tmp_path / "k.json").read_text())
    r = json.loads((tmp_path / "r.json").read_text())
    assert (k["duration_base"], r["duration_base"]) == ("kernel", "roofline")
    assert k["prior_coef"] == r["prior_coef"]
    assert (tmp_path / "k.safetensors").read_bytes() == (tmp_path / "r.safetensors").read_bytes()
    with pytest.raises(SystemExit):
        main(common + ["--out", str(tmp_path / "c.safetensors"), "--duration-base", "gemm"])
