"""The transformers models the harness builds have exactly the catalog spec's weights (built on the
meta device: no memory, no time), so a measured row's ``layers`` means the spec's layers."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from llmco2_sidecar.errors import InputError  # noqa: E402
from llmco2_sidecar.profile.hf_model import build_model, crop_cache, hf_config  # noqa: E402
from llmco2_sidecar.profile.plan import DEFAULT_MODELS, resolve_model, smoke_spec  # noqa: E402


@pytest.mark.parametrize("hf_id,layers", [(m, n or 2) for m, n in DEFAULT_MODELS] + [("google/gemma-2-9b", 2)])
def test_parameter_count_matches_spec(hf_id, layers):
    spec = resolve_model(hf_id)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config(spec, layers))
    assert model.config.num_hidden_layers == layers
    assert sum(p.numel() for p in model.parameters()) == spec.with_layers(layers).total_params


def test_unsupported_type_is_an_input_error():
    spec = smoke_spec()
    from dataclasses import replace

    with pytest.raises(InputError, match="no transformers class"):
        hf_config(replace(spec, model_type="internlm2"))


def test_prefill_decode_and_crop_on_cpu():
    lm = build_model(smoke_spec(), 2, "cpu", "float32")
    with torch.inference_mode():
        ids = lm.random_ids(2, 10)
        cache, nxt = lm.prefill(ids)
        assert cache.get_seq_length() == 10 and tuple(nxt.shape) == (2, 1)
        cache, nxt = lm.decode(cache, nxt, 5)
        assert cache.get_seq_length() == 15
        crop_cache(cache, 10)
        assert cache.get_seq_length() == 10
        lm.decode(cache, nxt, 1)
        assert cache.get_seq_length() == 11
