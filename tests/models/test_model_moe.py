"""Mixture-of-experts, MLA, local attention and precision read from the bundled configs, against
the figures their publishers state (total / active parameters) and hand counts."""

import json

import pytest

from llmco2_sidecar.errors import InputError, UnsupportedModelError
from llmco2_sidecar.models import bundled_status, list_aliases, load_model
from llmco2_sidecar.models.precision import MXFP4_BITS


@pytest.mark.parametrize("hf_id,total_b,active_b", [
    ("mistralai/Mixtral-8x7B-v0.1", 46.7, 12.9),  # Mistral AI: 46.7B total, 12.9B active
    ("mistralai/Mixtral-8x22B-v0.1", 141, 39),  # 141B / 39B
    ("Qwen/Qwen3-30B-A3B", 30.5, 3.3),  # Qwen3 report: 30.5B / 3.3B
    ("Qwen/Qwen3-235B-A22B", 235, 22),
    ("Qwen/Qwen3-Coder-480B-A35B-Instruct", 480, 35),
    ("deepseek-ai/DeepSeek-V3", 671, 37),  # 671B / 37B (without the 14B MTP module)
    ("meta-llama/Llama-4-Maverick-17B-128E-Instruct", 400, 17),
])
def test_total_and_active_parameters(hf_id, total_b, active_b):
    m = load_model(hf_id)
    assert m.is_moe
    assert m.total_params / 1e9 == pytest.approx(total_b, rel=0.02)
    assert m.active_params / 1e9 == pytest.approx(active_b, rel=0.04)


def test_gpt_oss_counts_and_mxfp4_experts():
    m = load_model("openai/gpt-oss-120b")
    # OpenAI: 116.8B total, 5.1B active (the active count leaves out the embedding table)
    assert m.total_params / 1e9 == pytest.approx(116.8, rel=0.01)
    assert (m.active_params - m.vocab_size * m.hidden_size) / 1e9 == pytest.approx(5.13, rel=0.01)
    assert m.expert_bits == MXFP4_BITS == 4.25 and m.weight_bits == 16 and m.quant_method == "mxfp4"
    experts = 36 * 128 * 3 * 2880 * 2880
    assert m.routed_expert_params == experts
    assert m.weight_bytes == (m.total_params - experts) * 2 + experts * 4.25 / 8  # ~65 GB, the checkpoint's size
    assert m.weight_bytes / 1e9 == pytest.approx(65, rel=0.03)
    assert (m.local_attention, m.local_window, m.num_local_layers) == ("sliding", 128, 18)


def test_deepseek_v3_mla_fp8_and_dense_layers():
    m = load_model("deepseek-ai/DeepSeek-V3")
    assert (m.num_experts, m.experts_per_token, m.num_dense_layers, m.num_moe_layers) == (256, 8, 3, 58)
    assert m.shared_expert_intermediate_size == 2048 and m.intermediate_size == 18432
    assert m.is_mla and m.kv_lora_rank == 512 and m.qk_rope_head_dim == 64
    # MLA caches kv_lora_rank + rope dim per token and layer, for all heads: 61 x 576 x 2 bytes
    assert m.kv_bytes_per_token == 61 * (512 + 64) * 2 == 70272
    assert (m.weight_bits, m.gemm_dtype) == (8, "fp8")


def test_llama4_nested_text_config_chunked_and_nope_layers():
    scout = load_model("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    mav = load_model("meta-llama/Llama-4-Maverick-17B-128E-Instruct")
    assert scout.hidden_size == 5120 and scout.num_dense_layers == 0 and scout.num_experts == 16
    assert mav.num_dense_layers == 24 and mav.intermediate_size == 16384 and mav.expert_intermediate_size == 8192
    for m in (scout, mav):
        assert m.shared_expert_intermediate_size == 8192 and m.experts_per_token == 1
        assert (m.local_attention, m.local_window, m.num_local_layers, m.num_nope_layers) == ("chunked", 8192, 36, 12)


def test_qwen_moe_sparse_step_and_mlp_only_layers(tmp_path):
    cfg = json.loads(open(__import__("llmco2_sidecar").models.catalog._id_to_file("Qwen/Qwen3-30B-A3B")).read())
    cfg.update(decoder_sparse_step=2, mlp_only_layers=[1])  # MoE at odd indices except 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    m = load_model(str(tmp_path))
    assert m.num_moe_layers == 23 and m.num_dense_layers == 25 and m.intermediate_size == 6144


def test_aliases_and_fp8_releases():
    aliases = list_aliases()
    assert aliases["Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"]["base"] == "Qwen/Qwen3-235B-A22B"
    fp8 = load_model("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8")
    base = load_model("Qwen/Qwen3-235B-A22B")
    assert fp8.name == "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8" and not fp8.verified
    assert (fp8.weight_bits, fp8.gemm_dtype) == (8, "fp8") and fp8.weight_bytes == pytest.approx(base.weight_bytes / 2)
    assert load_model("Qwen/Qwen3-30B-A3B-Instruct-2507").verified
    assert bundled_status()["openai/gpt-oss-20b"] is True


def test_block_scaled_fp8_is_told_from_per_channel_fp8():
    """DeepSeek-V3's config.json says weight_block_size [128, 128]; Qwen's FP8 releases are described as
    block-scaled (alias facts, unverified); Meta's FP8 Llamas are per-channel (row-wise)."""
    assert load_model("deepseek-ai/DeepSeek-V3").weight_block_size == 128
    assert load_model("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8").weight_block_size == 128
    for per_channel in ("meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "meta-llama/Llama-3.1-405B-Instruct-FP8",
                        "Qwen/Qwen3-235B-A22B", "openai/gpt-oss-20b"):
        assert load_model(per_channel).weight_block_size == 0
    from llmco2_sidecar.graph import GLOBAL_FEATURE_NAMES, step_features
    from llmco2_sidecar.hardware import load_gpu
    from llmco2_sidecar.predictor.api import Deployment
    from llmco2_sidecar.workload import Parallelism, StepBatch

    col = GLOBAL_FEATURE_NAMES.index("fp8_block_scaled")
    steps = StepBatch.from_steps([[(100, 1)] * 8])  # one decode step of 8 sequences
    for hf_id, want in (("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", 1.0), ("meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", 0.0)):
        dep = Deployment(load_model(hf_id), load_gpu("H100"), Parallelism(tp=8))
        assert step_features(dep, steps).global_x[0, col] == want


@pytest.mark.parametrize("qcfg,field", [
    ({"quant_method": "fp8", "weight_block_size": "128"}, "config.json:quantization_config.weight_block_size"),
    ({"quant_method": "fp8", "weight_block_size": [128, 0]}, "config.json:quantization_config.weight_block_size"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "config.json:quantization_config.quant_method"),
    ({"quant_method": "gptq", "bits": 3}, "config.json:quantization_config.bits"),
    ({"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.mlp.experts"]},
     "config.json:quantization_config.modules_to_not_convert"),
])
def test_formats_the_graph_cannot_cost_are_refused(tmp_path, qcfg, field):
    cfg = {"model_type": "mixtral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "num_local_experts": 4,
           "num_experts_per_tok": 2, "quantization_config": qcfg}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError) as e:
        load_model(str(tmp_path))
    assert e.value.field == field


def test_moe_config_without_active_experts_names_the_field(tmp_path):
    cfg = {"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
           "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "num_experts": 8}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError) as e:
        load_model(str(tmp_path))
    assert e.value.field == "config.json:num_experts_per_tok"
