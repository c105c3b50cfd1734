import numpy as np
import pytest

from llmco2_sidecar.predictor.dataset import example_prior_terms
from llmco2_sidecar.predictor.physics import loaded_idle_w
from llmco2_sidecar.predictor.prior import PRIOR_TERMS, PhysicsPrior, fit_relative_nnls


def test_relative_nnls_recovers_exact_coefficients():
    rng = np.random.default_rng(0)
    a = np.column_stack([rng.uniform(0.01, 1, 50), rng.uniform(1e11, 1e13, 50), rng.uniform(1e9, 1e11, 50)])
    c_true = np.array([250.0, 3e-13, 1.5e-10])
    c = fit_relative_nnls(a, a @ c_true)
    np.testing.assert_allclose(c, c_true, rtol=1e-6)


def test_relative_nnls_keeps_coefficients_non_negative():
    a = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    y = np.array([3.0, 2.0, 1.0])  # decreasing: an unconstrained fit wants a negative slope
    c = fit_relative_nnls(a, y)
    assert (c >= 0).all()


def test_prior_energy_of_examples(tiny_data):
    ex, feats = tiny_data
    terms = example_prior_terms(feats, ex)
    assert terms.shape == (len(ex), len(PRIOR_TERMS))
    coef = np.zeros(len(PRIOR_TERMS))
    coef[0] = 1.0
    prior = PhysicsPrior(coef)
    # loaded-idle term only: J/token = loaded idle W x n_gpus x step time / batch
    e = ex[0]
    expected = loaded_idle_w(e.deployment.gpu) * e.deployment.n_gpus * e.meta["step_s"] / e.denom
    assert prior.energy(terms[0]) == pytest.approx(expected)


def test_roofline16_is_the_16_bit_twins_and_the_low_precision_terms_vanish_for_16_bit_models():
    from dataclasses import replace

    from llmco2_sidecar.graph import step_features
    from llmco2_sidecar.hardware import load_gpu
    from llmco2_sidecar.models import load_model
    from llmco2_sidecar.predictor.api import Deployment
    from llmco2_sidecar.predictor.prior import N_BASE_TERMS, prior_terms, roofline16_s
    from llmco2_sidecar.workload import StepBatch

    steps = StepBatch.from_steps([[(1000, 1)], [(1000, 1)] * 8], [0.02, 0.03])  # decode: weight reads dominate
    bf16 = Deployment(load_model("meta-llama/Llama-3.1-8B"), load_gpu("H100"))
    fp8 = replace(bf16, model=replace(bf16.model, weight_bits=8, gemm_dtype="fp8"))
    f16, f8 = step_features(bf16, steps, with_nodes=False), step_features(fp8, steps, with_nodes=False)
    np.testing.assert_array_equal(roofline16_s(bf16, f16, steps), f16.roofline_s)
    t16 = roofline16_s(fp8, f8, steps)
    np.testing.assert_allclose(t16, f16.roofline_s, rtol=1e-9)  # the FP8 model's 16-bit twin is the bf16 model
    assert ((f16.roofline_s / f8.roofline_s) > 1.8).all()  # 8 GB less to read per step: close to 2x at decode
    tot, pre = prior_terms(bf16, f16, steps.duration_s, steps)
    assert (tot[:, N_BASE_TERMS:] == 0).all() and (pre[:, N_BASE_TERMS:] == 0).all()
    tot8, _ = prior_terms(fp8, f8, steps.duration_s, steps)
    assert (tot8[:, N_BASE_TERMS:] > 0).all()


def test_the_16_bit_physics_comes_from_16_bit_rows_and_the_design_is_chosen_inside_the_training_rows():
    from llmco2_sidecar.predictor.prior import N_BASE_TERMS, _fit_design, idle_floor_ratio

    rng = np.random.default_rng(1)
    k = len(PRIOR_TERMS)
    n = 120
    a = np.zeros((n, k))
    a[:, 0] = rng.uniform(50, 100, n)  # loaded idle over the step
    a[:, 4] = rng.uniform(20, 200, n)  # busy time x3
    a[:, 7] = rng.uniform(20, 200, n)  # memory
    low = np.arange(n) >= 80
    a[low, N_BASE_TERMS] = rng.uniform(50, 150, low.sum())  # low-precision busy x1
    c_true = np.zeros(k)
    # a loaded-idle coefficient inside the physical set (the floor follows the catalog's idle readings)
    c_true[[0, 4, 7]] = [(idle_floor_ratio() + 1.0) / 2, 0.4, 0.3]
    c_true[N_BASE_TERMS] = 0.25  # 0.4 + 0.25 + 0.3 <= 1: physical
    y = a @ c_true
    c = _fit_design(a, y, True)
    np.testing.assert_allclose(c, c_true, atol=2e-3)
    c0 = _fit_design(a, y, False)  # one fit over every row: the low-precision rows bend the base terms
    assert c0[N_BASE_TERMS:].sum() == 0 and np.abs(c0[:N_BASE_TERMS] - c_true[:N_BASE_TERMS]).max() > 0.01
    groups = np.repeat(np.arange(12), 10).astype(str)
    p = PhysicsPrior().fit(a, y, groups=groups)
    assert p.low_precision_terms and p.cv_mape["with"] < p.cv_mape["without"]
    np.testing.assert_allclose(p.coef, c_true, atol=2e-3)


def test_cuda_core_conversion_enters_the_compute_term_only_where_the_gpu_lacks_the_format():
    """gpt-oss's MXFP4 experts on H100 (no FP4 tensor cores): the compute column is the tensor FLOPs'
    GPU-seconds plus the conversion's (graph.dequant), both x the dynamic range; on B200 and for a 16-bit
    model the FLOPs alone."""
    from llmco2_sidecar.graph import step_features
    from llmco2_sidecar.hardware import load_gpu
    from llmco2_sidecar.models import load_model
    from llmco2_sidecar.predictor.api import Deployment
    from llmco2_sidecar.predictor.physics import dynamic_range_w
    from llmco2_sidecar.predictor.prior import BUSY_MULTIPLES, prior_terms
    from llmco2_sidecar.workload import Parallelism, StepBatch

    steps = StepBatch.from_steps([[(0, 64), (900, 1)], [(64, 1), (901, 1)]])
    col = 1 + len(BUSY_MULTIPLES)  # compute
    for model, gpu, converts in (("openai/gpt-oss-20b", "H100", True), ("openai/gpt-oss-20b", "B200", False),
                                 ("Qwen/Qwen3-8B", "H100", False)):
        d = Deployment(load_model(model), load_gpu(gpu), Parallelism(tp=2))
        f = step_features(d, steps, with_nodes=False)
        dur = f.roofline_s * 3
        tot, pre = prior_terms(d, f, dur, steps)
        dyn = dynamic_range_w(d.gpu)
        flops_s = f.flops / d.gpu.peak_flops("bf16")
        assert (f.simt_s is not None) == converts  # None: no CUDA-core work on this GPU
        simt, simt_pre = (f.simt_s, f.simt_s_prefill) if converts else (0.0, 0.0)
        assert not converts or (simt > 0).all()
        np.testing.assert_allclose(tot[:, col], dyn * (flops_s + simt), rtol=1e-12)
        np.testing.assert_allclose(pre[:, col], dyn * (f.flops_prefill / d.gpu.peak_flops("bf16") + simt_pre)
                                   * (f.prefill_tokens > 0), rtol=1e-12)
    # the replica's GPU-seconds: both GPUs of tp=2 convert their half of the experts
    d1 = Deployment(load_model("openai/gpt-oss-20b"), load_gpu("H100"), Parallelism(tp=1))
    f1 = step_features(d1, steps, with_nodes=False)
    f2 = step_features(Deployment(load_model("openai/gpt-oss-20b"), load_gpu("H100"), Parallelism(tp=2)), steps,
                       with_nodes=False)
    np.testing.assert_allclose(f2.simt_s, f1.simt_s, rtol=1e-9)
