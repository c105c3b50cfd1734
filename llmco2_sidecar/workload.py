"""Workload records shared by the graph builder, the predictors, the sidecar and the simulators.

Two units of work exist in the product:

* an **engine step** (what a continuous-batching engine such as vLLM runs in one iteration): a set
  of request slices, each with the tokens already in its KV cache and the tokens computed in this
  step (a prefill chunk has ``new_tokens > 1``, a decode step ``new_tokens == 1``);
* the paper's **batch**: ``batch`` requests of ``prompt_len`` tokens each generating
  ``output_len`` tokens, which a predictor turns into steps with :mod:`llmco2_sidecar.schedule`.

For speed the sidecar hands steps to the predictor in columnar form (:class:`StepBatch`): one flat
array per field over all request slices of many steps, plus the index of the step each slice
belongs to. No per-request Python objects on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Parallelism:
    """Model parallelism of one engine replica. ``dp`` replicas do not share a step, except through
    expert parallelism: ``ep`` > 1 spreads each MoE layer's experts over ``ep`` GPUs (vLLM's
    ``--enable-expert-parallel``: ep = tp x dp), whole experts per GPU instead of TP slices."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "dp", "ep"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(name, f"must be a positive integer, got {value!r}")
        if self.ep > 1 and (self.ep % self.tp or self.ep > self.tp * self.dp):
            raise InputError("ep", f"expert-parallel size {self.ep} with tp={self.tp}, dp={self.dp}",
                             "1, or a multiple of tp up to tp x dp (vLLM: tp x dp)")

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp


@dataclass(frozen=True)
class RequestSlice:
    """One request's part of one engine step."""

    context_tokens: int  # tokens already in the KV cache before this step
    new_tokens: int  # tokens computed in this step (prefill chunk > 1, decode 1)


@dataclass
class StepBatch:
    """Columnar engine steps of one deployment.

    Attributes (shapes: R request slices over all steps, S steps):
        request_step: int64 [R], index in ``0..S-1`` of the step each slice belongs to.
        context_tokens: int64 [R], tokens already in the KV cache before the step.
        new_tokens: int64 [R], tokens computed in the step (>= 1).
        duration_s: float64 [S], observed wall time of each step; NaN where unknown.
    """

    request_step: np.ndarray
    context_tokens: np.ndarray
    new_tokens: np.ndarray
    duration_s: np.ndarray

    @property
    def n_steps(self) -> int:
        return int(self.duration_s.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.new_tokens.shape[0])

    @classmethod
    def from_steps(
        cls,
        steps: Sequence[Iterable[RequestSlice | tuple[int, int]]],
        duration_s: Sequence[float | None] | None = None,
    ) -> "StepBatch":
        """Build from a list of steps, each an iterable of ``RequestSlice`` or ``(context, new)``."""
        idx: list[int] = []
        ctx: list[int] = []
        new: list[int] = []
        for s, step in enumerate(steps):
            for item in step:
                c, n = (item.context_tokens, item.new_tokens) if isinstance(item, RequestSlice) else item
                idx.append(s)
                ctx.append(int(c))
                new.append(int(n))
        if duration_s is None:
            dur = np.full(len(steps), np.nan)
        else:
            dur = np.array([np.nan if d is None else float(d) for d in duration_s], dtype=np.float64)
        batch = cls(
            request_step=np.asarray(idx, dtype=np.int64),
            context_tokens=np.asarray(ctx, dtype=np.int64),
            new_tokens=np.asarray(new, dtype=np.int64),
            duration_s=dur,
        )
        batch.validate()
        return batch

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad field."""
        if not (self.request_step.shape == self.context_tokens.shape == self.new_tokens.shape):
            raise InputError("steps", "request_step, context_tokens and new_tokens differ in length")
        if self.n_slices and (self.new_tokens < 1).any():
            raise InputError("new_tokens", "every request slice computes at least one token", ">= 1")
        if self.n_slices and (self.context_tokens < 0).any():
            raise InputError("context_tokens", "must not be negative", ">= 0")
        if self.n_slices and (
            (self.request_step < 0).any() or (self.request_step >= self.n_steps).any()
        ):
            raise InputError("request_step", "index outside the batch's steps")
        finite = self.duration_s[np.isfinite(self.duration_s)]
        if (finite <= 0).any():
            raise InputError("duration_s", "a step's observed duration must be positive", "> 0 or NaN")

    def steps_tokens(self) -> np.ndarray:
        """Tokens computed per step, int64 [S]."""
        return np.bincount(self.request_step, weights=self.new_tokens, minlength=self.n_steps).astype(np.int64)


@dataclass(frozen=True)
class BatchQuery:
    """The paper's unit: ``batch`` requests of ``prompt_len`` tokens generating ``output_len`` each."""

    model: str
    gpu: str
    batch: int
    prompt_len: int
    output_len: int
    tp: int = 1
    pp: int = 1
    observed_latency_s: float | None = None
    extra: dict = field(default_factory=dict, compare=False)
    ep: int = 1  # expert-parallel size (MoE models); ep > tp spans dp replicas running alike batches
    dp: int = 1

    def __post_init__(self) -> None:
        for name in ("batch", "prompt_len", "output_len", "tp", "pp", "ep", "dp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(name.replace("_", "-"), f"must be a positive integer, got {value!r}", ">= 1")
        if self.observed_latency_s is not None and not (self.observed_latency_s > 0):
            raise InputError("observed-latency-s", f"must be positive, got {self.observed_latency_s!r}", "> 0")
