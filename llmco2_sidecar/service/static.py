"""Energy of a static batch (an engine without continuous batching): prefill of every request
together, then decode steps until each request has its output. A plain function of the predictor
(the pipeline and trace replay call it)."""

from __future__ import annotations

import numpy as np

from ..workload import StepBatch
from .attribution import PredictionError, StepEnergy, attribute
from .records import Accounting


def static_batch_energy(predictor, dep, acc: Accounting, prompt_tokens, output_tokens,
                        observed_s: float) -> tuple[dict[str, np.ndarray], np.ndarray, StepEnergy]:
    """Per request sums ``prefill_j``, ``decode_j``, ``serving_j``, ``gpu_s`` (float64 [B]), the steps of
    each request (int [B]) and the per-slice energy. ``observed_s`` > 0 scales the predicted step
    durations to the batch's observed wall time."""
    prompt = np.asarray(prompt_tokens, dtype=np.int64)
    out = np.asarray(output_tokens, dtype=np.int64)
    B = prompt.shape[0]
    T = int(out.max())
    # step k (0 = prefill) holds request r while k < out[r]
    k = np.arange(T)
    alive = k[:, None] < out[None, :]  # [T, B]
    step_of, req = np.nonzero(alive)
    ctx = np.where(step_of == 0, 0, prompt[req] + step_of - 1)
    new = np.where(step_of == 0, prompt[req], 1)
    sb = StepBatch(step_of.astype(np.int64), ctx.astype(np.int64), new.astype(np.int64), np.full(T, np.nan))
    pred = predictor.predict_steps(dep, sb)
    if observed_s > 0 and float(np.sum(pred.duration_s)) > 0:
        scale = observed_s / float(np.sum(pred.duration_s))
        sb = StepBatch(sb.request_step, sb.context_tokens, sb.new_tokens, np.asarray(pred.duration_s) * scale)
        pred = predictor.predict_steps(dep, sb)
    from ..graph import request_shares

    shares = request_shares(dep, sb)
    e = attribute(sb.request_step, shares, step_of == 0, np.ones(T, dtype=bool), np.asarray(pred.energy_j, float),
                  np.asarray(pred.prefill_energy_j, float), np.asarray(pred.duration_s, float), np.zeros(T),
                  acc.idle_power_w, acc.host_busy_w, acc.formation_j, acc.n_gpus)
    if not np.isfinite(e.slice_total_j).all():
        raise PredictionError("predictor returned non-finite energy for the static batch")
    sums = {name: np.bincount(req, weights=getattr(e, name), minlength=B)
            for name in ("prefill_j", "decode_j", "serving_j", "gpu_s")}
    return sums, alive.sum(axis=0), e
