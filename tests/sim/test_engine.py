"""The engine simulator: vLLM v1 scheduling rules, KV capacity, preemption, and runs of decode steps
computed together giving exactly the steps of stepping one at a time."""

from __future__ import annotations

import numpy as np
import pytest

from llmco2_sidecar.hardware.catalog import load_gpu
from llmco2_sidecar.models.catalog import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.predictor.roofline import RooflinePredictor
from llmco2_sidecar.sim.engine import EngineConfig, EngineSimulator
from llmco2_sidecar.sim.trace import TraceRequest
from llmco2_sidecar.workload import Parallelism, StepBatch

DEP = Deployment(load_model("meta-llama/Llama-2-7b-hf"), load_gpu("A100-SXM4-80GB"), Parallelism(1))


def _trace(n=120, seed=0, rate=20.0):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    t -= t[0]
    return [TraceRequest(f"r{i}", float(t[i]), int(rng.integers(8, 900)), int(rng.integers(1, 120))) for i in range(n)]


def _run(cfg, run_steps, trace=None, chunk_steps=64):
    sim = EngineSimulator(DEP, RooflinePredictor(), cfg, chunk_steps=chunk_steps, run_steps=run_steps)
    chunks = list(sim.run(trace or _trace()))
    cat = lambda name: np.concatenate([np.zeros(0)] + [getattr(c, name) for c in chunks])  # noqa: E731
    steps = np.concatenate([np.zeros(0, np.int64)] + [np.bincount(c.step_of) for c in chunks])
    fin = [(r.rid, r.first_s, r.finish_s, r.preemptions) for c in chunks for r in c.finished]
    return sim, chunks, {k: cat(k) for k in ("start_s", "end_s", "slot", "context_tokens", "new_tokens", "is_prefill")}, steps, fin


@pytest.mark.parametrize("cfg", [
    EngineConfig(),
    EngineConfig(max_num_seqs=8, max_num_batched_tokens=512),
    EngineConfig(max_num_seqs=64, max_num_batched_tokens=256, kv_capacity_tokens=4096),  # preempts
    EngineConfig(max_num_seqs=64, max_num_batched_tokens=256, kv_capacity_tokens=4096, policy="sarathi"),
    EngineConfig(max_num_seqs=32, max_num_batched_tokens=1024, chunked_prefill=False, kv_capacity_tokens=8192),
])
def test_decode_runs_equal_single_steps(cfg):
    a = _run(cfg, True)
    b = _run(cfg, False)
    assert a[0].stats.runs > 0 and b[0].stats.runs == 0
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k], err_msg=k)
    np.testing.assert_array_equal(a[3], b[3])
    assert a[4] == b[4]
    assert a[0].stats.preemptions == b[0].stats.preemptions


def test_scheduling_invariants_and_preemption():
    cfg = EngineConfig(max_num_seqs=64, max_num_batched_tokens=256, kv_capacity_tokens=4096)
    trace = _trace()
    sim, chunks, c, per_step, fin = _run(cfg, True, trace)
    assert sim.stats.preemptions > 0
    assert len(fin) == len(trace) - sim.stats.rejected
    assert per_step.max() <= cfg.max_num_seqs
    # the token budget per step holds
    tokens = np.concatenate([np.bincount(ch.step_of, weights=ch.new_tokens) for ch in chunks])
    assert tokens.max() <= cfg.max_num_batched_tokens
    # steps follow each other in time, never overlapping
    assert np.all(c["start_s"][1:] >= c["end_s"][:-1] - 1e-12) and np.all(c["end_s"] > c["start_s"])
    # KV in use never exceeds capacity: the largest context + new of a step's requests fits
    for ch in chunks:
        kv = np.bincount(ch.step_of, weights=-(-(ch.context_tokens + ch.new_tokens) // 16) * 16)
        assert kv.max() <= 4096
    # every finished request produced its output: decodes = output - 1 (+ recomputations as prefill)
    outs = {r.request_id: r.output_tokens for r in trace}
    firsts = {rid: (f, e) for rid, f, e, _ in fin}
    assert all(firsts[r][0] <= firsts[r][1] for r in firsts)
    assert len(outs) >= len(firsts)


def test_rejects_what_never_fits():
    trace = [TraceRequest("big", 0.0, 5000, 10), TraceRequest("ok", 0.1, 100, 10)]
    sim, chunks, c, _, fin = _run(EngineConfig(kv_capacity_tokens=4096), True, trace)
    assert sim.stats.rejected == 1 and [f[0] for f in fin] == ["ok"]
    sim, *_ = _run(EngineConfig(chunked_prefill=False, max_num_batched_tokens=1024), True,
                   [TraceRequest("long", 0.0, 2000, 3)])
    assert sim.stats.rejected == 1 and sim.stats.rejected_ids[0] == ("long", "budget")


def test_chunked_prefill_splits_long_prompts():
    sim, chunks, c, per_step, fin = _run(EngineConfig(max_num_batched_tokens=256), True,
                                         [TraceRequest("p", 0.0, 1000, 2)])
    assert list(c["new_tokens"]) == [256, 256, 256, 232, 1]
    assert list(c["context_tokens"]) == [0, 256, 512, 768, 1000]
    assert list(c["is_prefill"]) == [True] * 4 + [False]


def test_step_times_are_the_predictors():
    sim, chunks, c, per_step, fin = _run(EngineConfig(), True, _trace(30))
    ch = chunks[0]
    p = RooflinePredictor().predict_steps(DEP, StepBatch(ch.step_of, ch.context_tokens, ch.new_tokens,
                                                         np.full(ch.n_steps, np.nan)))
    np.testing.assert_allclose(ch.end_s - ch.start_s, p.duration_s, rtol=1e-9)


def test_idle_engine_jumps_to_next_arrival():
    sim, chunks, c, *_ = _run(EngineConfig(), True, [TraceRequest("a", 0.0, 10, 2), TraceRequest("b", 100.0, 10, 2)])
    assert c["start_s"][0] == 0.0 and 100.0 in list(c["start_s"])


@pytest.mark.parametrize("name", ["roofline", "default"])
def test_duration_fast_path_matches_predict_steps(name):
    from llmco2_sidecar.sim.replay import load_predictor

    p = load_predictor(name)
    rng = np.random.default_rng(5)
    S = 40
    counts = rng.integers(1, 50, S)
    step_of = np.repeat(np.arange(S), counts)
    ctx = rng.integers(0, 3000, step_of.size)
    new = np.where(rng.random(step_of.size) < 0.2, rng.integers(2, 400, step_of.size), 1)
    sb = StepBatch(step_of, ctx, new, np.full(S, np.nan))
    np.testing.assert_allclose(p.predict_duration_s(DEP, sb), p.predict_steps(DEP, sb).duration_s, rtol=1e-12)
