"""The paper's batch as engine steps: prefill (chunked when a token budget is set), then decode steps
with growing context, with vLLM-style preemption by recomputation when the KV cache does not fit.

KV capacity (stated defaults, as vLLM): ``gpu_memory_utilization`` 0.9 of the replica's GPU memory,
minus the weights, minus an activation reserve of 5% of GPU memory, in 16-token blocks. When a decode
step needs a block and none is free, the most recently admitted running request is preempted: its
KV cache is dropped and it is recomputed later as a prefill of its prompt plus the tokens it had
generated. A batch whose single request cannot fit is rejected with an :class:`InputError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .predictor.api import Deployment
from .workload import StepBatch

GPU_MEMORY_UTILIZATION = 0.9
ACTIVATION_RESERVE_FRACTION = 0.05
BLOCK_TOKENS = 16

PHASE_PREFILL, PHASE_DECODE, PHASE_MIXED = 0, 1, 2


@dataclass
class BatchSchedule:
    """Steps of one batch and how they came about.

    Attributes:
        steps: the columnar engine steps.
        phase: int8 [S], 0 prefill only, 1 decode only, 2 both.
        kv_capacity_tokens: KV-cache capacity of the replica in tokens.
        kv_fits: whether the whole batch's KV cache fits at once.
        preemptions: requests preempted (each recomputed later).
        recomputed_tokens: prefill tokens computed again after preemptions.
    """

    steps: StepBatch
    phase: np.ndarray
    kv_capacity_tokens: int
    kv_fits: bool
    preemptions: int = 0
    recomputed_tokens: int = 0


def kv_capacity_tokens(dep: Deployment) -> int:
    """Tokens of KV cache the replica can hold (all layers; PP stages each hold their layers).

    When nothing is left for the KV cache the :class:`InputError` says what is short: the memory the
    GPUs offer at the configured utilisation, what the weights and the activation reserve take, and
    how many GB the KV cache lacks for even one block per layer.
    """
    m, gpu, n = dep.model, dep.gpu, dep.n_gpus
    offered = gpu.memory_bytes * n * GPU_MEMORY_UTILIZATION
    reserve = gpu.memory_bytes * n * ACTIVATION_RESERVE_FRACTION
    usable = offered - reserve - m.weight_bytes
    # MLA's latent is shared by all heads, so every tensor-parallel GPU caches all of it
    per_token = m.kv_bytes_per_token * (dep.parallel.tp if m.kv_replicated_over_tp else 1)
    min_kv = per_token * BLOCK_TOKENS
    if usable < min_kv:
        short = min_kv - usable
        raise InputError(
            "gpu",
            f"{m.name} does not fit on {n} x {gpu.gpu_id}: at gpu_memory_utilization {GPU_MEMORY_UTILIZATION:g} "
            f"they offer {offered / 1e9:.1f} GB; the weights take {m.weight_bytes / 1e9:.1f} GB and the activation "
            f"reserve {reserve / 1e9:.1f} GB, leaving no room for the KV cache ({short / 1e9:.1f} GB short)",
            "more GPUs (--tp/--pp) or a GPU with more memory",
        )
    return int(usable // per_token) // BLOCK_TOKENS * BLOCK_TOKENS


def _blocks(tokens: int) -> int:
    return -(-tokens // BLOCK_TOKENS)


def batch_steps(dep: Deployment, batch: int, prompt_len: int, output_len: int,
                max_batched_tokens: int | None = None, kv_capacity: int | None = None) -> BatchSchedule:
    """Engine steps of ``batch`` requests of ``prompt_len`` tokens generating ``output_len`` tokens."""
    cap = kv_capacity_tokens(dep) if kv_capacity is None else int(kv_capacity)
    peak_one = prompt_len + output_len - 1
    if _blocks(peak_one) * BLOCK_TOKENS > cap:
        raise InputError("prompt-len", f"one request needs {peak_one} tokens of KV cache, the replica holds {cap} "
                         f"({cap * dep.model.kv_bytes_per_token / 1e9:.2f} GB of KV cache room at "
                         f"gpu_memory_utilization {GPU_MEMORY_UTILIZATION:g})",
                         f"prompt-len + output-len <= {cap + 1}")
    fits = batch * _blocks(peak_one) * BLOCK_TOKENS <= cap
    if fits and max_batched_tokens is None:
        return _closed_form(batch, prompt_len, output_len, cap)
    return _simulate(batch, prompt_len, output_len, max_batched_tokens, cap, fits)


def _closed_form(B: int, P: int, T: int, cap: int) -> BatchSchedule:
    S = T  # one prefill step + (T - 1) decode steps
    idx = np.repeat(np.arange(S, dtype=np.int64), B)
    ctx = np.concatenate([np.zeros(B, dtype=np.int64), np.repeat(P + np.arange(T - 1, dtype=np.int64), B)])
    new = np.concatenate([np.full(B, P, dtype=np.int64), np.ones(B * (T - 1), dtype=np.int64)])
    steps = StepBatch(idx, ctx, new, np.full(S, np.nan))
    phase = np.full(S, PHASE_DECODE, dtype=np.int8)
    phase[0] = PHASE_PREFILL
    return BatchSchedule(steps, phase, cap, True)


def _simulate(B: int, P: int, T: int, budget: int | None, cap: int, fits: bool) -> BatchSchedule:
    if budget is not None and budget < 1:  # 0 is not "unlimited" (replay refuses it too): leave the flag out
        raise InputError("max-batched-tokens", f"must be positive, got {budget}", ">= 1")
    budget = budget or 1 << 62
    computed = [0] * B  # tokens in the KV cache
    alloc = [0] * B  # KV blocks held
    generated = [0] * B
    target = [P] * B  # tokens to prefill (prompt + generated, after a preemption)
    waiting = list(range(B))
    running: list[int] = []  # admission order
    cap_blocks = cap // BLOCK_TOKENS
    preemptions = recomputed = 0
    idx: list[int] = []
    ctx: list[int] = []
    new: list[int] = []
    phases: list[int] = []

    def grow(r: int, tokens: int) -> None:
        alloc[r] = max(alloc[r], _blocks(tokens))

    s = 0
    while waiting or running:
        left = budget
        step_slices: dict[int, tuple[int, int]] = {}  # request -> (context, new)
        # 1. decodes of running requests whose prefill is done (preempt the newest when out of blocks)
        for r in list(running):
            if r not in running or computed[r] < target[r] or left < 1:
                continue
            while sum(alloc) - alloc[r] + _blocks(computed[r] + 1) > cap_blocks and running[-1] != r:
                victim = running.pop()
                preemptions += 1
                recomputed += computed[victim]
                alloc[victim] = computed[victim] = 0
                target[victim] = P + generated[victim]
                waiting.insert(0, victim)
                step_slices.pop(victim, None)
            if sum(alloc) - alloc[r] + _blocks(computed[r] + 1) > cap_blocks:
                continue  # r is the newest and still does not fit: it waits
            grow(r, computed[r] + 1)
            step_slices[r] = (computed[r], 1)
            left -= 1
        # 2. chunks of running partial prefills, then admissions while KV and budget allow
        for r in running:
            if computed[r] < target[r] and left > 0:
                chunk = min(target[r] - computed[r], left)
                grow(r, computed[r] + chunk)
                step_slices[r] = (computed[r], chunk)
                left -= chunk
        while waiting and left > 0:
            r = waiting[0]
            if sum(alloc) + _blocks(target[r] + 1) > cap_blocks:
                break
            waiting.pop(0)
            running.append(r)
            chunk = min(target[r] - computed[r], left)
            grow(r, computed[r] + chunk)
            step_slices[r] = (computed[r], chunk)
            left -= chunk
        if not step_slices:  # cannot happen with cap >= one request; guard against a livelock
            raise InputError("batch", "the schedule made no progress (KV cache too small)")
        has_prefill = any(computed[r] < target[r] for r in step_slices)
        has_decode = any(computed[r] >= target[r] for r in step_slices)
        for r, (c, n) in step_slices.items():
            idx.append(s)
            ctx.append(c)
            new.append(n)
            computed[r] = c + n
            if computed[r] >= target[r]:  # prefill complete or decode: one token out
                generated[r] += 1
                if generated[r] >= T:
                    running.remove(r)
                    alloc[r] = 0
        phases.append(PHASE_MIXED if has_prefill and has_decode else PHASE_PREFILL if has_prefill else PHASE_DECODE)
        s += 1
    steps = StepBatch(np.asarray(idx, dtype=np.int64), np.asarray(ctx, dtype=np.int64), np.asarray(new, dtype=np.int64),
                      np.full(s, np.nan))
    return BatchSchedule(steps, np.asarray(phases, dtype=np.int8), cap, fits, preemptions, recomputed)
