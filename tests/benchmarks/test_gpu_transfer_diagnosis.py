"""benchmarks/gpu_transfer_diagnosis.py: the two prior designs it compares and the nested choice between them."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_transfer_diagnosis as diag  # noqa: E402
from llmco2_sidecar.hardware import load_gpu  # noqa: E402
from llmco2_sidecar.predictor.prior import PRIOR_TERMS  # noqa: E402


def test_the_columns_are_the_priors_compute_and_memory_terms():
    assert PRIOR_TERMS[diag.COMPUTE_COL] == "compute" and PRIOR_TERMS[diag.MEMORY_COL] == "memory"


def test_shared_design_gives_every_gpu_the_reference_per_unit_energy():
    h100, b200, a100 = load_gpu("H100-SXM5-80GB"), load_gpu("B200"), load_gpu("A100-SXM4-40GB")
    rng = np.random.default_rng(0)
    terms = rng.uniform(1.0, 2.0, size=(3, len(PRIOR_TERMS)))
    out = diag.shared_design(terms, [h100, b200, a100], [16, 16, 16], h100)
    np.testing.assert_array_equal(out[0], terms[0])  # the reference GPU itself: unchanged
    for k, gpu in ((1, b200), (2, a100)):
        jf, jb = diag.per_unit_j(gpu, 16)
        rf, rb = diag.per_unit_j(h100, 16)
        assert np.isclose(out[k, diag.COMPUTE_COL], terms[k, diag.COMPUTE_COL] * rf / jf)
        assert np.isclose(out[k, diag.MEMORY_COL], terms[k, diag.MEMORY_COL] * rb / jb)
        others = [c for c in range(len(PRIOR_TERMS)) if c not in (diag.COMPUTE_COL, diag.MEMORY_COL)]
        np.testing.assert_array_equal(out[k, others], terms[k, others])
    # B200 and A100 per unit below the H100 (B200: more peak and bandwidth per watt; A100: fewer)
    assert out[1, diag.COMPUTE_COL] > terms[1, diag.COMPUTE_COL] and out[2, diag.COMPUTE_COL] < terms[2, diag.COMPUTE_COL]


def test_mixed_design_runs_from_one_design_to_the_other():
    rng = np.random.default_rng(1)
    scaled = rng.uniform(1.0, 2.0, size=(4, len(PRIOR_TERMS)))
    shared = scaled.copy()
    shared[:, diag.COMPUTE_COL] *= 4.0
    shared[:, diag.MEMORY_COL] *= 0.25
    np.testing.assert_allclose(diag.mixed_design(scaled, shared, 1.0), scaled)
    np.testing.assert_allclose(diag.mixed_design(scaled, shared, 0.0), shared)
    half = diag.mixed_design(scaled, shared, 0.5)
    np.testing.assert_allclose(half[:, diag.COMPUTE_COL], scaled[:, diag.COMPUTE_COL] * 2.0)
    np.testing.assert_allclose(half[:, diag.MEMORY_COL], scaled[:, diag.MEMORY_COL] * 0.5)


def test_nested_alpha_picks_the_design_that_transfers_between_the_training_gpus():
    """Made-up rows that one design explains exactly on both GPUs: the inner folds find it; a training
    side with one GPU kind keeps the shipped design."""
    rng = np.random.default_rng(2)
    n = 40
    scaled = np.zeros((n, len(PRIOR_TERMS)))
    scaled[:, 0] = rng.uniform(1.0, 2.0, n)  # loaded-idle time
    scaled[:, diag.COMPUTE_COL] = rng.uniform(0.5, 3.0, n)
    scaled[:, diag.MEMORY_COL] = rng.uniform(0.5, 3.0, n)
    gpu = np.array(["X"] * (n // 2) + ["Y"] * (n // 2))
    shared = scaled.copy()
    shared[gpu == "Y", diag.COMPUTE_COL] *= 3.0
    shared[gpu == "Y", diag.MEMORY_COL] *= 3.0
    designs = {a: diag.mixed_design(scaled, shared, a) for a in diag.ALPHAS}
    coef = np.zeros(len(PRIOR_TERMS))
    coef[0], coef[diag.COMPUTE_COL], coef[diag.MEMORY_COL] = 1.0, 0.3, 0.3
    y = designs[0.0] @ coef  # the shared design is the truth
    assert diag.nested_alpha(designs, y, gpu, np.arange(n)) == 0.0
    y = designs[1.0] @ coef
    assert diag.nested_alpha(designs, y, gpu, np.arange(n)) == 1.0
    assert diag.nested_alpha(designs, y, gpu, np.arange(n // 2)) == 1.0  # one GPU kind: no fold
