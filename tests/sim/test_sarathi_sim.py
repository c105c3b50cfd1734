"""The Sarathi-style scheduler simulator: budget, sequence and KV limits, preemption, token
conservation; the adapter through a real emitter and sidecar; the trace loader."""

from __future__ import annotations

import numpy as np
import pytest

from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo, Phase
from llmco2_sidecar.config import SidecarConfig
from llmco2_sidecar.errors import InputError
from llmco2_sidecar.hardware.catalog import load_gpu
from llmco2_sidecar.models.catalog import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.predictor.roofline import RooflinePredictor
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread
from llmco2_sidecar.sim import (SarathiAdapter, SarathiSimulator, ScheduledSeq, SchedulerConfig, TraceRequest,
                                load_azure_conv)

MODEL, GPU = "meta-llama/Llama-2-7b-hf", "A100-SXM4-80GB"


@pytest.fixture(scope="module")
def dep():
    return Deployment(load_model(MODEL), load_gpu(GPU))


class Recorder:
    def __init__(self):
        self.steps: list[tuple[float, float, list[ScheduledSeq]]] = []
        self.finished: dict[str, int] = {}

    def on_step(self, start_s, end_s, seqs):
        self.steps.append((start_s, end_s, list(seqs)))
        return True

    def on_finished(self, seq_id, output_tokens, time_s=0.0, prompt_len=0):
        self.finished[seq_id] = output_tokens
        return True


def _requests(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return [TraceRequest(f"r{i}", float(i) * 0.05, int(rng.integers(1, 1500)), int(rng.integers(1, 200)))
            for i in range(n)]


@pytest.mark.parametrize("cfg", [SchedulerConfig(), SchedulerConfig(chunk_size=64, max_num_seqs=4),
                                 SchedulerConfig(chunk_size=256, max_num_seqs=32, kv_capacity_tokens=4096)])
def test_limits_and_conservation(dep, cfg):
    reqs = _requests()
    rec = Recorder()
    sim = SarathiSimulator(dep, RooflinePredictor(), rec, cfg)
    stats = sim.run(reqs)
    assert rec.finished == {q.request_id: q.output_tokens for q in reqs}  # all done, with their outputs
    prev_end = 0.0
    for start, end, seqs in rec.steps:
        assert sum(s.chunk_len for s in seqs) <= cfg.chunk_size
        assert len(seqs) <= cfg.max_num_seqs
        assert len({s.seq_id for s in seqs}) == len(seqs)
        assert end > start >= prev_end - 1e-12  # simulated time moves forward by predicted durations
        prev_end = end
        # decodes come first in a step, then prefill chunks
        kinds = [s.chunk_len == 1 and s.processed_tokens >= s.prompt_len and not s.recompute for s in seqs]
        assert kinds == sorted(kinds, reverse=True)
        if cfg.kv_capacity_tokens:
            assert sim._used_blocks <= sim.cap_blocks
    total = sum(s.chunk_len for _, _, seqs in rec.steps for s in seqs)
    expected = sum(q.prompt_tokens + q.output_tokens - 1 for q in reqs) + stats.recomputed_tokens
    assert total == expected == stats.prefill_tokens + stats.decode_tokens
    if cfg.kv_capacity_tokens:
        assert stats.preemptions > 0  # a small KV cache forces recomputation


def test_idle_engine_jumps_to_the_next_arrival(dep):
    reqs = [TraceRequest("a", 0.0, 10, 2), TraceRequest("b", 100.0, 10, 2)]
    rec = Recorder()
    SarathiSimulator(dep, RooflinePredictor(), rec).run(reqs)
    starts = [s for s, _, seqs in rec.steps if seqs[0].seq_id == "b"]
    assert starts[0] == pytest.approx(100.0)


def test_requests_that_never_fit_are_skipped(dep):
    rec = Recorder()
    sim = SarathiSimulator(dep, RooflinePredictor(), rec, SchedulerConfig(kv_capacity_tokens=1024))
    stats = sim.run([TraceRequest("big", 0.0, 2000, 10), TraceRequest("ok", 0.0, 100, 10)])
    assert stats.skipped == ["big"] and set(rec.finished) == {"ok"}


def test_config_validation():
    with pytest.raises(InputError) as e:
        SchedulerConfig(chunk_size=0)
    assert e.value.field == "chunk_size"


def test_adapter_phases():
    sent = []

    class FakeEmitter:  # records what the adapter would enqueue
        def emit_step(self, *args):
            sent.append(args)
            return True

    ad = SarathiAdapter(FakeEmitter())
    ad.on_step(0.0, 1.0, [ScheduledSeq("a", 100, 0, 64), ScheduledSeq("b", 100, 64, 36), ScheduledSeq("c", 10, 12, 1),
                          ScheduledSeq("d", 10, 0, 15, recompute=True)])
    step_id, _, _, rids, new, ctx, prompt, phases = sent[0]
    assert step_id == 1 and rids == ["a", "b", "c", "d"] and new == [64, 36, 1, 15]
    assert phases == [Phase.PREFILL_NEW, Phase.PREFILL_CHUNK, Phase.DECODE, Phase.PREFILL_NEW]


def test_simulator_through_emitter_and_sidecar(dep, tmp_path):
    cfg = SidecarConfig(port=0, log=str(tmp_path / "c.jsonl"), predictor="roofline", log_steps=True)
    reqs = _requests(25, seed=3)
    with SidecarThread(cfg) as sc:
        clock = [0.0]
        em = Emitter(EngineInfo(engine_name="sarathi-sim", model_name=MODEL, gpu=GPU, instance_id="sim"),
                     EmitterConfig(target=sc.address, clock=lambda: clock[0]))
        rec = Recorder()

        class Both:
            adapter = SarathiAdapter(em)

            def on_step(self, s, e, seqs):
                clock[0] = e
                rec.on_step(s, e, seqs)
                return self.adapter.on_step(s, e, seqs)

            def on_finished(self, *a, **kw):
                rec.on_finished(*a, **kw)
                return self.adapter.on_finished(*a, **kw)

        SarathiSimulator(dep, RooflinePredictor(), Both(), SchedulerConfig(chunk_size=128, max_num_seqs=8)).run(reqs)
        assert em.flush(30)
        stats = em.stats()
        assert stats.steps_accepted == len(rec.steps) and stats.steps_rejected == 0 and stats.flagged == 0
        em.close()
        sc.flush()
    recs = read_records(cfg.log, ("request", "step"))
    steps = [r for r in recs if r["type"] == "step"]
    requests = {r["request_id"]: r for r in recs if r["type"] == "request"}
    # the step events' tokens match what the scheduler scheduled
    assert [r["tokens"] for r in steps] == [sum(s.chunk_len for s in seqs) for _, _, seqs in rec.steps]
    assert set(requests) == {q.request_id for q in reqs}
    for q in reqs:
        r = requests[q.request_id]
        assert r["prompt_tokens"] == q.prompt_tokens and r["output_tokens"] == q.output_tokens
    # per-request energies sum to the steps' energies (no idle here: the engine never waits with work)
    total_steps = sum(r["energy_j"]["total"] for r in steps)
    idle = sum(r["energy_j"]["idle"] for r in steps)
    assert sum(r["energy_j"]["total"] for r in requests.values()) + idle == pytest.approx(total_steps, rel=1e-9)


def test_trace_loader():
    import csv
    from datetime import datetime, timezone

    from llmco2_sidecar.sim.trace import BUNDLED_CONV

    with open(BUNDLED_CONV) as fh:  # an independent count of the first minute
        rows = list(csv.DictReader(fh))
    times = [datetime.fromisoformat(r["TIMESTAMP"][:26]).replace(tzinfo=timezone.utc).timestamp() for r in rows]
    expected = sum(1 for t in times if t - times[0] <= 60)
    reqs, epoch = load_azure_conv(minutes=1)
    assert len(reqs) == expected and epoch == pytest.approx(times[0])
    assert reqs[0].arrival_s == 0.0 and all(r.arrival_s <= 60 for r in reqs)
    assert (reqs[0].prompt_tokens, reqs[0].output_tokens) == (374, 44)
    assert len(load_azure_conv(max_requests=10)[0]) == 10
    with pytest.raises(InputError):
        load_azure_conv(minutes=0)
    with pytest.raises(InputError):
        load_azure_conv("/no/such/trace.csv")
