"""Attribution invariants: shares sum to the step; requests + unattributed idle = window total."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmco2_sidecar.service.attribution import attribute, idle_gaps


def test_idle_gaps():
    start = np.array([1.0, 2.0, 2.5, 10.0])
    end = np.array([1.5, 3.0, 2.8, 11.0])
    gaps = idle_gaps(start, end, 0.5)
    assert gaps.tolist() == pytest.approx([0.5, 0.5, 0.0, 7.0])  # overlapping step: no gap
    assert idle_gaps(start[:1], end[:1], np.inf).tolist() == [0.0]  # first step ever: no gap
    # no step before these: no gap before the first, the gaps between them still count
    assert idle_gaps(start, end, np.inf).tolist() == pytest.approx([0.0, 0.5, 0.0, 7.0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 600)), min_size=1, max_size=12),
                min_size=1, max_size=20),
       st.floats(0, 500), st.floats(0, 200), st.floats(0, 5), st.integers(1, 8), st.data())
def test_shares_sum_to_steps_and_windows_balance(steps, idle_w, host_w, form_j, n_gpus, data):
    S = len(steps)
    step_of = np.repeat(np.arange(S), [len(s) for s in steps])
    ctx = np.array([c for s in steps for c, _ in s], dtype=np.int64)
    new = np.array([n for s in steps for _, n in s], dtype=np.int64)
    raw = np.array(data.draw(st.lists(st.floats(0.01, 1.0), min_size=len(new), max_size=len(new))))
    shares = raw / np.bincount(step_of, weights=raw)[step_of]
    gpu_j = np.array(data.draw(st.lists(st.floats(0, 1e4), min_size=S, max_size=S)))
    dur = np.array(data.draw(st.lists(st.floats(1e-4, 2.0), min_size=S, max_size=S)))
    gaps = np.array(data.draw(st.lists(st.floats(0, 100), min_size=S, max_size=S)))
    continuing = np.bincount(step_of, weights=ctx > 0, minlength=S) > 0
    e = attribute(step_of, shares, new > 1, continuing, gpu_j, 0.3 * gpu_j, dur, gaps, idle_w, host_w, form_j, n_gpus)
    per_step = np.bincount(step_of, weights=e.slice_total_j, minlength=S)
    # each step's attributed energy = its GPU energy + host share + the attributed part of its gap
    np.testing.assert_allclose(per_step, gpu_j + e.busy_host_j + e.gap_attributed_j, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.bincount(step_of, weights=e.prefill_j + e.decode_j, minlength=S), gpu_j,
                               rtol=1e-9, atol=1e-9)
    # over the window: requests + unattributed idle = everything spent
    window_total = gpu_j.sum() + host_w * dur.sum() + idle_w * gaps.sum() + form_j * S
    assert e.slice_total_j.sum() + e.idle_j.sum() == pytest.approx(window_total, rel=1e-9, abs=1e-9)
    # idle energy only where the engine had no continuing request
    assert np.all(e.idle_j[continuing] == 0)
    # GPU time held (embodied carbon's measure): requests' share + unattributed = (steps + gaps) x GPUs
    assert np.all(e.gpu_s >= 0) and np.all(e.idle_gpu_s >= 0)
    assert e.gpu_s.sum() + e.idle_gpu_s.sum() == pytest.approx(((dur + gaps) * n_gpus).sum(), rel=1e-9, abs=1e-9)
    assert np.all(e.idle_gpu_s[continuing] == 0)
    np.testing.assert_allclose(np.bincount(step_of, weights=e.gpu_s, minlength=S),
                               np.where(continuing, dur + gaps, dur) * n_gpus, rtol=1e-9, atol=1e-9)
