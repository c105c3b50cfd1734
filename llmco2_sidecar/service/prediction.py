"""Step prediction as a plain function: the predictor's energy, prefill energy and duration per step
and each request slice's share of its step, for the steps of several engines of one deployment
in ONE call (the pipeline, the identity check and trace replay call it)."""

from __future__ import annotations

import numpy as np

from ..workload import StepBatch
from .attribution import PredictionError
from .ingest import AcceptedSteps


def predict_steps(predictor, dep, parts: list[AcceptedSteps]) -> list:
    """Predict the steps of several engines of one deployment in ONE call; split per engine:
    (energy_j [S], prefill_energy_j [S], duration_s [S], shares [R]) each, or a
    :class:`PredictionError` for a part whose output is not finite. Raises what the predictor raises."""
    if len(parts) == 1:
        st = parts[0]
        count, ctx, new, dur = st.slice_count, st.context_tokens, st.new_tokens, st.end_s - st.start_s
    else:  # only the columns the predictor reads (request ids, phases and prompts stay per part)
        cat = np.concatenate
        count = cat([p.slice_count for p in parts])
        ctx, new = cat([p.context_tokens for p in parts]), cat([p.new_tokens for p in parts])
        dur = cat([p.end_s - p.start_s for p in parts])
    S = int(count.shape[0])
    step_of = np.repeat(np.arange(S, dtype=np.int64), count)
    dur = np.where(dur > 0, dur, np.nan)
    sb = StepBatch(step_of, ctx, new, dur)
    energy, prefill, duration, shares = predict_step_batch(predictor, dep, sb)
    R = int(count.sum())
    if energy.shape != (S,) or prefill.shape != (S,) or duration.shape != (S,) or shares.shape != (R,):
        raise PredictionError(f"predictor returned shapes {energy.shape}/{prefill.shape}/{duration.shape} "
                              f"for {S} steps")
    out: list = []
    s0 = r0 = 0
    for p in parts:
        s1, r1 = s0 + p.n_steps, r0 + int(p.slice_count.sum())
        e, pf, d, sh = energy[s0:s1], prefill[s0:s1], duration[s0:s1], shares[r0:r1]
        bad = ~(np.isfinite(e) & np.isfinite(pf) & np.isfinite(d))
        if bad.any() or not np.isfinite(sh).all():
            out.append(PredictionError(f"predictor returned non-finite energy for {int(bad.sum())} of {p.n_steps} steps"))
        else:
            out.append((e, pf, d, sh))
        s0, r0 = s1, r1
    return out


def predict_step_batch(predictor, dep, sb: StepBatch) -> tuple:
    """One predictor call over columnar steps: (energy_j [S], prefill_energy_j [S], duration_s [S],
    shares [R]) as float64 (trace replay calls this with its simulated steps)."""
    from ..graph import request_shares

    pred = predictor.predict_steps(dep, sb)
    shares = request_shares(dep, sb)
    return (np.asarray(pred.energy_j, dtype=np.float64), np.asarray(pred.prefill_energy_j, dtype=np.float64),
            np.asarray(pred.duration_s, dtype=np.float64), shares)


def _concat(parts: list[AcceptedSteps]) -> AcceptedSteps:
    if len(parts) == 1:
        return parts[0]
    rids: list = []
    for p in parts:
        rids.extend(p.request_id)
    cat = np.concatenate
    return AcceptedSteps(step_id=cat([p.step_id for p in parts]), start_s=cat([p.start_s for p in parts]),
                         end_s=cat([p.end_s for p in parts]), slice_count=cat([p.slice_count for p in parts]),
                         request_id=rids, phase=cat([p.phase for p in parts]),
                         new_tokens=cat([p.new_tokens for p in parts]),
                         context_tokens=cat([p.context_tokens for p in parts]),
                         prompt_tokens=cat([p.prompt_tokens for p in parts]),
                         distinct=set().union(*(p.distinct for p in parts))
                         if all(p.distinct is not None for p in parts) else None)
