import json

import pytest

from llmco2_sidecar.errors import InputError, UnsupportedModelError
from llmco2_sidecar.models import bundled_status, list_models, load_model

REQUIRED = ["meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-70b-hf", "internlm/internlm-20b",
            "meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "mistralai/Mistral-7B-v0.3",
            "Qwen/Qwen2.5-7B", "Qwen/Qwen3-8B", "Qwen/Qwen3-32B"]


def test_required_models_bundled():
    have = list_models()
    for m in REQUIRED:
        assert m in have
        assert load_model(m).num_layers > 0
    assert load_model("meta-llama/Llama-3-8B").name == "meta-llama/Meta-Llama-3-8B"  # alias


@pytest.mark.parametrize("hf_id,billions", [
    ("meta-llama/Llama-2-7b-hf", 6.74), ("meta-llama/Llama-2-13b-hf", 13.02), ("meta-llama/Llama-2-70b-hf", 68.98),
    ("meta-llama/Llama-3.1-8B", 8.03), ("meta-llama/Llama-3.1-70B", 70.55), ("Qwen/Qwen2.5-7B", 7.62),
    ("Qwen/Qwen3-8B", 8.19), ("google/gemma-2-9b", 9.24), ("mistralai/Mistral-7B-v0.3", 7.25),
])
def test_parameter_counts_match_published_sizes(hf_id, billions):
    assert load_model(hf_id).total_params / 1e9 == pytest.approx(billions, rel=0.01)


def test_gqa_heads():
    m = load_model("meta-llama/Llama-3.1-70B")
    assert (m.num_heads, m.num_kv_heads, m.gqa_ratio, m.head_dim) == (64, 8, 8, 128)
    assert m.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2
    assert load_model("meta-llama/Llama-2-7b-hf").gqa_ratio == 1


def test_unverified_configs_flagged():
    status = bundled_status()
    assert status["internlm/internlm-20b"] is False and status["mistralai/Mistral-7B-v0.3"] is False
    assert status["meta-llama/Llama-2-7b-hf"] is True


def test_unknown_architecture_is_refused_naming_the_field(tmp_path):
    cfg = {"model_type": "jamba", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "vocab_size": 100, "num_experts": 16}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError) as e:
        load_model(str(tmp_path))
    assert e.value.field == "config.json:model_type" and "mixture-of-experts" in str(e.value)


def test_config_path_and_folder(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert load_model(str(tmp_path)).num_kv_heads == 2
    assert load_model(str(tmp_path / "config.json")).head_dim == 64


def test_missing_field_named(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError) as e:
        load_model(str(tmp_path))
    assert e.value.field == "config.json:intermediate_size"


def test_bit_widths():
    m = load_model("meta-llama/Llama-2-7b-hf", weight_bits=8, kv_bits=8)
    assert (m.weight_bits, m.act_bits, m.kv_bits) == (8, 16, 8)
    assert m.weight_bytes == pytest.approx(load_model("meta-llama/Llama-2-7b-hf").weight_bytes / 2)
    with pytest.raises(InputError):
        load_model("meta-llama/Llama-2-7b-hf", weight_bits=3)


def test_unknown_model_suggests_close_ids_and_quantised_releases():
    with pytest.raises(InputError) as e:
        load_model("meta-llama/Llama-3.1-8b-instruct-x")
    assert e.value.field == "model"
    assert "did you mean 'meta-llama/Llama-3.1-8B-Instruct'" in str(e.value)  # an alias, matched case-insensitively
    with pytest.raises(InputError) as e:
        load_model("Qwen/Qwen3-8B-AWQ")
    assert "quantised release of 'Qwen/Qwen3-8B'" in str(e.value) and "--model PATH" in str(e.value)
    with pytest.raises(InputError) as e:
        load_model("someone/entirely-different")
    assert "did you mean" not in str(e.value) and "quantised" not in str(e.value)
