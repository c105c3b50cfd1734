"""benchmarks/sidecar_cost.py: the workload's request length, the fit and the page's arithmetic."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def cost(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for mod in ("sidecar", "grpc_floor", "sidecar_cost"):
        sys.modules.pop(mod, None)
    return __import__("sidecar_cost")


@pytest.mark.parametrize("lifetime", [64, 128, 208])
def test_a_request_finishes_every_lifetime_over_16_steps(cost, lifetime):
    import sidecar as bench

    w = bench.Workload("e", lifetime)
    done = []
    for _ in range(4 * lifetime):
        *_, finished = w.steps(1)
        done += finished
    assert len(done) == 4 * bench.SLOTS  # each of the 16 slots finishes once per `lifetime` steps
    assert len(set(done)) == len(done)
    # every running request stays `lifetime` steps: the first finishes come staggered, then one each lifetime / 16
    *_, finished = w.steps(lifetime)
    assert len(finished) == bench.SLOTS


def _runs(p, m, f, noise=()):
    out = []
    for k, (msgs, fin) in enumerate([(1000, 250), (1000, 125), (1000, 77), (250, 250), (180, 125), (140, 77)]):
        steps = 1000
        us = p + m * msgs / steps + f * fin / steps + (noise[k] if noise else 0.0)
        out.append({"steps": steps, "messages": msgs, "finishes": fin, "cpu_us_per_step": us})
    return out


def test_the_fit_recovers_the_costs_it_was_made_from(cost):
    got = cost.fit(_runs(200.0, 300.0, 2400.0))
    assert got["per_step_us"] == pytest.approx(200.0)
    assert got["per_message_us"] == pytest.approx(300.0)
    assert got["per_finish_us"] == pytest.approx(2400.0)
    assert got["max_abs_residual_us"] == pytest.approx(0.0, abs=1e-6)
    assert got["per_finish_se_us"] == pytest.approx(0.0, abs=1e-6)


def test_the_fit_reports_how_far_the_runs_are_from_it(cost):
    got = cost.fit(_runs(200.0, 300.0, 2400.0, noise=(30, -30, 0, 0, 0, 0)))
    assert 0 < got["max_abs_residual_us"] <= 30
    assert got["per_finish_se_us"] > 0


def test_a_finish_cost_within_the_swing_is_not_stated_as_a_figure(cost):
    """Where nothing waits, finishes share prediction calls: a fitted f below its own uncertainty (even
    negative) is said as not measurable, never printed as a negative cost."""
    none = {"per_step_us": 300.0, "per_message_us": 300.0, "per_finish_us": -40.0, "per_finish_se_us": 90.0,
            "max_abs_residual_us": 60.0, "runs": 6}
    small = dict(none, per_finish_us=150.0)  # positive but within two standard errors
    held = {"per_step_us": 200.0, "per_message_us": 380.0, "per_finish_us": 2500.0, "per_finish_se_us": 200.0,
            "max_abs_residual_us": 40.0, "runs": 6}
    assert not cost.measurable(none) and not cost.measurable(small) and cost.measurable(held)
    assert "not measurable" in cost._finish_cell(none) and "not measurable" in cost._finish_cell(small)
    assert cost._finish_cell(held) == "2,500 us"


def test_the_trace_request_length_comes_from_the_committed_trace(cost):
    """208 steps is computed (the conversation trace's mean output rounded to the 16 slots), and the
    committed page was measured with the lengths the script computes now."""
    import json

    r = json.loads((BENCH / "results" / "sidecar_cost.json").read_text())
    assert sorted({c["lifetime"] for c in r["cases"]}) == list(cost.lifetimes())
    assert cost.trace_mean_output() == pytest.approx(r["trace_mean_output_tokens"], abs=0.5)
    assert cost.lifetimes()[-1] % 16 == 0
