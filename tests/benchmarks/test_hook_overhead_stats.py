"""The statistics behind benchmarks/hook_overhead.py's throughput ratios, against hand-computed values."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "hook_overhead.py"
_spec = importlib.util.spec_from_file_location("hook_overhead_bench", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_order_adjusted_ratio_removes_the_start_order():
    mu, d, e = math.log(0.99), math.log(1.03), 0.005
    # passes alternate: the switch-off server first in passes 0, 2 (its partner then gains the order's factor)
    logs = [mu + d + e, mu - d + e, mu + d - e, mu - d - e]
    adj = bench._order_adjusted([math.exp(x) for x in logs], [True, False, True, False])
    assert adj["ratio"] == pytest.approx(0.99) and adj["order_factor"] == pytest.approx(1.03)
    half = 4.303 * math.sqrt(4 * e * e / 2 / 4 * (1 / 2 + 1 / 2))  # t(2 dof); residual variance 4e^2 / 2 dof
    assert adj["ci95"] == pytest.approx([math.exp(mu - half), math.exp(mu + half)])
    assert (adj["passes"], adj["dof"]) == (4, 2)
    # the plain mean of the same ratios is pulled by neither order, but its interval carries the order's spread
    m, lo, hi = bench._mean_ci95([math.exp(x) for x in logs])
    assert hi - lo > 3 * (adj["ci95"][1] - adj["ci95"][0])


def test_order_adjusted_needs_two_passes_in_each_order():
    assert bench._order_adjusted([1.0, 0.98, 1.01], [True, False, True]) is None


def test_report_says_the_loop_lag_period_of_its_own_run(tmp_path, monkeypatch):
    """The committed run renders to the committed page byte for byte (its sampler: 0.1 s, unrecorded);
    a run that records the 4 Hz heartbeat's period says 0.25 s."""
    import json
    import sys

    monkeypatch.syspath_prepend(str(_PATH.parent))
    sys.modules.pop("hook_overhead_report", None)
    import hook_overhead_report as report

    results_dir = _PATH.parent / "results"
    committed = json.loads((results_dir / "hook_overhead.json").read_text())
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    report.write(committed)
    page = (tmp_path / "hook_overhead.md").read_text()
    assert page == (results_dir / "hook_overhead.md").read_text()
    assert "0.1 s sleep (ten samples a second" in page
    report.write({**committed, "loop_lag_period_s": bench._loop_lag_period_s()})
    assert "0.25 s sleep (four samples a second" in (tmp_path / "hook_overhead.md").read_text()
