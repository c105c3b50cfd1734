import json

import numpy as np
import pytest

from llmco2_sidecar.errors import InputError
from llmco2_sidecar.predictor.mlenergy import exclusion_reason, load_rows
from llmco2_sidecar.predictor.window import MAX_BATCHED_TOKENS, sample_prompts, steady_window


def _write(tmp_path, arch="Dense Transformer", task="lm-arena-chat", batch=63.6, out_len=600.0):
    doc = {
        "model_id": "Qwen/Qwen3-8B", "task": task, "architecture": arch, "weight_precision": "bfloat16",
        "output_length_distribution": {"bins": [0.0, 500.0, 1000.0], "counts": [1, 3]},
        "configurations": [{
            "gpu_model": "H100", "num_gpus": 1, "max_num_seqs": 64, "avg_batch_size": batch,
            "avg_output_len": out_len, "energy_per_token_joules": 0.2, "avg_power_watts": 500.0,
            "output_throughput_tokens_per_sec": 2500.0,
            "parallelization": {"tensor_parallel": 1, "data_parallel": 1},
            "output_length_distribution": {"bins": [0.0, 500.0, 1000.0], "counts": [1, 3]},
        }],
    }
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / f"x__{task}.json").write_text(json.dumps(doc))
    return tmp_path


def test_load_rows_typed(tmp_path):
    rows = load_rows(_write(tmp_path))
    assert len(rows) == 1
    r = rows[0]
    assert r.tp == 1 and r.gpu == "H100" and r.hist_counts == (1, 3)
    assert r.step_duration_s == pytest.approx(63.6 / 2500.0)
    assert exclusion_reason(r) is None
    assert exclusion_reason(r, supported_models={"other"}) is not None


def test_excludes_hybrids_and_unknown_task(tmp_path):
    assert exclusion_reason(load_rows(_write(tmp_path, arch="MoE"))[0]) is None  # the MoE graph costs them
    (tmp_path / "h").mkdir()
    r = load_rows(_write(tmp_path / "h", arch="Mamba-Transformer Hybrid"))[0]
    assert "Mamba" in exclusion_reason(r)
    (tmp_path / "b").mkdir()
    r2 = load_rows(_write(tmp_path / "b", task="image-chat"))[0]
    assert "task" in exclusion_reason(r2)


def test_load_rows_missing_dir(tmp_path):
    with pytest.raises(InputError):
        load_rows(tmp_path)


def test_steady_window_composition(tmp_path):
    row = load_rows(_write(tmp_path))[0]
    w = steady_window(row, seed=3, k_decode=4, k_prefill=3)
    steps = w.steps
    assert steps.n_steps == 7 and w.weight.shape == (7,)
    assert w.weight.sum() == pytest.approx(1.0)
    # every step runs round(b) = 64 requests and lasts b / throughput
    assert np.all(np.bincount(steps.request_step) == 64)
    assert np.allclose(steps.duration_s, 63.6 / 2500.0)
    tokens = steps.steps_tokens()
    assert np.all(tokens[:4] == 64)  # decode-only steps
    assert np.all(tokens[4:] > 64) and np.all(tokens[4:] <= MAX_BATCHED_TOKENS)
    # prefill-step weight = P(at least one prefill) with h = 1/600 per slot
    q = 1 - (1 - 1 / 600) ** 64
    assert w.weight[4:].sum() == pytest.approx(q)
    # decode contexts include the prompt and stay below prompt cap + longest output
    ctx = steps.context_tokens[steps.new_tokens == 1]
    assert ctx.min() >= 4 and ctx.max() < MAX_BATCHED_TOKENS + 1000
    # energy per token from step energies: a constant step energy E gives E / b
    assert w.energy_per_token(np.full(7, 63.6)) == pytest.approx(1.0)
    # deterministic for a seed
    w2 = steady_window(row, seed=3, k_decode=4, k_prefill=3)
    assert np.array_equal(w2.steps.context_tokens, steps.context_tokens)


def test_prompt_distribution_mean():
    x = sample_prompts(634.0, np.random.default_rng(0), 200_000)
    assert abs(x.mean() - 634.0) / 634.0 < 0.03


def test_spread_step_times_keeps_the_mean_and_orders_steps_by_their_work():
    from llmco2_sidecar.predictor.window import spread_step_times

    w = np.array([0.3, 0.3, 0.2, 0.2])
    roof = np.array([0.010, 0.010, 0.030, 0.050])
    t = spread_step_times(0.040, w, roof)
    assert np.isclose(w @ t, 0.040)
    np.testing.assert_allclose(np.diff(t), np.diff(roof))  # the same constant overhead on every step
    assert (t >= roof).all()
    fast = spread_step_times(0.010, w, roof)  # Roofline times alone above the observed mean: scaled to it
    assert np.isclose(w @ fast, 0.010) and np.allclose(fast / roof, fast[0] / roof[0])
    np.testing.assert_array_equal(spread_step_times(0.02, w, np.zeros(4)), np.full(4, 0.02))


def test_roofline_step_times_in_the_training_examples(tiny_mlenergy_rows):
    """``step_times='roofline'``: a window's prefill steps last longer than its decode steps, the weighted
    mean stays the row's step time; 'uniform' (the shipped data) keeps one time for all; others refused."""
    from llmco2_sidecar.predictor.dataset import mlenergy_examples

    uni, _ = mlenergy_examples(tiny_mlenergy_rows, seed=0, k_decode=2, k_prefill=2)
    roof, _ = mlenergy_examples(tiny_mlenergy_rows, seed=0, k_decode=2, k_prefill=2, step_times="roofline")
    for u, r in zip(uni, roof):
        assert np.ptp(u.steps.duration_s) == 0
        assert np.isclose(r.weight @ r.steps.duration_s, u.steps.duration_s[0])
        assert r.steps.duration_s[2:].min() > r.steps.duration_s[:2].max()  # prefill steps (last two) longer
        np.testing.assert_array_equal(r.steps.new_tokens, u.steps.new_tokens)  # the same steps
    # 'kernel': the same spread from kernel times (compute-bound kernels at the GPU's GEMM efficiency): the mean
    # stays the row's, a prefill step never gets a smaller share, and where its chunk is compute-bound a larger one
    kern, _ = mlenergy_examples(tiny_mlenergy_rows, seed=0, k_decode=2, k_prefill=2, step_times="kernel")
    moved = 0
    for r, k in zip(roof, kern):
        assert np.isclose(k.weight @ k.steps.duration_s, r.weight @ r.steps.duration_s)
        assert k.steps.duration_s[2:].max() >= r.steps.duration_s[2:].max() - 1e-12
        moved += not np.allclose(k.steps.duration_s, r.steps.duration_s)
    assert 0 < moved < len(kern)  # some windows' prefill chunks are compute-bound, some are not
    # a window with an 8,192-token prefill chunk: from kernel times it takes a larger share of the mean
    from llmco2_sidecar.predictor.prior import DurationModel
    from llmco2_sidecar.predictor.window import spread_step_times
    from llmco2_sidecar.workload import StepBatch

    dep = roof[0].deployment
    steps = StepBatch.from_steps([[(500, 1)] * 32, [(0, 8192), *[(500, 1)] * 32]])
    w = np.array([0.9, 0.1])
    t_roof = spread_step_times(0.05, w, DurationModel().base_s(dep, steps)[0])
    t_kern = spread_step_times(0.05, w, DurationModel(base="kernel").base_s(dep, steps)[0])
    assert np.isclose(w @ t_kern, 0.05) and t_kern[1] - t_kern[0] > t_roof[1] - t_roof[0] > 0
    with pytest.raises(ValueError, match="step_times"):
        mlenergy_examples(tiny_mlenergy_rows, step_times="measured")
