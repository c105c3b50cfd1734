"""Issue 17's papercuts: error lists without duplicates, a memory-fit message that says what is short,
the catalog marking models the product cannot model."""

from __future__ import annotations

import json

import pytest

from llmco2_sidecar.cli.main import main
from llmco2_sidecar.errors import InputError
from llmco2_sidecar.hardware import load_catalog


def test_unknown_gpu_lists_each_name_once():
    with pytest.raises(InputError) as err:
        load_catalog().gpu("Z900")
    names = err.value.allowed.split(", ")
    assert len(names) == len(set(n.lower() for n in names)), names
    for name in ("B200", "L4", "L40S", "A100", "H100-SXM5-80GB"):
        assert names.count(name) == 1


def test_input_error_drops_repeated_items_and_keeps_order():
    err = InputError("x", "bad", "b, a, b, c, a")
    assert err.allowed == "b, a, c"
    assert str(err) == "x: bad (allowed: b, a, c)"
    assert InputError("x", "bad", "more GPUs (--tp/--pp) or a larger GPU").allowed == "more GPUs (--tp/--pp) or a larger GPU"


def test_70b_on_two_a100_says_the_kv_cache_has_no_room(capsys):
    rc = main(["estimate", "--model", "meta-llama/Llama-3.1-70B", "--gpu", "A100", "--tp", "2", "--batch", "1",
               "--prompt-len", "128", "--output-len", "16"])
    err = capsys.readouterr().err
    assert rc == 2
    line = err.strip()
    assert "\n" not in line
    assert "does not fit on 2 x A100-SXM4-80GB" in line
    assert "offer 144.0 GB" in line and "weights take 141.1 GB" in line
    assert "activation reserve 8.0 GB" in line and "leaving no room for the KV cache (5.1 GB short)" in line


def test_a_too_long_request_names_the_kv_room(capsys):
    rc = main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "L4", "--batch", "1",
               "--prompt-len", "120000", "--output-len", "16"])  # within its 131,072-token context
    err = capsys.readouterr().err
    assert rc == 2 and "GB of KV cache room at gpu_memory_utilization 0.9" in err


def test_a_request_over_the_models_context_is_refused(capsys):
    """Llama-2-7B reads 4,096 tokens: vLLM refuses a longer request, so does the estimate."""
    rc = main(["estimate", "--model", "meta-llama/Llama-2-7b-hf", "--gpu", "A100", "--batch", "1",
               "--prompt-len", "4000", "--output-len", "100"])
    err = capsys.readouterr().err
    assert rc == 2 and "prompt-len: 4000 prompt + 100 output tokens exceed" in err and "4096" in err
    assert main(["estimate", "--model", "meta-llama/Llama-2-7b-hf", "--gpu", "A100", "--batch", "1",
                 "--prompt-len", "4000", "--output-len", "96", "--json"]) == 0  # exactly the context: fine
    capsys.readouterr()


def test_an_observed_latency_faster_than_the_roofline_is_refused(capsys):
    q = ["estimate", "--model", "meta-llama/Llama-2-7b-hf", "--gpu", "A100", "--batch", "8", "--prompt-len", "1024",
         "--output-len", "256"]
    assert main(q + ["--observed-latency-s", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "observed-latency-s: 0.01 s is faster than this batch can run" in err and "Roofline minimum" in err
    assert main(q + ["--observed-latency-s", "10", "--json"]) == 0  # a plausible wall time is taken
    assert json.loads(capsys.readouterr().out)["observed_latency_s"] == 10.0


def test_max_batched_tokens_zero_is_refused_not_unlimited(capsys):
    rc = main(["estimate", "--model", "meta-llama/Llama-2-7b-hf", "--gpu", "A100", "--batch", "2", "--prompt-len",
               "128", "--output-len", "8", "--max-batched-tokens", "0"])
    assert rc == 2 and "max-batched-tokens: must be positive, got 0" in capsys.readouterr().err


def test_catalog_marks_models_it_cannot_build(capsys):
    from llmco2_sidecar.cli.catalog import model_support
    from llmco2_sidecar.models import list_aliases, list_models, load_model

    assert main(["catalog", "models", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert set(models) == set(list_models()) | set(list_aliases())  # bundled configs and their aliases
    for hf_id, m in models.items():  # the mark follows whether the spec builds, whatever the model code supports
        try:
            load_model(hf_id)
            builds = True
        except InputError:
            builds = False
        assert m["supported"] is builds, hf_id
        assert bool(m["reason"]) is (not builds)
    assert model_support("meta-llama/Llama-2-7b-hf") == {"supported": True, "reason": ""}
    assert main(["catalog", "models"]) == 0
    text = capsys.readouterr().out
    for hf_id, m in models.items():
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(hf_id))
        assert ("UNSUPPORTED" in line) is (not m["supported"]), line


def test_catalog_marks_an_unsupported_model_in_text(capsys, monkeypatch):
    import llmco2_sidecar.cli.catalog as cat

    def fake_support(hf_id):
        return {"supported": False, "reason": "model_type: moe is not supported"} if "Llama-2-7b" in hf_id else \
            {"supported": True, "reason": ""}

    monkeypatch.setattr(cat, "model_support", fake_support)
    assert main(["catalog", "models"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "Llama-2-7b-hf" in ln)
    assert "UNSUPPORTED: model_type: moe is not supported" in line
