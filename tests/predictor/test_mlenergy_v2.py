"""ML.ENERGY v2 rows (bundled copy) rebuilt as steady-state windows."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from llmco2_sidecar.cli.train import BUNDLED_MLENERGY_V2
from llmco2_sidecar.errors import InputError
from llmco2_sidecar.predictor.dataset import mlenergy_examples
from llmco2_sidecar.predictor.mlenergy import exclusion_reason
from llmco2_sidecar.predictor.mlenergy_v2 import SOURCE_V2, load_v2_rows, synthetic_histogram
from llmco2_sidecar.predictor.window import steady_window


@pytest.fixture(scope="module")
def rows():
    return load_v2_rows(BUNDLED_MLENERGY_V2)


def test_every_bundled_file_is_a_row_with_the_published_figures(rows):
    files = sorted((BUNDLED_MLENERGY_V2 / "chat").glob("*/*/*/*.json"))
    assert len(rows) == len(files) > 100
    by_file = {r.file: r for r in rows}
    f = BUNDLED_MLENERGY_V2 / "chat/A100-SXM4-40GB/meta-llama/Meta-Llama-3.1-8B-Instruct/bs128+tp1+pp1.json"
    d = json.loads(f.read_text())
    r = by_file[str(f.relative_to(BUNDLED_MLENERGY_V2))]
    assert r.source == SOURCE_V2 and r.gpu == "A100" and r.tp == 1 and r.max_num_seqs == 128
    assert r.energy_per_token_j == pytest.approx(d["Energy/req (J)"] / d["Avg Output Tokens"])
    assert r.step_duration_s == pytest.approx(d["Avg TPOT (s)"])  # the observed step duration
    assert r.tokens_per_step == pytest.approx(d["Token tput (tok/s)"] * d["Avg TPOT (s)"])
    # J/token x throughput = the run's average power, all GPUs (about 190 W on this A100 run)
    assert 100 < r.avg_power_w < 400


def test_window_reproduces_the_measured_power(rows):
    """Mean step energy / tokens per step = J per token exactly when each step draws the measured power
    for the measured TPOT: the rebuilt window is consistent with the row."""
    r = next(x for x in rows if x.gpu == "H100" and "Llama-3.1-70B" in x.model_id)
    w = steady_window(r, seed=0)
    step_e = np.full(w.steps.n_steps, r.avg_power_w * r.step_duration_s)
    assert w.energy_per_token(step_e) == pytest.approx(r.energy_per_token_j, rel=1e-9)
    assert np.allclose(w.steps.duration_s, r.step_duration_s)


def test_synthetic_output_lengths_match_the_published_mean():
    for mean in (120.0, 375.3, 480.9, 600.0):
        edges, counts = synthetic_histogram(mean)
        e, c = np.array(edges), np.array(counts, dtype=float)
        centres = (e[:-1] + e[1:]) / 2
        assert np.dot(centres, c) / c.sum() == pytest.approx(mean, rel=0.02)
        assert e[0] == 1 and e[-1] == 1024


def test_rows_become_examples_and_pp_rows_say_why(rows):
    ex, skipped = mlenergy_examples(rows, seed=0, k_decode=1, k_prefill=1)
    assert {e.source for e in ex} == {SOURCE_V2} and {e.gpu for e in ex} == {"A100", "H100"}
    assert {e.family for e in ex} >= {"llama-3", "gemma", "phi-3", "mistral"}
    assert any(e.meta["moe"] for e in ex)  # Mixtral: the MoE kernel graph costs it
    assert set(skipped.values()) == {"pipeline parallelism 2 (the window models one stage per step)"}
    assert any(r.pp > 1 for r in rows)  # v2 has a few pipeline-parallel rows (Mixtral-8x22B on A100)
    dense = next(r for r in rows if r.architecture == "Dense Transformer")
    assert exclusion_reason(dense) is None
    assert "pipeline" in exclusion_reason(replace(dense, pp=2))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError) as err:
        load_v2_rows(tmp_path)
    assert err.value.field == "data"
