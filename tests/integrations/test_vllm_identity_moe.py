"""The vLLM plugin's engine identity for MoE and quantized models, from what vLLM's config objects
hold for them (``model_config.hf_text_config`` / ``hf_config`` as transformers configs, vLLM's
``quantization`` and ``parallel_config.enable_expert_parallel``), resolved by the sidecar's own
identity code into the same model the catalog gives. The real-engine run is in test_vllm_e2e.py."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from llmco2_sidecar.models import load_model
from llmco2_sidecar.models.catalog import _id_to_file
from llmco2_sidecar.service.ingest import deployment_from_identity
from llmco2_vllm.engine import engine_info
from llmco2_vllm.settings import Settings


class HFConfig(SimpleNamespace):
    """Stands in for a transformers ``PretrainedConfig``: attributes plus ``to_dict()``."""

    def to_dict(self):
        return {k: (v.to_dict() if isinstance(v, HFConfig) else v) for k, v in vars(self).items()}


def _vllm_config(hf_id, quantization=None, tp=1, dp=1, ep_flag=False, dtype="bfloat16", cache_dtype="auto"):
    cfg = json.loads(_id_to_file(hf_id).read_text())
    cfg.pop("_llmco2", None)
    top = HFConfig(**{k: v for k, v in cfg.items() if k != "text_config"})
    text = HFConfig(**cfg["text_config"]) if "text_config" in cfg else top
    if text is not top:
        top.text_config = text
    mc = SimpleNamespace(hf_config=top, hf_text_config=text, dtype=dtype, quantization=quantization,
                         served_model_name=[hf_id], model=hf_id)
    pc = SimpleNamespace(tensor_parallel_size=tp, pipeline_parallel_size=1, data_parallel_size=dp, data_parallel_rank=0,
                         enable_expert_parallel=ep_flag)
    return SimpleNamespace(model_config=mc, parallel_config=pc, cache_config=SimpleNamespace(cache_dtype=cache_dtype))


def _resolved(vc, gpu="H100"):
    info = engine_info(vc, Settings(target="unix:/nowhere", gpu=gpu))
    dep, label, _ = deployment_from_identity(info.to_proto(0.0, 0.0).identity)
    return info, dep


@pytest.mark.parametrize("hf_id,quant", [
    ("mistralai/Mixtral-8x7B-v0.1", None), ("Qwen/Qwen3-30B-A3B", None), ("openai/gpt-oss-120b", "mxfp4"),
    ("deepseek-ai/DeepSeek-V3", "fp8"), ("meta-llama/Llama-4-Maverick-17B-128E-Instruct", None),
])
def test_identity_resolves_to_the_catalog_model(hf_id, quant):
    info, dep = _resolved(_vllm_config(hf_id, quantization=quant, tp=8))
    ref = load_model(hf_id)
    m = dep.model
    for f in ("num_experts", "experts_per_token", "expert_intermediate_size", "shared_expert_intermediate_size",
              "num_dense_layers", "kv_lora_rank", "local_attention", "num_local_layers", "num_nope_layers",
              "weight_bits", "expert_bits", "gemm_dtype", "intermediate_size"):
        assert getattr(m, f) == getattr(ref, f), f
    assert m.total_params == ref.total_params and m.weight_bytes == ref.weight_bytes
    assert m.kv_bytes_per_token == ref.kv_bytes_per_token
    assert info.ep == 1 and dep.parallel.ep == 1


def test_expert_parallel_size_from_the_parallel_config():
    info, dep = _resolved(_vllm_config("deepseek-ai/DeepSeek-V3", quantization="fp8", tp=8, dp=2, ep_flag=True), "H200")
    assert info.ep == 16 and dep.parallel.ep == 16 and dep.parallel.tp == 8
    # a dense model ignores the flag, as vLLM does
    info, dep = _resolved(_vllm_config("meta-llama/Llama-3.1-8B", tp=2, dp=2, ep_flag=True))
    assert info.ep == 1 and dep.model.num_experts == 0


def test_on_the_fly_fp8_and_kv_cache_dtype():
    info, dep = _resolved(_vllm_config("Qwen/Qwen3-30B-A3B", quantization="fp8", cache_dtype="fp8_e4m3"))
    assert (dep.model.weight_bits, dep.model.act_bits, dep.model.kv_bits, dep.model.gemm_dtype) == (8, 16, 8, "fp8")


def test_cpu_float32_dense_identity_unchanged():
    info, dep = _resolved(_vllm_config("meta-llama/Llama-3.1-8B", dtype="float32"))
    a = info.architecture
    assert (a["weight_bits"], a["act_bits"], a["kv_bits"]) == (32, 32, 32)
    assert "num_experts" not in a and dep.model.total_params == load_model("meta-llama/Llama-3.1-8B").total_params
