"""The Sarathi-Serve adapter (llmco2_sarathi) against the sidecar's Sarathi-style scheduler simulator.

Sarathi itself is not installable here, so a small engine shim plays Sarathi-Serve's sequence
manager: it keeps ``Sequence``-shaped objects (prompt/output token lists, prompt tokens processed,
``reset_for_recompute`` on preemption) and hands the hook ``SchedulerOutputs``-shaped objects whose
``scheduled_seq_metadata_list`` holds only ``seq_id`` and ``prompt_chunk_len``, as Sarathi's do.
The simulator decides the schedule (chunked prefill, token budget, preemption under a small KV
cache); the hook must rebuild from the Sarathi-shaped objects exactly the slices the simulator
scheduled, and the sidecar (real, on loopback) must write a record for every request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from llmco2_sarathi import SarathiCarbonHook, attach
from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo
from llmco2_sidecar.config import SidecarConfig
from llmco2_sidecar.hardware.catalog import load_gpu
from llmco2_sidecar.models.catalog import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.predictor.roofline import RooflinePredictor
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread
from llmco2_sidecar.sim import SarathiAdapter, SarathiSimulator, ScheduledSeq, SchedulerConfig, TraceRequest

MODEL, GPU = "meta-llama/Llama-2-7b-hf", "A100-SXM4-80GB"


# ---- Sarathi-shaped objects (field and method names as in sarathi/core/datatypes) ----------------
class Sequence:
    def __init__(self, seq_id: str, prompt_len: int, max_generated: int):
        self.seq_id = seq_id
        self.prompt_token_ids = list(range(prompt_len))
        self.output_token_ids: list[int] = []
        self.prompt_tokens_processed = 0
        self.prompt_processing_finished = False
        self.finished = False
        self._original_prompt = prompt_len
        self._max_generated = max_generated

    def get_len(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    def get_prompt_len(self) -> int:
        return len(self.prompt_token_ids)

    def get_num_prompt_tokens_processed(self) -> int:
        return self.prompt_tokens_processed

    def is_finished(self) -> bool:
        return self.finished

    def update_prompt_tokens_processed(self, n: int) -> None:
        self.prompt_tokens_processed += n
        assert self.prompt_tokens_processed <= len(self.prompt_token_ids)
        self.prompt_processing_finished = self.prompt_tokens_processed == len(self.prompt_token_ids)

    def append_token_id(self, token: int) -> None:
        assert self.prompt_processing_finished
        self.output_token_ids.append(token)
        if self.get_len() - self._original_prompt >= self._max_generated:
            self.finished = True

    def reset_for_recompute(self) -> None:
        self.prompt_tokens_processed = 0
        self.prompt_processing_finished = False
        self.prompt_token_ids = self.prompt_token_ids + self.output_token_ids
        self.output_token_ids = []


@dataclass(frozen=True)
class SequenceScheduleMetadata:
    seq_id: str
    prompt_chunk_len: int

    @property
    def num_tokens(self) -> int:
        return max(self.prompt_chunk_len, 1)


@dataclass
class SchedulerOutputs:
    id: int
    ignored_seq_ids: list = field(default_factory=list)
    preempted_seq_ids: list = field(default_factory=list)
    scheduled_seq_metadata_list: list = field(default_factory=list)


class SeqManager:
    """Sarathi's BaseSequenceManager, reduced: preempt on schedule, advance and free on completion."""

    def __init__(self):
        self.seq_map: dict[str, Sequence] = {}

    def on_schedule(self, outputs: SchedulerOutputs):
        for sid in outputs.preempted_seq_ids:
            self.seq_map[sid].reset_for_recompute()
        return [], list(outputs.scheduled_seq_metadata_list)

    def on_step_completed(self, outputs: SchedulerOutputs) -> None:
        for meta in outputs.scheduled_seq_metadata_list:
            seq = self.seq_map[meta.seq_id]
            if not seq.prompt_processing_finished:
                seq.update_prompt_tokens_processed(meta.prompt_chunk_len)
                if not seq.prompt_processing_finished:
                    continue
            seq.append_token_id(7)
            if seq.is_finished():
                del self.seq_map[seq.seq_id]


class Engine:
    """Drives the Sarathi-shaped objects from the simulator's schedule (the simulator is its scheduler)."""

    def __init__(self, trace: list[TraceRequest], clock: list[float]):
        self.seq_manager = SeqManager()
        self._trace = {t.request_id: t for t in trace}
        self._clock = clock
        self._ids = 0
        self.expected_steps: list[list[ScheduledSeq]] = []
        self.expected_finished: dict[str, int] = {}

    # the simulator's StepSink
    def on_step(self, start_s: float, end_s: float, seqs) -> bool:
        self.expected_steps.append(list(seqs))
        sm = self.seq_manager
        outputs = SchedulerOutputs(id=self._ids)
        self._ids += 1
        for s in seqs:
            seq = sm.seq_map.get(s.seq_id)
            if seq is None:
                t = self._trace[s.seq_id]
                seq = sm.seq_map[s.seq_id] = Sequence(s.seq_id, t.prompt_tokens, t.output_tokens)
            elif s.processed_tokens == 0 and (seq.prompt_tokens_processed or seq.output_token_ids):
                outputs.preempted_seq_ids.append(s.seq_id)  # the scheduler dropped its KV cache
            prefill = not seq.prompt_processing_finished or s.seq_id in outputs.preempted_seq_ids
            outputs.scheduled_seq_metadata_list.append(SequenceScheduleMetadata(s.seq_id, s.chunk_len if prefill else 0))
        self._clock[0] = start_s
        ignored, metadata = sm.on_schedule(outputs)
        self._clock[0] = end_s
        self._on_step_completed(outputs, ignored, metadata, None, start_s)
        return True

    def on_finished(self, seq_id: str, output_tokens: int, time_s: float = 0.0, prompt_len: int = 0) -> bool:
        self.expected_finished[seq_id] = output_tokens
        return True

    def _on_step_completed(self, outputs, ignored, metadata, sampler_outputs, start_time):
        self.seq_manager.on_step_completed(outputs)
        return []


class RecordingAdapter(SarathiAdapter):
    def __init__(self, emitter):
        super().__init__(emitter)
        self.steps: list[list[ScheduledSeq]] = []
        self.finished: dict[str, int] = {}

    def on_step(self, start_s, end_s, seqs, step_id=None):
        self.steps.append(list(seqs))
        return super().on_step(start_s, end_s, seqs, step_id)

    def on_finished(self, seq_id, output_tokens, time_s=0.0, prompt_len=0):
        self.finished[seq_id] = output_tokens
        return super().on_finished(seq_id, output_tokens, time_s, prompt_len)


def _trace() -> list[TraceRequest]:
    sizes = [(300, 12), (40, 30), (700, 5), (90, 25), (20, 40), (450, 8), (60, 20), (160, 16)]
    return [TraceRequest(f"seq-{i}", 0.002 * i, p, o) for i, (p, o) in enumerate(sizes)]


@pytest.fixture
def sidecar(tmp_path):
    sc = SidecarThread(SidecarConfig(port=0, log=str(tmp_path / "carbon.jsonl"), predictor="roofline")).start()
    yield sc
    sc.stop()


def test_sarathi_outputs_become_the_simulators_steps_and_reach_the_sidecar(sidecar, tmp_path):
    trace = _trace()
    clock = [0.0]
    engine = Engine(trace, clock)
    emitter = Emitter(EngineInfo(engine_name="sarathi-serve", model_name=MODEL, gpu=GPU),
                      EmitterConfig(target=sidecar.address, clock=lambda: clock[0]))
    adapter = RecordingAdapter(emitter)
    hook = attach(engine, adapter, clock=lambda: clock[0])
    dep = Deployment(load_model(MODEL), load_gpu(GPU))
    # a KV cache of 1024 tokens and 128-token chunks: chunked prefill and preemptions both happen
    sim = SarathiSimulator(dep, RooflinePredictor(), engine, SchedulerConfig(chunk_size=128, max_num_seqs=6,
                                                                             kv_capacity_tokens=1024))
    stats = sim.run(trace)
    assert emitter.flush(10.0)
    emitter.close()

    assert stats.preemptions > 0 and stats.finished == len(trace)
    assert any(s.chunk_len > 1 and s.processed_tokens > 0 for step in engine.expected_steps for s in step)
    assert hook.errors == 0
    assert adapter.steps == engine.expected_steps  # slice for slice: ids, prompt, context, chunk, recompute
    assert adapter.finished == engine.expected_finished
    st = emitter.stats()
    assert st.dropped == 0 and st.steps_rejected == 0 and st.done_rejected == 0
    assert st.steps_accepted == len(engine.expected_steps)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        recs = {r["request_id"]: r for r in read_records(tmp_path / "carbon.jsonl")}
        if len(recs) == len(trace):
            break
        time.sleep(0.05)
    assert set(recs) == {t.request_id for t in trace}
    for t in trace:
        rec = recs[t.request_id]
        assert rec["output_tokens"] == t.output_tokens and rec["prompt_tokens"] == t.prompt_tokens
        assert rec["energy_j"]["total"] > 0 and rec["carbon_g"]["total"] > 0


def test_hook_reports_aborts_only_for_sequences_the_sidecar_saw():
    class Sink:
        def __init__(self):
            self.steps, self.done = [], []

        def emit_step(self, *a, **k):
            self.steps.append(a)
            return True

        def emit_done(self, rid, output_tokens=0, aborted=False, time_s=0.0, prompt_tokens=0):
            self.done.append((rid, output_tokens, aborted))
            return True

    sink = Sink()
    seqs = {"a": Sequence("a", 10, 5), "b": Sequence("b", 4, 5)}
    hook = SarathiCarbonHook(SarathiAdapter(sink), seqs, clock=lambda: 1.0)
    out = SchedulerOutputs(id=0, scheduled_seq_metadata_list=[SequenceScheduleMetadata("a", 6)])
    hook.on_schedule(out)
    hook.on_step_completed(out)
    hook.on_aborted("b")  # never scheduled: the sidecar would reject its end as unknown
    seqs["a"].update_prompt_tokens_processed(6)
    hook.on_aborted("a")
    assert len(sink.steps) == 1 and sink.done == [("a", 0, True)]
    # broken engine objects never raise into the engine
    hook.on_schedule(SchedulerOutputs(id=1, scheduled_seq_metadata_list=[SequenceScheduleMetadata("zz", 3)]))
    assert hook.errors == 1
