"""The simulated engine's settings and the records it yields (:mod:`llmco2_sidecar.sim.engine`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..schedule import BLOCK_TOKENS
from ..workload import StepBatch

DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
_MAX_RUN = 512  # steps computed together at most
POLICIES = ("vllm", "sarathi")


@dataclass(frozen=True)
class EngineConfig:
    """Scheduler knobs (vLLM names). Defaults, stated: vLLM v1's ``max_num_seqs`` 256 and
    ``max_num_batched_tokens`` 8192 (its OpenAI server defaults on data-centre GPUs), chunked prefill
    on; ``kv_capacity_tokens`` from the deployment (:func:`llmco2_sidecar.schedule.kv_capacity_tokens`:
    90% of GPU memory minus weights and a 5% activation reserve, in 16-token blocks)."""

    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
    chunked_prefill: bool = True
    kv_capacity_tokens: int | None = None
    policy: str = "vllm"  # "vllm": running requests in admission order; "sarathi": their decodes first

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise InputError("scheduler", f"unknown scheduling policy {self.policy!r}", ", ".join(POLICIES))
        if not isinstance(self.max_num_seqs, (int, np.integer)) or self.max_num_seqs < 1:
            raise InputError("max-num-seqs", f"must be a positive integer, got {self.max_num_seqs!r}", ">= 1")
        if not isinstance(self.max_num_batched_tokens, (int, np.integer)) or self.max_num_batched_tokens < 1:
            raise InputError("max-num-batched-tokens", f"must be a positive integer, got {self.max_num_batched_tokens!r}",
                             ">= 1")
        if self.kv_capacity_tokens is not None and self.kv_capacity_tokens < BLOCK_TOKENS:
            raise InputError("kv-capacity-tokens", f"must hold at least one {BLOCK_TOKENS}-token block",
                             f">= {BLOCK_TOKENS}")


class Req:
    """One request in the engine (mutable; internal)."""

    __slots__ = ("rid", "arrival", "prompt", "output", "target", "processed", "generated", "blocks", "first_s",
                 "finish_s", "preemptions", "slot", "recompute")

    def __init__(self, rid: str, arrival: float, prompt: int, output: int):
        self.rid, self.arrival, self.prompt, self.output = rid, arrival, prompt, output
        self.target = prompt  # tokens to prefill: the prompt (+ generated ones after a preemption)
        self.processed = 0  # tokens in the KV cache
        self.generated = 0
        self.blocks = 0
        self.first_s = math.nan
        self.finish_s = math.nan
        self.preemptions = 0
        self.slot = -1
        self.recompute = False  # re-prefilling after a preemption


@dataclass
class StepChunk:
    """Consecutive steps, columnar. Per step [S]: ``start_s``, ``end_s``; per slice [R]: ``step_of``,
    ``slot`` (the request's accounting slot), ``context_tokens``, ``new_tokens``, ``is_prefill``.
    ``finished``: requests whose last step is in this chunk (their slots are reused only after the
    chunk has been accounted)."""

    start_s: np.ndarray
    end_s: np.ndarray
    step_of: np.ndarray
    slot: np.ndarray
    context_tokens: np.ndarray
    new_tokens: np.ndarray
    is_prefill: np.ndarray
    finished: list
    recompute: np.ndarray | None = None  # bool [R]: a prefill slice recomputing after a preemption

    @property
    def n_steps(self) -> int:
        return int(self.start_s.shape[0])

    def step_batch(self) -> StepBatch:
        return StepBatch(self.step_of, self.context_tokens, self.new_tokens, self.end_s - self.start_s)


@dataclass
class EngineStats:
    steps: int = 0
    finished: int = 0
    rejected: int = 0
    preemptions: int = 0
    recomputed_tokens: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    busy_s: float = 0.0
    end_s: float = 0.0
    max_running: int = 0
    max_waiting: int = 0
    runs: int = 0  # decode runs computed together
    truncated: int = 0  # outputs cut at the model's context (vLLM stops a request there: finish "length")
    rejected_ids: list = field(default_factory=list)  # the first 100

    @property
    def skipped(self) -> list:
        """Ids of the requests that can never fit the KV cache (the first 100)."""
        return [rid for rid, _ in self.rejected_ids]
