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


def _shares_by_roofline(dep, sb):
    """The shares as first written: each kernel group's Roofline (builder.roofline) summed per step."""
    from llmco2_sidecar.graph.aggregates import aggregates, slice_aggregates
    from llmco2_sidecar.graph.builder import layer_graph, roofline
    from llmco2_sidecar.graph.shares import _groups

    g = layer_graph(dep)
    L, S, idx = dep.model.num_layers, sb.n_steps, sb.request_step
    agg = aggregates(sb, dep).step
    (attn, _), (tl, _), (to, _), (lo, _) = _groups(g)
    t_token = L * roofline(tl, agg, dep).time_s.sum(1) + roofline(to, agg, dep).time_s.sum(1)
    t_logit = roofline(lo, agg, dep).time_s.sum(1)
    new = sb.new_tokens.astype(float)
    t_slice = L * roofline(attn, slice_aggregates(new, sb.context_tokens.astype(float), dep.model), dep).time_s.sum(1)
    total = t_token + t_logit + np.bincount(idx, weights=t_slice, minlength=S)
    tokens = np.bincount(idx, weights=new, minlength=S)
    n = np.bincount(idx, minlength=S)
    share = (t_token[idx] * new / tokens[idx] + t_logit[idx] / n[idx] + t_slice) / total[idx]
    return share / np.bincount(idx, weights=share, minlength=S)[idx]


def test_shares_equal_the_per_group_roofline():
    """The shares' linear time forms (one product per kernel group) give the per-kernel Roofline
    times of builder.roofline: the same shares to the last bits (summation order aside), for dense,
    FP8, MoE and local-attention models."""
    from llmco2_sidecar.workload import Parallelism

    sb = StepBatch.from_steps([[(0, 700)], [(0, 300), (512, 1), (4000, 1), (9000, 1)], [(8191, 1)] * 64,
                               [(100, 37), (5000, 1)]])
    for model, gpu, tp in (("meta-llama/Llama-2-7b-hf", "A100", 1), ("meta-llama/Llama-3.1-70B", "H100", 4),
                           ("openai/gpt-oss-20b", "H100", 1), ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "H100", 4),
                           ("google/gemma-2-9b", "L40S", 1)):
        dep = Deployment(load_model(model), load_gpu(gpu), Parallelism(tp=tp))
        got = request_shares(dep, sb)
        np.testing.assert_allclose(got, _shares_by_roofline(dep, sb), rtol=1e-13, atol=0, err_msg=model)
        assert not np.array_equal(got, np.zeros_like(got))
