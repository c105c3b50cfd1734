"""Tiny data sets for the predictor tests (made-up labels: tests only, never training data)."""

import numpy as np
import pytest

from llmco2_sidecar.predictor.dataset import featurize, mlenergy_examples
from llmco2_sidecar.predictor.mlenergy import MLEnergyRow


def tiny_rows() -> list[MLEnergyRow]:
    rows = []
    rng = np.random.default_rng(0)
    for model, gpu, tp in (("Qwen/Qwen3-8B", "H100", 1), ("meta-llama/Llama-3.1-8B-Instruct", "H100", 1),
                           ("Qwen/Qwen3-8B", "B200", 1), ("meta-llama/Llama-3.1-8B-Instruct", "B200", 2)):
        for b in (8, 32, 128):
            thr = 150.0 * b ** 0.8
            rows.append(MLEnergyRow(
                model_id=model, task="lm-arena-chat", gpu=gpu, num_gpus=tp, tp=tp, dp=1, weight_precision="bfloat16",
                architecture="Dense Transformer", max_num_seqs=b, avg_batch_size=b * 0.97, avg_output_len=500.0,
                energy_per_token_j=float(3.0 / b ** 0.6 * (1.3 if gpu == "B200" else 1.0) * rng.uniform(0.9, 1.1)),
                avg_power_w=400.0, output_tokens_per_s=thr,
                hist_edges=(1.0, 300.0, 600.0, 900.0), hist_counts=(2, 5, 3),
            ))
    return rows


@pytest.fixture(scope="session")
def tiny_data():
    examples, skipped = mlenergy_examples(tiny_rows(), seed=0, k_decode=2, k_prefill=2)
    assert not skipped
    return examples, featurize(examples)


@pytest.fixture(scope="session")
def tiny_mlenergy_rows():
    return tiny_rows()
