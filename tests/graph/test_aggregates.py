"""Step aggregates (one bincount over every block and column) against plain per-step sums."""

import numpy as np
import pytest

from llmco2_sidecar.graph.aggregates import aggregates, slice_aggregates
from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.workload import Parallelism, StepBatch


def _steps(seed: int, empty: bool = True) -> StepBatch:
    rng = np.random.default_rng(seed)
    steps = []
    for s in range(9):
        k = int(rng.integers(0 if empty else 1, 6))  # a step may be empty
        steps.append([(int(rng.integers(0, 5000)), 1) for _ in range(k)]
                     + ([(int(rng.integers(0, 300)), int(rng.integers(2, 900)))] if s % 3 == 0 else [])
                     + ([(0, 1)] if s == 4 else []))  # a one-token prompt from an empty cache: prefill
    return StepBatch.from_steps(steps, duration_s=[0.02] * len(steps))


@pytest.mark.parametrize("empty", [True, False])  # False: every step has slices (the segment-sum path)
@pytest.mark.parametrize("model_id,tp", [("meta-llama/Llama-2-7b-hf", 1), ("Qwen/Qwen3-30B-A3B", 2),
                                         ("openai/gpt-oss-20b", 1)])
def test_aggregates_equal_per_step_sums_in_slice_order(model_id, tp, empty):
    """Each block (whole step, its prefill slices, its decode slices) and column is the sum of its
    slices' values added in slice order, bit for bit; run = any slice; the context statistics too."""
    dep = Deployment(load_model(model_id), load_gpu("H100"), Parallelism(tp=tp))
    steps = _steps(1, empty)
    assert empty or np.bincount(steps.request_step, minlength=steps.n_steps).all()
    ag = aggregates(steps, dep)
    new = steps.new_tokens.astype(np.float64)
    ctx = steps.context_tokens.astype(np.float64)
    per = slice_aggregates(new, ctx, dep.model)
    pre = (steps.new_tokens > 1) | (steps.context_tokens == 0)
    for s in range(steps.n_steps):
        for block, mask in ((ag.step, np.ones_like(pre)), (ag.prefill, pre), (ag.decode, ~pre)):
            rows = np.flatnonzero((steps.request_step == s) & mask)
            for j in range(per.shape[1]):
                if j in (0, 5):
                    continue
                want = 0.0
                for r in rows:
                    want += per[r, j]
                assert block[s, j] == want, (s, j)
            assert block[s, 0] == (1.0 if rows.size else 0.0)
        mine = np.flatnonzero(steps.request_step == s)
        assert ag.max_context[s] == (max(ctx[mine] + new[mine]) if mine.size else 0.0)
        assert ag.mean_context[s] == ((ctx[mine] + new[mine]).sum() / mine.size if mine.size else 0.0)
    if dep.model.is_moe:  # the touched-expert share follows each block's tokens
        assert (ag.step[:, 5] >= ag.decode[:, 5]).all() and ag.step[:, 5].max() > 0
    assert ag.is_prefill.tolist() == pre.tolist()


def test_aggregates_do_not_depend_on_slice_order():
    """Slices in step order (segment sums) and shuffled (the bincount path): the same floats."""
    dep = Deployment(load_model("openai/gpt-oss-20b"), load_gpu("H100"))
    steps = _steps(5, empty=False)
    perm = np.random.default_rng(0).permutation(steps.n_slices)
    shuffled = StepBatch(steps.request_step[perm], steps.context_tokens[perm], steps.new_tokens[perm], steps.duration_s)
    a, b = aggregates(steps, dep), aggregates(shuffled, dep)
    for name in ("step", "prefill", "decode", "mean_context", "max_context"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
