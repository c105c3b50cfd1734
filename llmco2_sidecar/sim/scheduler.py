"""A Sarathi-style continuous-batching scheduler, simulated over time (Sarathi-Serve's
``SarathiScheduler._schedule`` and vLLM v1's scheduler follow the same order):

1. running requests whose prefill is done get one decode token each; when the KV cache has no
   block for it, the most recently admitted running request is preempted (its KV is dropped and it
   is recomputed later as a prefill of its prompt plus what it had generated);
2. running requests with a partial prefill get their next chunk, ``min(left, budget left)``;
3. waiting requests that have arrived are admitted while KV blocks can be allocated for their first
   chunk, fewer than ``max_num_seqs`` run, and token budget (``chunk_size``) remains.

Each step's duration comes from the predictor (``StepPrediction.duration_s``), so simulated time
advances as the modelled engine would; an idle engine jumps to the next arrival. Every executed
step goes through :class:`~llmco2_sidecar.sim.adapter.SarathiAdapter` (or any callback with the same
methods), which sends real step events to the sidecar.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from ..errors import InputError
from ..predictor.api import Deployment, StepPredictor
from ..schedule import BLOCK_TOKENS, kv_capacity_tokens
from ..workload import StepBatch
from .adapter import ScheduledSeq
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


@dataclass
class SimRequest:
    rid: str
    arrival_s: float
    prompt_len: int
    output_len: int
    target: int = 0  # tokens to prefill: prompt (+ generated after a preemption)
    processed: int = 0  # tokens in the KV cache
    generated: int = 0
    blocks: int = 0
    recompute: bool = False
    finish_s: float = 0.0

    def __post_init__(self) -> None:
        self.target = self.prompt_len


@dataclass
class SimStats:
    steps: int = 0
    finished: int = 0
    preemptions: int = 0
    recomputed_tokens: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    busy_s: float = 0.0
    end_s: float = 0.0
    max_running: int = 0
    skipped: list = field(default_factory=list)  # requests that can never fit the KV cache


def _blocks(tokens: int) -> int:
    return -(-tokens // BLOCK_TOKENS)


class SarathiSimulator:
    def __init__(self, dep: Deployment, predictor: StepPredictor, sink: StepSink, config: SchedulerConfig | None = None):
        self.dep = dep
        self.predictor = predictor
        self.sink = sink
        self.config = config or SchedulerConfig()
        cap = self.config.kv_capacity_tokens or kv_capacity_tokens(dep)
        self.cap_blocks = cap // BLOCK_TOKENS
        self.now = 0.0
        self.stats = SimStats()
        self._used_blocks = 0

    # ---- one step --------------------------------------------------------------------------------
    def _alloc(self, r: SimRequest, tokens: int) -> bool:
        need = _blocks(tokens) - r.blocks
        if need <= 0:
            return True
        if self._used_blocks + need > self.cap_blocks:
            return False
        self._used_blocks += need
        r.blocks += need
        return True

    def _free(self, r: SimRequest) -> None:
        self._used_blocks -= r.blocks
        r.blocks = 0

    def schedule(self, running: list, waiting: deque) -> list[tuple[SimRequest, int]]:
        """One step's composition: [(request, tokens this step)]."""
        budget = self.config.chunk_size
        out: list[tuple[SimRequest, int]] = []
        chosen: set[str] = set()
        # 1. decodes (preempting the newest when the KV cache is full)
        i = 0
        while i < len(running) and budget > 0:
            r = running[i]
            if r.processed < r.target:
                i += 1
                continue
            while not self._alloc(r, r.processed + 1):
                victim = running[-1]
                if victim is r:
                    break
                running.pop()
                self._preempt(victim, waiting)
                out = [(q, n) for q, n in out if q is not victim]
                chosen.discard(victim.rid)
            else:
                out.append((r, 1))
                chosen.add(r.rid)
                budget -= 1
                i += 1
                continue
            # r itself is the newest and does not fit: preempt it too
            running.pop()
            self._preempt(r, waiting)
        # 2. chunks of partial prefills
        for r in running:
            if budget <= 0:
                break
            if r.processed < r.target and r.rid not in chosen:
                chunk = min(r.target - r.processed, budget)
                if not self._alloc(r, r.processed + chunk):
                    continue
                out.append((r, chunk))
                chosen.add(r.rid)
                budget -= chunk
        # 3. admissions
        while waiting and budget > 0 and len(running) < self.config.max_num_seqs:
            r = waiting[0]
            if r.arrival_s > self.now:
                break
            chunk = min(r.target - r.processed, budget)
            if not self._alloc(r, r.processed + chunk):
                break
            waiting.popleft()
            running.append(r)
            out.append((r, chunk))
            chosen.add(r.rid)
            budget -= chunk
        return out

    def _preempt(self, r: SimRequest, waiting: deque) -> None:
        self.stats.preemptions += 1
        self.stats.recomputed_tokens += r.processed
        self._free(r)
        r.processed = 0
        r.target = r.prompt_len + r.generated
        r.recompute = True
        waiting.appendleft(r)

    # ---- the run ---------------------------------------------------------------------------------
    def run(self, requests: Sequence[TraceRequest]) -> SimStats:
        pending = deque(sorted(requests, key=lambda q: q.arrival_s))
        waiting: deque = deque()
        running: list[SimRequest] = []
        cap_tokens = self.cap_blocks * BLOCK_TOKENS
        while pending or waiting or running:
            while pending and pending[0].arrival_s <= self.now:
                q = pending.popleft()
                if _blocks(q.prompt_tokens + q.output_tokens) * BLOCK_TOKENS > cap_tokens:
                    self.stats.skipped.append(q.request_id)
                    continue
                waiting.append(SimRequest(q.request_id, q.arrival_s, q.prompt_tokens, q.output_tokens))
            if not running and not waiting:
                if pending:
                    self.now = max(self.now, pending[0].arrival_s)
                continue
            batch = self.schedule(running, waiting)
            if not batch:
                if pending and not running:
                    self.now = max(self.now, pending[0].arrival_s)
                    continue
                raise RuntimeError("scheduler made no progress")  # pragma: no cover
            self._execute(batch, running)
        self.stats.end_s = self.now
        return self.stats

    def _execute(self, batch: list[tuple[SimRequest, int]], running: list[SimRequest]) -> None:
        n = len(batch)
        ctx = np.fromiter((r.processed for r, _ in batch), dtype=np.int64, count=n)
        new = np.fromiter((k for _, k in batch), dtype=np.int64, count=n)
        steps = StepBatch(np.zeros(n, dtype=np.int64), ctx, new, np.full(1, np.nan))
        duration = float(self.predictor.predict_steps(self.dep, steps).duration_s[0])
        start, end = self.now, self.now + duration
        seqs = [ScheduledSeq(r.rid, r.prompt_len, r.processed, k, r.recompute) for r, k in batch]
        self.sink.on_step(start, end, seqs)
        self.now = end
        st = self.stats
        st.steps += 1
        st.busy_s += duration
        st.max_running = max(st.max_running, len(running))
        finished = []
        for r, k in batch:
            was_prefill = r.processed < r.target
            r.processed += k
            if was_prefill:
                st.prefill_tokens += k
                if r.processed >= r.target:  # the last prefill chunk yields a token
                    r.generated += 1
                    r.recompute = False
            else:
                st.decode_tokens += 1
                r.generated += 1
                r.target = r.processed  # decodes extend what the KV cache holds
            if r.generated >= r.output_len:
                finished.append(r)
        for r in finished:
            running.remove(r)
            self._free(r)
            r.finish_s = end
            st.finished += 1
            self.sink.on_finished(r.rid, r.generated, end, r.prompt_len)
