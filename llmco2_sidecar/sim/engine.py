"""A continuous-batching engine simulated over time, for replay and what-if (vLLM v1 / Sarathi-Serve).

Each step, in vLLM v1's scheduler order:

1. the running requests, oldest first, get their next tokens: one decode token, or the next chunk
   of a prefill (``min(left, budget left)``); when the KV cache has no block for them, the most
   recently admitted running request is preempted (its KV blocks freed, its tokens recomputed later
   as one prefill of prompt + generated tokens); a step that preempted admits no one;
2. waiting requests (first come, first served) are admitted while fewer than ``max_num_seqs`` run,
   the step's token budget (``max_num_batched_tokens``, Sarathi's chunk size) is not spent and KV
   blocks can be allocated for their first chunk. Without chunked prefill a prompt is scheduled
   whole or not at all.

A step's wall time is the predictor's (:func:`step_durations`: the same duration model the
predictor fills a missing duration with), so simulated time advances as the modelled engine would;
an idle engine jumps to the next arrival. Requests that can never fit (their whole KV cache exceeds
the replica's, or, without chunked prefill, their prompt exceeds the token budget) are rejected on
arrival, and so is a prompt that fills the model's context (``max_position_embeddings``: vLLM
refuses it); an output that would run past the context stops there, as vLLM stops it (``length``).

Speed: a step of only decodes, with no admission possible before the next arrival, repeats with
every context one token longer until a request finishes, a KV block runs out or a request arrives;
such runs of steps are computed together (one duration call for many steps, no Python loop per
step). Results are identical to stepping one at a time (tested).

The simulator yields :class:`StepChunk` s of columnar steps (``request_step``, context and new
tokens, per-slice request slots) for the accounting, which uses the sidecar's own code
(:mod:`llmco2_sidecar.energy.accounting`). Deterministic: no clock, no randomness.
"""

from __future__ import annotations

from collections import deque
from operator import attrgetter
from typing import Iterable, Iterator

import numpy as np

from ..schedule import BLOCK_TOKENS, kv_capacity_tokens
from ..workload import StepBatch
from .trace import TraceRequest

from .engine_types import (DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS, POLICIES, _MAX_RUN,  # noqa: F401
                           EngineConfig, EngineStats, Req, StepChunk)


_PROCESSED, _TARGET, _SLOT, _RECOMPUTE = (attrgetter("processed"), attrgetter("target"), attrgetter("slot"),
                                          attrgetter("recompute"))
_OUTPUT, _GENERATED, _BLOCKS = attrgetter("output"), attrgetter("generated"), attrgetter("blocks")


def step_durations(predictor, dep, sb: StepBatch) -> np.ndarray:
    """Wall time of each step [S] as the predictor models it when none is observed."""
    fn = getattr(predictor, "predict_duration_s", None)
    if fn is not None:
        return np.asarray(fn(dep, sb), dtype=np.float64)
    return np.asarray(predictor.predict_steps(dep, sb).duration_s, dtype=np.float64)


class _Buffer:
    """Columns of the chunk being built."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.start: list = []
        self.end: list = []
        self.counts: list = []
        self.slot: list = []
        self.ctx: list = []
        self.new: list = []
        self.pre: list = []
        self.rec: list = []
        self.finished: list = []
        self.n_steps = 0

    def chunk(self) -> StepChunk:
        cat = np.concatenate
        counts = cat(self.counts).astype(np.int64)
        return StepChunk(start_s=cat(self.start).astype(np.float64), end_s=cat(self.end).astype(np.float64),
                         step_of=np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts),
                         slot=cat(self.slot).astype(np.int64), context_tokens=cat(self.ctx).astype(np.int64),
                         new_tokens=cat(self.new).astype(np.int64), is_prefill=cat(self.pre).astype(bool),
                         finished=self.finished, recompute=cat(self.rec).astype(bool))


class EngineSimulator:
    """Simulate ``dep`` serving a stream of :class:`TraceRequest` (see module docstring)."""

    def __init__(self, dep, predictor, config: EngineConfig | None = None, chunk_steps: int = 2048,
                 run_steps: bool = True):
        self.dep = dep
        self.predictor = predictor
        self.config = config or EngineConfig()
        cap = self.config.kv_capacity_tokens or kv_capacity_tokens(dep)
        self.cap_blocks = cap // BLOCK_TOKENS
        self.kv_capacity_tokens = self.cap_blocks * BLOCK_TOKENS
        self.max_len = int(dep.model.max_position_embeddings)  # the model's context, prompt + output
        self.chunk_steps = int(chunk_steps)
        self.run_steps = run_steps  # compute runs of decode steps together (False: one at a time, for tests)
        self.stats = EngineStats()
        self.now = 0.0
        self._free_blocks = self.cap_blocks
        self._free_slots: list[int] = []
        self._n_slots = 0
        self.slot_req: dict[int, Req] = {}  # the request holding each slot (for callers that need ids)

    # ---- slots -------------------------------------------------------------------------------
    def _slot(self) -> int:
        if self._free_slots:
            return self._free_slots.pop()
        self._n_slots += 1
        return self._n_slots - 1

    @property
    def n_slots(self) -> int:
        return self._n_slots

    # ---- admission ---------------------------------------------------------------------------
    def _rejects(self, q: TraceRequest) -> str | None:
        if q.prompt_tokens >= self.max_len:
            return "context"
        if -(-(q.prompt_tokens + min(q.output_tokens, self.max_len - q.prompt_tokens)) // BLOCK_TOKENS) > self.cap_blocks:
            return "kv"
        if not self.config.chunked_prefill and q.prompt_tokens > self.config.max_num_batched_tokens:
            return "budget"
        return None

    # ---- one step's composition -----------------------------------------------------------------
    def _schedule(self, running: list, waiting: deque) -> tuple[list, bool]:
        cfg = self.config
        budget = cfg.max_num_batched_tokens
        out: list = []
        preempted = False
        if cfg.policy == "sarathi":  # Sarathi-Serve: decodes first, then the partial prefills
            order = [r for r in running if r.processed >= r.target] + [r for r in running if r.processed < r.target]
        else:  # vLLM v1: the running requests in admission order
            order = list(running)
        gone: set = set()
        for r in order:
            if budget <= 0:
                break
            if id(r) in gone:
                continue
            if r.processed < r.target:
                n = min(r.target - r.processed, budget)
                if not cfg.chunked_prefill and n < r.target - r.processed:
                    continue
            else:
                n = 1
            need = -(-(r.processed + n) // BLOCK_TOKENS) - r.blocks
            while need > self._free_blocks:
                victim = running.pop()  # the most recently admitted
                preempted = True
                gone.add(id(victim))
                for j, (q, k) in enumerate(out):
                    if q is victim:
                        del out[j]
                        budget += k
                        break
                self._preempt(victim, waiting)
                if victim is r:
                    break
            else:
                if need > 0:
                    self._free_blocks -= need
                    r.blocks += need
                out.append((r, n))
                budget -= n
                continue
            break  # r itself was preempted: nothing after it can run either
        if not preempted:
            while waiting and budget > 0 and len(running) < cfg.max_num_seqs:
                r = waiting[0]
                n = min(r.target - r.processed, budget)
                if not cfg.chunked_prefill and n < r.target - r.processed:
                    break
                need = -(-(r.processed + n) // BLOCK_TOKENS) - r.blocks
                if need > self._free_blocks:
                    break
                waiting.popleft()
                self._free_blocks -= need
                r.blocks += need
                if r.slot < 0:
                    r.slot = self._slot()
                    self.slot_req[r.slot] = r
                running.append(r)
                out.append((r, n))
                budget -= n
        return out, preempted

    def _preempt(self, r: Req, waiting: deque) -> None:
        self.stats.preemptions += 1
        self.stats.recomputed_tokens += r.processed
        self._free_blocks += r.blocks
        r.blocks = 0
        r.processed = 0
        r.target = r.prompt + r.generated
        r.preemptions += 1
        r.recompute = True
        waiting.appendleft(r)

    # ---- the run -------------------------------------------------------------------------------
    def run(self, requests: Iterable[TraceRequest]) -> Iterator[StepChunk]:
        """Simulate; yield chunks of about ``chunk_steps`` steps (the last one may be shorter)."""
        it = iter(requests)
        nxt = next(it, None)
        waiting: deque = deque()
        running: list[Req] = []
        buf = _Buffer()
        st = self.stats
        last_dur = 0.0
        while True:
            while nxt is not None and nxt.arrival_s <= self.now:
                why = self._rejects(nxt)
                if why is None:
                    out = nxt.output_tokens
                    if nxt.prompt_tokens + out > self.max_len:
                        out = self.max_len - nxt.prompt_tokens
                        st.truncated += 1
                    waiting.append(Req(nxt.request_id, nxt.arrival_s, nxt.prompt_tokens, out))
                else:
                    st.rejected += 1
                    if len(st.rejected_ids) < 100:
                        st.rejected_ids.append((nxt.request_id, why))
                nxt = next(it, None)
            if len(waiting) > st.max_waiting:
                st.max_waiting = len(waiting)
            if not running and not waiting:
                if nxt is None:
                    break
                self.now = max(self.now, nxt.arrival_s)
                continue
            batch, preempted = self._schedule(running, waiting)
            if not batch:  # pragma: no cover - every admitted request fits an empty engine
                raise RuntimeError("the simulated scheduler made no progress")
            if len(running) > st.max_running:
                st.max_running = len(running)
            k = 0
            if (self.run_steps and not preempted and len(batch) == len(running)
                    and all(n == 1 and r.processed >= r.target for r, n in batch)):
                k = self._decode_run(running, waiting, nxt, buf, last_dur)
            if k == 0:
                last_dur = self._one_step(batch, running, buf)
            else:
                last_dur = buf.last_dur
            if buf.n_steps >= self.chunk_steps:
                yield from self._flush(buf)
        if buf.n_steps:
            yield from self._flush(buf)
        st.end_s = self.now

    def _flush(self, buf: _Buffer) -> Iterator[StepChunk]:
        chunk = buf.chunk()
        buf.clear()
        yield chunk
        # accounted: the finished requests' slots may be reused now
        for r in chunk.finished:
            self._free_slots.append(r.slot)

    def _finish(self, r: Req, end: float, running: list, buf: _Buffer) -> None:
        running.remove(r)
        self._free_blocks += r.blocks
        r.blocks = 0
        r.finish_s = end
        self.stats.finished += 1
        buf.finished.append(r)

    def _one_step(self, batch: list, running: list, buf: _Buffer) -> float:
        n = len(batch)
        reqs = [r for r, _ in batch]
        ctx = np.fromiter(map(_PROCESSED, reqs), dtype=np.int64, count=n)
        new = np.fromiter((k for _, k in batch), dtype=np.int64, count=n)
        pre = ctx < np.fromiter(map(_TARGET, reqs), dtype=np.int64, count=n)
        slots = np.fromiter(map(_SLOT, reqs), dtype=np.int64, count=n)
        rec = np.fromiter(map(_RECOMPUTE, reqs), dtype=bool, count=n)
        dur = float(step_durations(self.predictor, self.dep,
                                   StepBatch(np.zeros(n, dtype=np.int64), ctx, new, np.full(1, np.nan)))[0])
        start, end = self.now, self.now + dur
        buf.start.append(np.array([start]))
        buf.end.append(np.array([end]))
        buf.counts.append(np.array([n]))
        buf.slot.append(slots)
        buf.ctx.append(ctx)
        buf.new.append(new)
        buf.pre.append(pre)
        buf.rec.append(rec)
        buf.n_steps += 1
        self.now = end
        st = self.stats
        st.steps += 1
        st.busy_s += dur
        done = []
        for r, k in batch:
            if r.processed < r.target:
                st.prefill_tokens += k
                r.processed += k
                if r.processed >= r.target:  # the last prefill chunk yields a token
                    r.generated += 1
                    r.recompute = False
                    if r.first_s != r.first_s:  # NaN: the first token
                        r.first_s = end
            else:
                st.decode_tokens += 1
                r.processed += 1
                r.generated += 1
                r.target = r.processed
            if r.generated >= r.output:
                done.append(r)
        for r in done:
            self._finish(r, end, running, buf)
        return dur

    def _decode_run(self, running: list, waiting: deque, nxt: TraceRequest | None, buf: _Buffer,
                    last_dur: float) -> int:
        """Steps of only decodes, repeated; returns how many were simulated (0: leave it to
        :meth:`_one_step`). The first step's blocks are allocated already. With no one waiting,
        requests that finish simply leave the run (nothing can be admitted before the next arrival);
        with someone waiting, a finish ends the run (it may let them in)."""
        m = len(running)
        proc = np.fromiter(map(_PROCESSED, running), dtype=np.int64, count=m)
        left = (np.fromiter(map(_OUTPUT, running), dtype=np.int64, count=m)
                - np.fromiter(map(_GENERATED, running), dtype=np.int64, count=m))
        blocks = np.fromiter(map(_BLOCKS, running), dtype=np.int64, count=m)
        span = int(left.min()) if waiting else int(left.max())
        K = min(span, _MAX_RUN, self.chunk_steps - buf.n_steps)  # chunks end where single steps end them
        # an arrival may be admitted (at once, or once a finish makes room): the run stops before it
        arrival_bound = nxt is not None and not waiting
        if arrival_bound and last_dur > 0:
            K = min(K, int((nxt.arrival_s - self.now) / last_dur) + 2)
        if K <= 1:
            return 0
        j = np.arange(K, dtype=np.int64)
        active = left[None, :] > j[:, None]  # [K, m]: request i still runs in step j
        # blocks each request needs after step j: ceil((proc + j + 1) / B); step 0 is allocated. Blocks
        # of requests that finished are counted as still held: a conservative check (the run ends earlier)
        need = -(-(proc[None, :] + np.minimum(j[:, None], left[None, :] - 1) + 1) // BLOCK_TOKENS)
        extra = np.maximum(need - blocks[None, :], 0).sum(axis=1)
        fits = extra <= self._free_blocks
        if not fits.all():
            K = int(np.argmin(fits))  # the first step that does not fit ends the run before it
            if K <= 1:
                return 0
        act = active[:K]
        counts = act.sum(axis=1)
        ctx = (proc[None, :] + j[:K, None])[act]
        step_of = np.repeat(np.arange(K, dtype=np.int64), counts)
        dur = step_durations(self.predictor, self.dep,
                             StepBatch(step_of, ctx, np.ones(ctx.shape[0], dtype=np.int64), np.full(K, np.nan)))
        ends = np.cumsum(np.concatenate(([self.now], dur)))[1:]  # sequential sums: as one step at a time
        starts = np.concatenate(([self.now], ends[:-1]))
        if arrival_bound:
            k = int(np.searchsorted(starts, nxt.arrival_s, side="left"))  # steps starting before it arrives
            if k < K:
                K = k
                if K <= 1:
                    return 0
                n_slices = int(counts[:K].sum())
                act, counts = act[:K], counts[:K]
                ctx, step_of, dur, starts, ends = ctx[:n_slices], step_of[:n_slices], dur[:K], starts[:K], ends[:K]
        slots = np.fromiter(map(_SLOT, running), dtype=np.int64, count=m)
        n = ctx.shape[0]
        buf.start.append(starts)
        buf.end.append(ends)
        buf.counts.append(counts)
        buf.slot.append(np.broadcast_to(slots, (K, m))[act])
        buf.ctx.append(ctx)
        buf.new.append(np.ones(n, dtype=np.int64))
        buf.pre.append(np.zeros(n, dtype=bool))
        buf.rec.append(np.zeros(n, dtype=bool))
        buf.n_steps += K
        buf.last_dur = float(dur[-1])
        st = self.stats
        st.steps += K
        st.runs += 1
        st.decode_tokens += n
        st.busy_s += float(dur.sum())
        self.now = float(ends[-1])
        steps_run = np.minimum(left, K)  # decode steps each request ran
        final_blocks = -(-(proc + steps_run) // BLOCK_TOKENS)
        grow = np.maximum(final_blocks - blocks, 0)
        self._free_blocks -= int(grow.sum())
        done = []
        for i, r in enumerate(running):
            k_i = int(steps_run[i])
            r.processed += k_i
            r.generated += k_i
            r.target = r.processed
            r.blocks += int(grow[i])
            if r.generated >= r.output:
                done.append((k_i, i, r))
        done.sort(key=lambda t: (t[0], t[1]))  # in the order single steps would finish them
        for k_i, _, r in done:
            self._finish(r, float(ends[k_i - 1]), running, buf)
        return K
