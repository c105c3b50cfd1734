"""Physics every prediction obeys on every catalog GPU: Roofline floor on time, power window, loaded
idle; and the issue-14 cases (A100 prefill above peak, B200/L4 pinned at TDP)."""

import numpy as np
import pytest

from llmco2_sidecar.graph import step_features
from llmco2_sidecar.hardware.catalog import load_catalog
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.predictor.gnn import load_default
from llmco2_sidecar.predictor.physics import GuardStats, apply_power_bounds, loaded_idle_w, power_bounds_j
from llmco2_sidecar.predictor.prior import PRIOR_TERMS, DurationModel, prior_terms
from llmco2_sidecar.workload import Parallelism, StepBatch

#: step shapes: (context, new tokens) per request; prefill-only, decode-only and mixed, small to large
SHAPES = [
    [(0, 128)], [(0, 1024)] * 8, [(0, 4096)] * 2, [(0, 8192)],
    [(100, 1)], [(1000, 1)] * 32, [(4000, 1)] * 256, [(500, 1)] * 1024,
    [(0, 512), *[(800, 1)] * 64], [(0, 2048), *[(2000, 1)] * 8],
]


def _steps(durations=None) -> StepBatch:
    return StepBatch.from_steps(SHAPES, durations or [None] * len(SHAPES))


def _gpus():
    return sorted(load_catalog().gpus.values(), key=lambda g: g.gpu_id)


def test_power_window_clips_and_counts():
    stats = GuardStats()
    e = np.array([5.0, 50.0, 500.0])
    pre = e * 0.5
    lo, hi = np.array([10.0, 10.0, 10.0]), np.array([100.0, 100.0, 100.0])
    out, out_pre = apply_power_bounds(e, pre, lo, hi, stats)
    np.testing.assert_allclose(out, [10.0, 50.0, 100.0])
    np.testing.assert_allclose(out_pre, out * 0.5)  # the prefill part keeps its share
    assert (stats.steps, stats.tdp_bound, stats.idle_bound) == (3, 1, 1)
    assert "TDP cap bound 1 of 3" in stats.describe()


def test_loaded_idle_sits_between_bare_idle_and_half_the_power_limit():
    for gpu in _gpus():
        assert gpu.idle_w < loaded_idle_w(gpu) <= 0.5 * gpu.tdp_w, gpu.gpu_id


def test_duration_model_is_never_faster_than_the_roofline():
    from llmco2_sidecar.graph.step_time import step_roofline_s

    dep = Deployment(load_model("meta-llama/Llama-2-7b-hf"), _gpus()[0])
    steps = _steps()
    roof, n = step_roofline_s(dep, steps)
    np.testing.assert_allclose(DurationModel().predict_steps_s(dep, steps), roof)  # zero overhead: the Roofline time
    # a fit on observed times 1.3 x Roofline + 5 ms recovers the overhead it was given
    a = DurationModel().step_terms(dep, steps)
    m = DurationModel().fit(a, 1.3 * roof + 0.005)
    np.testing.assert_allclose(m.coef, [0.3, 0.005, 0.0], atol=1e-6)
    assert (m.predict_steps_s(dep, steps) >= roof).all()


def test_kernel_base_stretches_only_the_compute_bound_kernels_by_the_gpus_gemm_efficiency():
    from llmco2_sidecar.graph.step_time import step_roofline_s, step_time_split
    from llmco2_sidecar.hardware.kernel_efficiency import efficiency

    spec = load_model("meta-llama/Llama-2-7b-hf")
    for gpu in _gpus():
        dep = Deployment(spec, gpu)
        steps = _steps()
        roof, compute, n = step_time_split(dep, steps)
        np.testing.assert_allclose(roof, step_roofline_s(dep, steps)[0])
        assert ((compute >= 0) & (compute <= roof * (1 + 1e-12))).all(), gpu.gpu_id
        # a long prefill is mostly compute-bound, one short decode step not at all
        assert compute[SHAPES.index([(0, 8192)])] > 0.8 * roof[SHAPES.index([(0, 8192)])], gpu.gpu_id
        assert compute[SHAPES.index([(100, 1)])] == 0.0, gpu.gpu_id
        eff = efficiency(gpu)
        assert 0.3 < eff <= 1.0, gpu.gpu_id
        zero = DurationModel(base="kernel")
        t = zero.predict_steps_s(dep, steps)
        np.testing.assert_allclose(t, roof + compute * (1 / eff - 1))  # no overhead: the kernels' time
        assert (t >= roof).all()
    # a fit of kernel-base terms recovers the overheads on top of the kernels' time
    dep = Deployment(spec, _gpus()[0])
    m = DurationModel(base="kernel")
    a = m.step_terms(dep, _steps())
    m.fit(a, a[:, 0] + 0.002 + 1e-5 * a[:, 2])
    np.testing.assert_allclose(m.coef, [0.0, 0.002, 1e-5], atol=1e-7)
    with pytest.raises(ValueError, match="duration base"):
        DurationModel(base="kernels")


def test_a_prefill_no_longer_runs_near_peak():
    """Issue 14's case: a Llama-2-7B prefill of 8 x 1024 tokens on an A100. With the kernel base the
    shipped model puts it at the FLOP rate of the A100's measured compute-bound GEMMs, not at 90-odd %."""
    from llmco2_sidecar.hardware import load_gpu
    from llmco2_sidecar.hardware.kernel_efficiency import efficiency
    from llmco2_sidecar.predictor.gnn import load_default

    gpu = load_gpu("A100")
    dep = Deployment(load_model("meta-llama/Llama-2-7b-hf"), gpu)
    steps = StepBatch.from_steps([[(0, 1024)] * 8])
    t = float(load_default().predict_duration_s(dep, steps)[0])
    f = step_features(dep, steps, with_nodes=False)
    rate = float(f.flops[0]) / t / gpu.peak_flops("bf16")
    assert 0.5 < rate <= efficiency(gpu) + 1e-9, rate


def test_shipped_models_use_the_kernel_base_and_older_files_read_as_roofline(tmp_path):
    import json
    import shutil

    from llmco2_sidecar.predictor.gnn import DEFAULT_MODEL, DEFAULT_MOE_MODEL, GNNPredictor

    for path in (DEFAULT_MODEL, DEFAULT_MOE_MODEL):
        assert GNNPredictor.load(path).state.duration.base == "kernel", path.name
    shutil.copy(DEFAULT_MODEL, tmp_path / "old.safetensors")
    meta = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    del meta["duration_base"]  # a file written before the key existed
    (tmp_path / "old.json").write_text(json.dumps(meta))
    assert GNNPredictor.load(tmp_path / "old.safetensors").state.duration.base == "roofline"


@pytest.fixture(scope="module")
def shipped():
    model = load_default()
    assert model is not None, "the shipped model file is missing"
    return model


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-2-7b-hf", "meta-llama/Llama-3.1-70B"])
def test_every_catalog_gpu_stays_inside_the_physics(shipped, model_id):
    """Every catalog GPU x a grid of step shapes, durations predicted: never faster than the Roofline
    time, never below idle nor above the power limit; and the fitted prior alone (no guard) already
    stays below the power limit, so the guard is a guard, not the model."""
    spec = load_model(model_id)
    for gpu in _gpus():
        tp = 1 if spec.weight_bytes < 0.6 * gpu.memory_bytes else 8
        dep = Deployment(spec, gpu, Parallelism(tp=tp))
        steps = _steps()
        pred = shipped.predict_steps(dep, steps)
        f = step_features(dep, steps, with_nodes=False)
        assert (pred.duration_s >= f.roofline_s * (1 - 1e-12)).all(), gpu.gpu_id
        lo, hi = power_bounds_j(dep.n_gpus, gpu, pred.duration_s)
        assert (pred.energy_j >= lo * (1 - 1e-9)).all() and (pred.energy_j <= hi * (1 + 1e-9)).all(), gpu.gpu_id
        assert (pred.prefill_energy_j <= pred.energy_j + 1e-12).all()
        tot, _ = prior_terms(dep, f, pred.duration_s, StepBatch.from_steps(SHAPES, list(pred.duration_s)))
        coef = shipped.state.prior.coef
        per_gpu_s = dep.n_gpus * pred.duration_s
        prior_w = tot @ coef / per_gpu_s
        # prior.fit_physical keeps busy time + any ONE resource's fraction <= 1: a step bound by one
        # resource stays under the power limit; a step at the ridge point (compute and memory both near
        # their peak) may exceed it by at most the smaller of the two terms (documented there)
        jc, jm = PRIOR_TERMS.index("compute"), PRIOR_TERMS.index("memory")
        ridge_w = np.minimum(tot[:, jc] * coef[jc], tot[:, jm] * coef[jm]) / per_gpu_s
        assert (prior_w <= gpu.tdp_w + ridge_w).all(), (gpu.gpu_id, prior_w.max())
        assert (prior_w >= gpu.idle_w).all(), (gpu.gpu_id, prior_w.min())


def test_issue_14_cases(shipped):
    """A100 prefill of 8 x 1024 tokens no faster than peak; B200 and L4 prefill below their power
    limit without the guard acting (they sat exactly at 1000 W and 72 W before)."""
    spec = load_model("meta-llama/Llama-2-7b-hf")
    steps = StepBatch.from_steps([[(0, 1024)] * 8], [None])
    a100 = load_catalog().gpu("A100-SXM4-40GB")
    dep = Deployment(spec, a100)
    pred = shipped.predict_steps(dep, steps)
    f = step_features(dep, steps, with_nodes=False)
    assert f.flops[0] / pred.duration_s[0] <= a100.peak_flops("bf16")
    for name in ("B200", "L4"):
        gpu = load_catalog().gpu(name)
        before = shipped.guard.tdp_bound
        pred = shipped.predict_steps(Deployment(spec, gpu), steps)
        assert shipped.guard.tdp_bound == before, name
        assert pred.energy_j[0] / pred.duration_s[0] < 0.99 * gpu.tdp_w, name
