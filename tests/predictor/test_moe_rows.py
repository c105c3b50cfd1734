"""Mixture-of-experts and low-precision rows of ML.ENERGY v3/v2 as training examples (issue 15 item 4)."""

import numpy as np
import pytest

from llmco2_sidecar.cli.train import BUNDLED_MLENERGY
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.dataset import MOE_FAMILIES, architecture_of, row_deployment
from llmco2_sidecar.predictor.evaluate import make_splits
from llmco2_sidecar.predictor.heldout import name_family
from llmco2_sidecar.predictor.mlenergy import exclusion_reason, load_rows


@pytest.mark.parametrize("model_id, family", [
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3-moe"), ("Qwen/Qwen3-235B-A22B-Thinking-2507-FP8", "qwen3-moe"),
    ("Qwen/Qwen3-8B", "qwen3"), ("openai/gpt-oss-120b", "gpt-oss"), ("deepseek-ai/DeepSeek-V3.1", "deepseek"),
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama-4"), ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral"),
    ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama-3"), ("mistralai/Mistral-7B-Instruct-v0.3", "mistral"),
])
def test_moe_families_never_mix_with_dense_ones(model_id, family):
    assert name_family(model_id) == family
    assert (family in MOE_FAMILIES) == bool(load_model(model_id).num_experts)


def test_releases_and_fp8_copies_are_one_architecture():
    assert architecture_of(load_model("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8")) == "Qwen/Qwen3-235B-A22B"
    assert architecture_of(load_model("deepseek-ai/DeepSeek-R1-0528")) == "deepseek-ai/DeepSeek-V3"
    assert architecture_of(load_model("meta-llama/Llama-3.1-405B-Instruct-FP8")) == "meta-llama/Llama-3.1-405B"


@pytest.fixture(scope="module")
def v3_rows():
    return load_rows(BUNDLED_MLENERGY)


def test_bundled_moe_rows_are_usable_with_their_number_formats(v3_rows):
    moe = [r for r in v3_rows if r.architecture == "MoE"]
    assert len(moe) > 250 and {r.weight_precision for r in moe} == {"bfloat16", "fp8", "mxfp4"}
    assert all(exclusion_reason(r) is None for r in moe)
    fp8 = next(r for r in moe if r.weight_precision == "fp8" and "235B" in r.model_id)
    assert row_deployment(fp8).model.weight_bits == 8  # the catalog's FP8 layout for this checkpoint
    oss = next(r for r in moe if "gpt-oss-120b" in r.model_id)
    assert 4 <= row_deployment(oss).model.expert_weight_bits < 5  # MXFP4 experts


def test_expert_parallel_rows_use_every_gpu(v3_rows):
    """v3 publishes MoE runs as tp 1 / ep = num_gpus: one server over all its GPUs, EP = TP."""
    r = next(x for x in v3_rows if x.ep == 8 and "DeepSeek" in x.model_id)
    dep = row_deployment(r)
    assert dep.n_gpus == r.num_gpus == 8 and dep.parallel.ep == 8


def test_precision_and_moe_family_splits_hold_their_group_out():
    from types import SimpleNamespace

    def ex(model, family, prec, src="mlenergy-v3", gpu="H100"):
        return SimpleNamespace(model=model, family=family, gpu=gpu, source=src, meta={"precision": prec})

    examples = [ex("Qwen/Qwen3-8B", "qwen3", "bfloat16"), ex("Qwen/Qwen3-235B-A22B", "qwen3-moe", "fp8"),
                ex("Qwen/Qwen3-235B-A22B", "qwen3-moe", "bfloat16"), ex("openai/gpt-oss-20b", "gpt-oss", "mxfp4"),
                ex("meta-llama/Llama-3.1-8B", "llama-3", "bfloat16", "mlenergy-v2", "A100")]
    splits = {s.name: s for s in make_splits(examples)}
    assert "precision=fp8" in splits and "precision=mxfp4" in splits and "precision=bfloat16" not in splits
    fp8 = splits["precision=fp8"]
    assert all(examples[i].meta["precision"] != "fp8" for i in fp8.train)
    assert [examples[i].meta["precision"] for i in fp8.test] == ["fp8"]
    # qwen3-moe has one architecture: scored as its model split, which holds both of its rows out
    q = splits["model=Qwen/Qwen3-235B-A22B"]
    assert sorted(q.test.tolist()) == [1, 2] and not np.isin([1, 2], q.train).any()
