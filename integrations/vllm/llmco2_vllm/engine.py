"""The engine's identity and the hook's emitter, built once per scheduler in the EngineCore process."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from .settings import Settings

log = logging.getLogger("vllm.llmco2")

_DTYPE_BITS = {"float32": 32, "float": 32, "float16": 16, "half": 16, "bfloat16": 16, "float64": 32}


def make_hook(scheduler: Any, settings: Settings):
    """A :class:`StepHook` with a started emitter for ``scheduler``, or None (one log line) when it cannot run."""
    from llmco2_sidecar.client import Emitter, EmitterConfig

    from .hook import StepHook

    info = engine_info(scheduler.vllm_config, settings)
    if info is None:
        return None
    from .ids import client_request_id

    # the hook already holds steps alone up to LLMCO2_FLUSH_MS and hands a finish over at once: the
    # emitter sends what it is handed (no second hold), so a step waits at most that long
    cfg = EmitterConfig(target=settings.target, max_buffered_events=settings.buffer_events, token=settings.token,
                        clock=time.monotonic, client_request_id=client_request_id, steps_hold_s=0.0)
    emitter = Emitter(info, cfg)
    from .platform import platform_note

    note = platform_note()
    if note:
        log.warning("llmco2: %s (energy and carbon are predicted for %s running steps as long as this CPU's)",
                    note, info.gpu)
    arch = info.architecture or {}
    moe = (f", MoE {arch['num_experts']} experts ({arch.get('experts_per_token', 0)} per token) ep {info.ep}"
           if arch.get("num_experts") else "")
    log.info("llmco2: step hook on (%s, model %s, gpu %s, tp %d pp %d dp %d%s) -> sidecar %s",
             type(scheduler).__name__, info.model_name, info.gpu, info.tp, info.pp, info.dp, moe, settings.target)
    return StepHook(emitter, clock=time.monotonic, dump_path=settings.step_dump, flush_s=settings.flush_ms / 1000.0)


def engine_info(vllm_config: Any, settings: Settings):
    """The ``EngineInfo`` of this engine replica, or None (one log line) when the GPU is unknown."""
    from llmco2_sidecar.client import EngineInfo

    mc = vllm_config.model_config
    pc = vllm_config.parallel_config
    gpu = settings.gpu or nvml_gpu_name()
    if not gpu:
        log.warning("llmco2: no NVIDIA GPU visible through NVML and LLMCO2_GPU is unset: set LLMCO2_GPU "
                    "(e.g. A100, H100) to account this engine; running unhooked")
        return None
    tp = int(getattr(pc, "tensor_parallel_size", 1) or 1)
    pp = int(getattr(pc, "pipeline_parallel_size", 1) or 1)
    dp = int(getattr(pc, "data_parallel_size", 1) or 1)
    arch = architecture(mc, getattr(vllm_config, "cache_config", None))
    # vLLM's expert parallelism spreads each MoE layer over the TP x DP ranks (FusedMoEParallelConfig)
    ep = tp * dp if getattr(pc, "enable_expert_parallel", False) and arch.get("num_experts") else 1
    try:
        import vllm

        version = str(getattr(vllm, "__version__", ""))
    except Exception:  # pragma: no cover - vllm is there when this runs
        version = ""
    return EngineInfo(
        engine_name="vllm",
        engine_version=version,
        model_name=_model_name(mc),
        gpu=gpu,
        tp=tp,
        pp=pp,
        dp=dp,
        dp_rank=int(getattr(pc, "data_parallel_rank", 0) or 0),
        architecture=arch,
        ep=ep,
    )


def architecture(model_config: Any, cache_config: Any = None) -> dict[str, Any]:
    """``ModelArchitecture`` fields from vLLM's model config (its Hugging Face text config)."""
    hf = getattr(model_config, "hf_text_config", None) or getattr(model_config, "hf_config", None)
    arch: dict[str, Any] = {}
    if hf is None:
        return arch

    def get(*names: str) -> Any:
        for n in names:
            v = getattr(hf, n, None)
            if v is not None:
                return v
        return None

    arch["model_type"] = str(get("model_type") or "")
    for key, names in (
        ("hidden_size", ("hidden_size", "n_embd", "d_model")),
        ("intermediate_size", ("intermediate_size", "ffn_hidden_size", "n_inner")),
        ("num_layers", ("num_hidden_layers", "n_layer", "num_layers")),
        ("num_heads", ("num_attention_heads", "n_head")),
        ("num_kv_heads", ("num_key_value_heads", "num_kv_heads")),
        ("head_dim", ("head_dim",)),
        ("vocab_size", ("vocab_size",)),
    ):
        v = get(*names)
        if isinstance(v, (int, float)) and v > 0:
            arch[key] = int(v)
    arch["tie_word_embeddings"] = bool(get("tie_word_embeddings") or False)
    arch.update(_parsed_fields(model_config, hf))
    bits = dtype_bits(getattr(model_config, "dtype", None))
    if bits:
        arch["weight_bits"] = min(bits, arch.get("weight_bits") or bits)
        arch["act_bits"] = arch["kv_bits"] = bits
    cache_dtype = str(getattr(cache_config, "cache_dtype", "auto") or "auto")
    if "fp8" in cache_dtype or "int8" in cache_dtype:
        arch["kv_bits"] = 8
    return arch


def _hf_dict(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    to_dict = getattr(cfg, "to_dict", None)
    try:
        return dict(to_dict()) if callable(to_dict) else dict(vars(cfg))
    except Exception:
        return {}


def _parsed_fields(model_config: Any, hf: Any) -> dict[str, Any]:
    """Expert, MLA, local-attention and number-format fields: the sidecar's own parser run on vLLM's
    Hugging Face text config (so the plugin and ``llmco2 estimate`` read a config the same way), with
    the checkpoint's ``quantization_config`` (on the top-level config for multimodal wrappers) or the
    method vLLM was told (``--quantization fp8`` quantizes a BF16 checkpoint on load). Empty when the
    parser refuses the model: the sidecar then says why, naming the field."""
    from llmco2_sidecar.errors import InputError
    from llmco2_sidecar.models.identity import DENSE_FIELDS, architecture_from_spec
    from llmco2_sidecar.models.spec import ModelSpec

    cfg = _hf_dict(hf)
    top = _hf_dict(getattr(model_config, "hf_config", None))
    quant = cfg.get("quantization_config") or top.get("quantization_config")
    method = str(getattr(model_config, "quantization", "") or "").lower()
    if not quant and method in ("fp8", "fbgemm_fp8", "mxfp4"):
        quant = {"quant_method": method, "activation_scheme": "dynamic"}
    if quant:
        cfg["quantization_config"] = quant
    try:
        spec = ModelSpec.from_hf_config(cfg, name=_model_name(model_config))
    except (InputError, TypeError, ValueError) as exc:
        log.warning("llmco2: cannot read the model's config for its experts and number formats (%s)", exc)
        return {"quant_method": method} if method else {}
    out = {k: v for k, v in architecture_from_spec(spec).items() if k not in DENSE_FIELDS or k == "qkv_bias"}
    out["intermediate_size"] = spec.intermediate_size  # the dense layers' width (Llama-4: intermediate_size_mlp)
    if quant:  # the checkpoint's weight width (the activations keep the serving dtype)
        out["weight_bits"] = spec.weight_bits
    return out


def dtype_bits(dtype: Any) -> int:
    if dtype is None:
        return 0
    itemsize = getattr(dtype, "itemsize", None)
    if isinstance(itemsize, int) and itemsize > 0:
        return min(32, itemsize * 8)
    return _DTYPE_BITS.get(str(dtype).replace("torch.", ""), 0)


def nvml_gpu_name() -> str:
    """The name NVML reports for the first visible GPU, or ''."""
    try:
        import pynvml
    except Exception:
        return ""
    try:
        pynvml.nvmlInit()
    except Exception:
        return ""
    try:
        index = 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        if visible.isdigit():
            index = int(visible)
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return ""
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _model_name(model_config: Any) -> str:
    name = getattr(model_config, "served_model_name", None)
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    return str(name or getattr(model_config, "model", "") or "")
