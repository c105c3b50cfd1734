import numpy as np
from hypothesis import given, settings, strategies as st

from llmco2_sidecar.graph import request_shares
from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.workload import StepBatch

DEP = Deployment(load_model("meta-llama/Llama-2-7b-hf"), load_gpu("A100"))

slices = st.lists(st.tuples(st.integers(0, 8000), st.integers(1, 600)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(slices, min_size=1, max_size=6))
def test_shares_sum_to_one_per_step(steps):
    sb = StepBatch.from_steps(steps)
    sh = request_shares(DEP, sb)
    assert (sh >= 0).all()
    np.testing.assert_allclose(np.bincount(sb.request_step, weights=sh, minlength=sb.n_steps), 1.0, rtol=1e-9)


def test_longer_context_and_more_tokens_cost_more():
    sb = StepBatch.from_steps([[(100, 1), (8000, 1)], [(0, 10), (0, 500)]])
    sh = request_shares(DEP, sb)
    assert sh[1] > sh[0]
    assert sh[3] > sh[2]
    # identical decodes share equally
    eq = request_shares(DEP, StepBatch.from_steps([[(300, 1)] * 4]))
    np.testing.assert_allclose(eq, 0.25)
