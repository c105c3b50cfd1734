"""The accounting windows' one-window fast path (every step of a micro-batch in one window: whole
arrays) gives the window exactly what the masked sums of the general path give it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from llmco2_sidecar.service.windows import WindowsMixin


class _Host(WindowsMixin):
    def __init__(self, window_s):
        self.config = SimpleNamespace(log_windows=True, window_s=window_s)
        self.calibrating = False
        self._windows = {}
        self.closed = []

    def _close_window(self, stream, acc, w):
        self.closed.append(w)
        return None


def _energy(rng, S, R):
    names = ("slice_total_j",)
    e = {n: rng.random(R) * 10 for n in names}
    for n in ("busy_host_j", "gap_attributed_j", "step_total_j", "gpu_j", "idle_j", "duration_s", "gap_s",
              "idle_gpu_s"):
        e[n] = rng.random(S) * np.float64(3.7)
    return SimpleNamespace(**e)


def _expected(wall_start, wall_end, e, step_of, window_s, n_gpus):
    """The general path's formulas (boolean masks), window by window."""
    widx = np.floor(wall_end / window_s).astype(np.int64)
    slice_tot = np.bincount(step_of, weights=e.slice_total_j, minlength=wall_end.shape[0])
    out = {}
    for w in np.unique(widx):
        sel = widx == w
        out[int(w)] = (int(sel.sum()), float(e.gpu_j[sel].sum()), float((e.busy_host_j + e.gap_attributed_j)[sel].sum()),
                       float(e.idle_j[sel].sum()), float(slice_tot[sel].sum()),
                       float(((e.duration_s[sel] + e.gap_s[sel]) * n_gpus).sum()), float(e.idle_gpu_s[sel].sum()),
                       float(e.step_total_j[sel].sum()),
                       float(wall_start[sel].min()), float(wall_end[sel].max()))
    return out


def _fields(w):
    return (w.steps, w.gpu_j, w.serving_j, w.idle_j, w.requests_j, w.gpu_s, w.idle_gpu_s, w.predicted_j, w.first_wall_s,
            w.last_wall_s)


def test_one_window_and_several_windows_match_the_masked_sums_exactly():
    rng = np.random.default_rng(11)
    acc = SimpleNamespace(n_gpus=4)
    stream = SimpleNamespace(stream_id="e")
    for S, t0, span in ((1, 100.2, 0.01), (37, 100.0, 5.0), (300, 0.3, 9.0), (50, 7.0, 25.0)):  # the last: 3 windows
        counts = rng.integers(1, 9, S)
        step_of = np.repeat(np.arange(S), counts)
        wall_start = np.sort(rng.random(S)) * span + t0
        wall_end = wall_start + 0.005
        e = _energy(rng, S, step_of.shape[0])
        host = _Host(window_s=10.0)
        host._windows_add(stream, acc, wall_start, wall_end, e, step_of, np.arange(step_of.shape[0]))
        exp = _expected(wall_start, wall_end, e, step_of, 10.0, acc.n_gpus)
        got = {w.index: _fields(w) for w in [*host.closed, host._windows["e"]]}
        assert got == exp
