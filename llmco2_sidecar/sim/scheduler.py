"""A Sarathi-style continuous-batching engine driving a step sink (the Sarathi adapter, a test
recorder): :class:`~llmco2_sidecar.sim.engine.EngineSimulator` with the ``sarathi`` policy (decodes
first, then partial prefills, then admissions; token budget = Sarathi's chunk size), its steps
handed to ``sink.on_step`` one by one and each finish to ``sink.on_finished`` right after the step
it finished in. The one simulator of the project: ``llmco2 replay``, ``whatif`` and ``demo`` run the
same engine (with the vLLM v1 policy by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from ..errors import InputError
from ..predictor.api import Deployment, StepPredictor
from .adapter import ScheduledSeq
from ..schedule import BLOCK_TOKENS
from .engine import EngineConfig, EngineSimulator, EngineStats
from .trace import TraceRequest


class StepSink(Protocol):
    def on_step(self, start_s: float, end_s: float, seqs: Sequence[ScheduledSeq]) -> bool: ...
    def on_finished(self, seq_id: str, output_tokens: int, time_s: float = 0.0, prompt_len: int = 0) -> bool: ...


@dataclass
class SchedulerConfig:
    """Sarathi-Serve defaults: chunk size 512 tokens per step, 128 sequences at most."""

    chunk_size: int = 512
    max_num_seqs: int = 128
    kv_capacity_tokens: int | None = None  # default: from the deployment (schedule.kv_capacity_tokens)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise InputError("chunk_size", "must be positive", ">= 1")
        if self.max_num_seqs < 1:
            raise InputError("max_num_seqs", "must be positive", ">= 1")


SimStats = EngineStats  # what run() returns: the engine's own statistics (``skipped``: requests that never fit)


class SarathiSimulator:
    def __init__(self, dep: Deployment, predictor: StepPredictor, sink: StepSink, config: SchedulerConfig | None = None):
        self.dep = dep
        self.predictor = predictor
        self.sink = sink
        self.config = config or SchedulerConfig()
        c = self.config
        self.engine = EngineSimulator(dep, predictor, EngineConfig(
            max_num_seqs=c.max_num_seqs, max_num_batched_tokens=c.chunk_size, kv_capacity_tokens=c.kv_capacity_tokens,
            policy="sarathi"), chunk_steps=256)
        self.cap_blocks = self.engine.cap_blocks
        self._max_used = 0

    @property
    def _used_blocks(self) -> int:
        """The most KV blocks in use at once so far."""
        return self._max_used

    @property
    def now(self) -> float:
        return self.engine.now

    def run(self, requests: Sequence[TraceRequest]) -> SimStats:
        eng = self.engine
        for chunk in eng.run(sorted(requests, key=lambda q: q.arrival_s)):
            bounds = np.concatenate(([0], np.cumsum(np.bincount(chunk.step_of, minlength=chunk.n_steps))))
            slots, ctx, new, rec = (chunk.slot.tolist(), chunk.context_tokens.tolist(), chunk.new_tokens.tolist(),
                                    chunk.recompute.tolist())
            done = {r.slot: r for r in chunk.finished}
            ends: dict[float, list] = {}
            for r in chunk.finished:
                ends.setdefault(r.finish_s, []).append(r)
            for i in range(chunk.n_steps):
                a, b = int(bounds[i]), int(bounds[i + 1])
                seqs = []
                used = 0
                for s, c, n, p in zip(slots[a:b], ctx[a:b], new[a:b], rec[a:b]):
                    r = done.get(s) or eng.slot_req[s]
                    seqs.append(ScheduledSeq(r.rid, r.prompt, c, n, bool(p)))
                    used += -(-(c + n) // BLOCK_TOKENS)
                self._max_used = max(self._max_used, used)
                end = float(chunk.end_s[i])
                self.sink.on_step(float(chunk.start_s[i]), end, seqs)
                for r in ends.pop(end, ()):
                    self.sink.on_finished(r.rid, r.generated, r.finish_s, r.prompt)
        return eng.stats
