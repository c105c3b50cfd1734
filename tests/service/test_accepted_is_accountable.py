"""Whatever ingest accepts, the pipeline can account (issue 13 item 1): steps drawn up to ingest's
own limits go through the pipeline's prediction and attribution and come out finite, with the
shipped predictor and the analytic one. What the pipeline cannot take is refused in the Ack."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar_testkit import identity, make_config, steps_message

from llmco2_sidecar.service import ingest as ing
from llmco2_sidecar.service.attribution import attribute, idle_gaps
from llmco2_sidecar.service.core import make_predictor
from llmco2_sidecar.service.prediction import predict_steps
from llmco2_sidecar.service.records import make_accounting

_PREDICTORS = {}


def _predictor(name):
    if name not in _PREDICTORS:
        _PREDICTORS[name] = make_predictor(name)
    return _PREDICTORS[name]


slice_ = st.tuples(st.sampled_from([1, 2, 17, 4096, ing.MAX_NEW_TOKENS]),
                   st.sampled_from([0, 1, 8191, 1 << 20, ing.MAX_CONTEXT_TOKENS]))
step = st.tuples(st.sampled_from([0.0, 1e-6, 0.02, ing.MAX_STEP_DURATION_S - 1.0]),
                 st.lists(slice_, min_size=1, max_size=4))


@pytest.mark.parametrize("predictor", ["roofline", "default"])
@settings(max_examples=15, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=4))
def test_every_accepted_step_is_accountable(tmp_path_factory, predictor, steps):
    p = _predictor(predictor)
    stream = ing.open_stream(identity("e").identity, {})
    t, rows = 0.0, []
    for i, (dur, slices) in enumerate(steps):
        rows.append((i + 1, t, t + dur, [(f"r{i}-{k}", new, ctx, min(ctx + new, ing.MAX_CONTEXT_TOKENS)) for k, (new, ctx) in enumerate(slices)]))
        t += dur
    res = ing.ingest(stream, steps_message(1, rows).events)
    assert res.ack.steps_rejected == 0, list(res.ack.rejections)
    st_ = res.steps
    (out,) = predict_steps(p, stream.deployment, [st_])
    assert not isinstance(out, BaseException), out
    energy, prefill, duration, shares = out
    acc = make_accounting(make_config(tmp_path_factory.getbasetemp()), stream.deployment)
    step_of = np.repeat(np.arange(st_.n_steps), st_.slice_count)
    e = attribute(step_of, shares, st_.phase != ing.PHASE_DECODE,
                  np.bincount(step_of, weights=st_.context_tokens > 0, minlength=st_.n_steps) > 0,
                  energy, prefill, duration, idle_gaps(st_.start_s, st_.end_s, np.inf), acc.idle_power_w,
                  acc.host_busy_w, acc.formation_j, acc.n_gpus)
    assert np.isfinite(e.slice_total_j).all() and (e.slice_total_j >= 0).all()
