"""Random-weight Hugging Face models built from a :class:`ModelSpec`, and the two measured phases.

Prefill: one forward over ``batch x prompt`` random token ids producing the KV cache (logits of the
last position only, as a serving engine computes them). Decode: ``steps`` forwards of ``batch`` x 1
tokens (the greedy next token) through the growing cache. Works with transformers 4.4x (``past_key_values``)
and 5.x (``cache``). torch and transformers are imported only here, on first use.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..models.spec import ModelSpec

TRANSFORMERS_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3")


def hf_config(spec: ModelSpec, layers: int | None = None) -> Any:
    """A transformers config of the spec's architecture (``layers`` overrides the depth)."""
    from transformers import AutoConfig

    if spec.model_type not in TRANSFORMERS_TYPES:
        raise InputError("model", f"{spec.name}: model_type {spec.model_type} has no transformers class here",
                         ", ".join(TRANSFORMERS_TYPES))
    kwargs: dict[str, Any] = dict(
        hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=layers or spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, head_dim=spec.head_dim, vocab_size=spec.vocab_size,
        max_position_embeddings=spec.max_position_embeddings, hidden_act=spec.hidden_act,
        tie_word_embeddings=spec.tie_word_embeddings, use_cache=True,
    )
    if spec.model_type in ("llama", "mistral", "qwen3"):
        kwargs["attention_bias"] = spec.qkv_bias
    if spec.model_type == "mistral":
        kwargs["sliding_window"] = None
    return AutoConfig.for_model(spec.model_type, **kwargs)


@dataclass
class LoadedModel:
    model: Any
    spec: ModelSpec
    layers: int
    device: str
    dtype: Any
    cache_kw: str  # "cache" (transformers 5) or "past_key_values"
    logits_kw: dict

    def random_ids(self, batch: int, prompt: int, generator: Any = None) -> Any:
        import torch

        return torch.randint(0, self.spec.vocab_size, (batch, prompt), device=self.device, generator=generator)

    def prefill(self, ids: Any) -> tuple[Any, Any]:
        """One forward over the prompts; returns (cache, next token ids [B, 1])."""
        out = self.model(input_ids=ids, use_cache=True, **self.logits_kw)
        return _cache_of(out), out.logits[:, -1:].argmax(-1)

    def decode(self, cache: Any, next_ids: Any, steps: int) -> tuple[Any, Any]:
        """``steps`` single-token forwards through the cache."""
        for _ in range(steps):
            out = self.model(input_ids=next_ids, use_cache=True, **{self.cache_kw: cache}, **self.logits_kw)
            cache, next_ids = _cache_of(out), out.logits[:, -1:].argmax(-1)
        return cache, next_ids


def _cache_of(out: Any) -> Any:
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else out.past_key_values


def crop_cache(cache: Any, length: int) -> None:
    """Drop cached tokens beyond ``length`` (negative ``crop`` works in transformers 4.4x and 5.x)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def build_model(spec: ModelSpec, layers: int, device: str, dtype_name: str = "bfloat16", seed: int = 0) -> LoadedModel:
    """Random-weight causal LM (the transformers default init) on ``device``, eval mode, SDPA attention."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype_name)
    config = hf_config(spec, layers)
    torch.manual_seed(seed)
    with torch.device(device):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype, attn_implementation="sdpa")
    model = model.to(device=device, dtype=dtype).eval()
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    if "logits_to_keep" in params:
        logits_kw = {"logits_to_keep": 1}
    elif "num_logits_to_keep" in params:
        logits_kw = {"num_logits_to_keep": 1}
    else:
        logits_kw = {}
    return LoadedModel(model, spec, layers, device, dtype, cache_kw, logits_kw)
