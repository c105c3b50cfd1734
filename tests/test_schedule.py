import numpy as np
import pytest

from llmco2_sidecar.errors import InputError
from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.schedule import PHASE_DECODE, PHASE_PREFILL, batch_steps, kv_capacity_tokens
from llmco2_sidecar.workload import Parallelism

DEP = Deployment(load_model("meta-llama/Llama-2-7b-hf"), load_gpu("A100"))


def test_fitting_batch_is_one_prefill_then_decodes():
    s = batch_steps(DEP, batch=4, prompt_len=100, output_len=5)
    assert s.kv_fits and s.preemptions == 0
    assert s.steps.n_steps == 5 and s.phase[0] == PHASE_PREFILL and (s.phase[1:] == PHASE_DECODE).all()
    assert s.steps.new_tokens.sum() == 4 * (100 + 4)
    last = s.steps.request_step == 4
    assert (s.steps.context_tokens[last] == 103).all()


def test_chunked_prefill_matches_token_budget():
    s = batch_steps(DEP, batch=2, prompt_len=100, output_len=3, max_batched_tokens=64)
    per_step = s.steps.steps_tokens()
    assert (per_step <= 64).all()
    assert s.steps.new_tokens.sum() == 2 * (100 + 2)  # same work, more steps
    assert s.steps.n_steps > 3


def test_kv_capacity_from_memory_and_weights():
    m, g = DEP.model, DEP.gpu
    expected = (g.memory_bytes * 0.85 - m.weight_bytes) / m.kv_bytes_per_token
    assert kv_capacity_tokens(DEP) == pytest.approx(expected, abs=16)
    tp2 = Deployment(m, g, Parallelism(tp=2))
    assert kv_capacity_tokens(tp2) > 2 * kv_capacity_tokens(DEP)  # weights are split, memory doubles


def test_preemption_when_kv_does_not_fit():
    small = 4096
    s = batch_steps(DEP, batch=16, prompt_len=400, output_len=200, kv_capacity=small)
    assert not s.kv_fits and s.preemptions > 0 and s.recomputed_tokens > 0
    # every request still produces all its tokens: prefill + decodes, plus the recomputation
    assert s.steps.new_tokens.sum() == 16 * (400 + 199) + s.recomputed_tokens
    # the KV cache in use never exceeds the capacity: per step, the context + new of running slices
    per_step_kv = np.bincount(s.steps.request_step, weights=s.steps.context_tokens + s.steps.new_tokens)
    assert per_step_kv.max() <= small


def test_request_that_cannot_fit_is_rejected():
    with pytest.raises(InputError) as e:
        batch_steps(DEP, batch=1, prompt_len=5000, output_len=10, kv_capacity=4096)
    assert e.value.field == "prompt-len"


def test_weights_that_do_not_fit_are_rejected():
    with pytest.raises(InputError) as e:
        kv_capacity_tokens(Deployment(load_model("meta-llama/Llama-2-70b-hf"), load_gpu("L4")))
    assert e.value.field == "gpu" and "--tp" in str(e.value)
