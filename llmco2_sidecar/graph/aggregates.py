"""Per-step aggregates of request slices, the linear inputs of every kernel's work formulas
(:mod:`.kernels`): for each step, its prefill slices and its decode slices, sums over the slices of
``(run, T, A, K, n)`` (and ``U``, ``Aw``, ``Kw`` for models with experts or local attention), plus
the steps' context statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..predictor.api import Deployment
from ..workload import StepBatch
from .kernels import extended


@dataclass
class StepAggregates:
    """Per-step aggregates ``[S, 5]`` over (run, T, A, K, n) for the whole step, its prefill slices
    and its decode slices, plus context statistics."""

    step: np.ndarray
    prefill: np.ndarray
    decode: np.ndarray
    mean_context: np.ndarray
    max_context: np.ndarray
    is_prefill: np.ndarray  # bool [R]
    slices: np.ndarray | None = None  # [R, w]: each slice's own aggregates (:func:`slice_aggregates`)


def slice_aggregates(new: np.ndarray, ctx: np.ndarray, model=None) -> np.ndarray:
    """Per request slice: ``[R, 5]`` over (run, T, A, K, n), or ``[R, 8]`` with ``U`` (0 here: it is a
    per-step figure), ``Aw`` and ``Kw`` for models whose kernels need them (:func:`.kernels.extended`)."""
    ext = model is not None and extended(model)
    out = np.empty((new.shape[0], 8 if ext else 5))
    out[:, 0] = 1.0
    out[:, 1] = new
    out[:, 2] = new * ctx + new * (new + 1) / 2
    out[:, 3] = ctx + new
    out[:, 4] = 1.0
    if ext:
        W = float(model.local_window or 1)
        end = ctx + new
        if model.local_attention == "chunked":
            def s_(p):  # sum over positions 1..p of the keys a query sees in its own chunk
                q, r = np.floor_divide(p, W), np.mod(p, W)
                return q * W * (W + 1) / 2 + r * (r + 1) / 2
            aw = s_(end) - s_(ctx)
            kw = end - W * np.floor_divide(ctx, W)
        else:  # sliding: a query at position p (1-based) sees min(p, W) keys
            def s_(p):
                lo = np.minimum(p, W)
                return lo * (lo + 1) / 2 + (p - lo) * W
            aw = s_(end) - s_(ctx)
            kw = np.minimum(end, W + new - 1)
        out[:, 5] = 0.0
        out[:, 6] = aw
        out[:, 7] = kw
    return out


def aggregates(steps: StepBatch, dep: Deployment | None = None) -> StepAggregates:
    """Per-step aggregates; with ``dep`` of a MoE or local-attention model, the extended columns.

    The last result is kept for the same ``steps`` object (and model, parallelism): a prediction
    call featurises a batch and then splits it into request shares (:func:`.shares.request_shares`),
    both from these aggregates. A batch's arrays are not changed in place once built."""
    model = dep.model if dep is not None else None
    par = dep.parallel if dep is not None else None
    last = _LAST_AGGREGATES[0]
    if (last is not None and last[0] is steps and last[1] is steps.request_step and last[2] is steps.new_tokens
            and last[3] is steps.context_tokens and last[4] is model and last[5] == par):
        return last[6]
    out = _aggregates(steps, dep)
    _LAST_AGGREGATES[0] = (steps, steps.request_step, steps.new_tokens, steps.context_tokens, model, par, out)
    return out


_LAST_AGGREGATES: list = [None]


def _aggregates(steps: StepBatch, dep: Deployment | None) -> StepAggregates:
    S = steps.n_steps
    new = steps.new_tokens.astype(np.float64)
    ctx = steps.context_tokens.astype(np.float64)
    idx = steps.request_step
    is_prefill = (steps.new_tokens > 1) | (steps.context_tokens == 0)
    model = dep.model if dep is not None else None
    per = slice_aggregates(new, ctx, model)
    width = per.shape[1]
    cols = [j for j in range(1, width) if j != 5]  # run (0) and U (5) follow from the sums
    C = len(cols)
    R = per.shape[0]
    d = idx[1:] - idx[:-1] if R else None
    if R and idx[0] == 0 and idx[-1] == S - 1 and (R == 1 or (d.min() >= 0 and d.max() <= 1)):
        # slices in step order, every step with one at least (what the sidecar and the simulator
        # send): contiguous segment sums of the whole step and of its prefill / decode slices (the
        # other phase's rows zeroed: x * 0 = 0, x - x = 0). The summed columns are whole numbers
        # (token counts and their products), so any summation order gives the same floats.
        starts = np.concatenate(([0], np.flatnonzero(d) + 1))
        a = np.empty((3, C, R))
        a[0] = per[:, cols].T
        np.multiply(a[0], is_prefill, out=a[1])
        np.subtract(a[0], a[1], out=a[2])
        out = np.zeros((3, S, width))
        out[:, :, cols] = np.add.reduceat(a, starts, axis=2).transpose(0, 2, 1)
        max_ctx = np.maximum.reduceat(ctx + new, starts)
    else:
        # every summed column of the whole step and of its prefill / decode slices in ONE bincount:
        # bin (block, step, column) with block 0 the whole step, 1 its prefill slices, 2 its decode slices
        w = per[:, cols]
        ar = np.arange(C)
        phase = np.where(is_prefill, S, 2 * S)  # the prefill / decode block's first step bin
        bins = np.concatenate([((idx * C)[:, None] + ar).ravel(), (((phase + idx) * C)[:, None] + ar).ravel()])
        sums = np.bincount(bins, weights=np.concatenate([w.ravel(), w.ravel()]), minlength=3 * S * C).reshape(3, S, C)
        out = np.zeros((3, S, width))
        out[:, :, cols] = sums
        max_ctx = np.zeros(S)
        if R:
            np.maximum.at(max_ctx, idx, ctx + new)
    out[:, :, 0] = out[:, :, 4] > 0
    if width > 5 and model.is_moe:
        from .moe import touched_share

        for b in range(3):
            out[b, :, 5] = touched_share(out[b, :, 1], model, dep.parallel)
    # slices per step and their KV tokens (column n and K of the whole step: the same sums)
    n = np.maximum(out[0, :, 4], 1.0)
    return StepAggregates(out[0], out[1], out[2], out[0, :, 3] / n, max_ctx, is_prefill, per)
