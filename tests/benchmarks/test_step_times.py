"""benchmarks/step_times.py: the SplitwiseSim rows it reads, and a whole run whose kernel-base fit is the
shipped dense model's duration model (the committed model's step times come from the committed data)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import step_times  # noqa: E402


def test_splitwise_rows_are_llama2_70b_on_the_two_catalog_gpus_medians_of_five():
    rows = step_times.splitwise_rows()
    assert len(rows) == 114
    assert {r["gpu"] for r in rows} == {"A100-SXM4-80GB", "H100-SXM5-80GB"}
    assert {r["tp"] for r in rows} == {2, 4, 8}
    # 5 repetitions each; the base point (512 x 1 -> 128) sits in all three one-knob sweeps: 15
    assert all(r["reps"] == (15 if (r["prompt"], r["batch"], r["output"]) == (512, 1, 128) else 5) for r in rows)
    assert all(r["prefill_s"] > 0 and r["tpot_s"] > 0 for r in rows)
    import csv
    import statistics

    with open(step_times.SPLITWISE, newline="") as fh:
        raw = [float(x["prompt_time"]) for x in csv.DictReader(fh) if (x["model"], x["hardware"], x["tensor_parallel"],
               x["prompt_size"], x["batch_size"], x["token_size"]) == ("llama2-70b", "a100-80gb", "4", "2048", "1", "128")]
    one = next(r for r in rows if (r["gpu"], r["tp"], r["prompt"], r["batch"], r["output"]) == ("A100-SXM4-80GB", 4, 2048, 1, 128))
    assert len(raw) == 5 and one["prefill_s"] == pytest.approx(statistics.median(raw) / 1e3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("step_times")
    assert step_times.main(["--out-dir", str(out)]) == 0
    return json.loads((out / "step_times.json").read_text()), (out / "step_times.md").read_text()


def test_the_kernel_fit_on_the_dense_rows_is_the_shipped_dense_models(run):
    from llmco2_sidecar.predictor.gnn import DEFAULT_MODEL

    r, _ = run
    fit = next(d for d in r["mlenergy"]["in_sample"] if d["rows"].startswith("dense") and d["base"] == "kernel")
    shipped = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert shipped["duration_base"] == "kernel"
    np.testing.assert_allclose(fit["coef"], shipped["duration_coef"], rtol=1e-9, atol=1e-12)


def test_the_page_has_every_part_and_the_kernel_base_shortens_the_prefill_miss(run):
    r, md = run
    for head in ("## 1. GEMM efficiency", "## 2. ML.ENERGY mean step time", "## 3. SplitwiseSim",
                 "## 4. ML.ENERGY v3 inter-token latency quantiles", "Reading:"):
        assert head in md
    itl = r["itl"]
    assert itl["n"] > 100 and set(itl["rows"]) == {"kernel", "roofline", "training window",
                                                   "training window, kernel spread (not used)"}
    # the training windows are spread to each row's measured mean: their median gap is within a few percent
    assert abs(itl["rows"]["training window"]["p50"]["bias"]) < 5
    pre = r["splitwise"]["summary"]["prefill|all"]
    assert pre["Roofline alone"]["bias"] < pre["roofline"]["bias"] < pre["kernel"]["bias"] < 0
    assert len(r["mlenergy"]["splits"]) > 20


def test_the_itl_grid_refits_without_the_held_out_architecture_and_scores_every_quantile(run):
    import step_times_itl as itl

    r, md = run
    grid = r["itl_grid"]
    assert [g["efficiency"] for g in grid] == list(itl.GRID_EFFICIENCIES)
    for g in grid:
        assert set(g) == {"efficiency", "p50", "p90", "p99", "mean"}
    # no stretch (1.0) is the old base's kernels: its held-out mean-step MAPE sits near part 2's in-sample figure
    old = next(d for d in r["mlenergy"]["in_sample"] if d["rows"].startswith("dense") and d["base"] == "roofline")
    assert abs(grid[0]["mean"]["mape"] - old["mlenergy-v3"]["mape"]) < 5
    assert "Fitted to those gaps, the efficiency would be" in md


def test_weighted_quantile():
    import step_times_itl as itl

    x, w = np.array([3.0, 1.0, 2.0]), np.array([1.0, 1.0, 2.0])
    assert itl.weighted_quantile(x, w, 0.5) == 2.0 and itl.weighted_quantile(x, w, 0.99) == 3.0
    assert itl.weighted_quantile(x, w, 0.2) == 1.0


def test_own_measurements_part_compares_measured_prefill_and_decode_with_the_duration_model(tmp_path):
    """Part 5 on a file in the harness's format: a prefill measured at exactly the kernel base's time reads 0%
    for 'kernel, kernels alone'; an empty folder says none yet; a bad file is reported, not raised."""
    import csv

    import step_times_itl as itl
    from llmco2_sidecar.hardware import load_gpu
    from llmco2_sidecar.models import load_model
    from llmco2_sidecar.predictor.api import Deployment
    from llmco2_sidecar.predictor.measurements import COLUMNS
    from llmco2_sidecar.predictor.prior import DurationModel
    from llmco2_sidecar.workload import StepBatch

    kernel, roof = DurationModel(base="kernel"), DurationModel()
    dep = Deployment(load_model("meta-llama/Llama-3.1-8B"), load_gpu("H100"))
    prefill_s = float(kernel.base_s(dep, StepBatch.from_steps([[(0, 2048)] * 8]))[0][0])
    folder = tmp_path / "m"
    folder.mkdir()
    with (folder / "h100.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerow(dict(gpu_name="H100", driver="550", torch_version="2.4", model="meta-llama/Llama-3.1-8B", layers=32,
                        batch=8, prompt=2048, output=33, tp=1, prefill_j=300.0, decode_j=200.0, prefill_s=prefill_s,
                        decode_s=0.9, idle_w=110, repetitions=3, spread=0.01))
    out = itl.own_part(folder, {"kernel": kernel, "roofline": roof})
    assert out["n"] == 1
    pre = out["rows"]["prefill|H100-SXM5-80GB"]
    assert abs(pre["kernel, kernels alone"]["bias"]) < 1e-6 and pre["roofline, kernels alone"]["bias"] < -20
    assert "decode|H100-SXM5-80GB" in out["rows"]
    empty = itl.own_part(tmp_path / "none", {"kernel": kernel})
    assert empty == {"n": 0, "rows": {}}
    (folder / "h100.csv").write_text((folder / "h100.csv").read_text().replace(",0.01", ",x"))
    assert "spread" in itl.own_part(folder, {"kernel": kernel})["error"]
