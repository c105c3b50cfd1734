"""SCI ((E x I) + M per R) of records and summaries."""

import pytest

from llmco2_sidecar.energy.sci import request_sci, summary_sci


def test_request_sci_units():
    s = request_sci(0.05, prompt_tokens=300, output_tokens=200)
    assert s == {"g_per_request": 0.05, "g_per_1k_output_tokens": pytest.approx(0.25),
                 "g_per_1k_tokens": pytest.approx(0.1)}
    assert request_sci(0.05, 10, 0)["g_per_1k_output_tokens"] is None  # no output: no per-token figure


def test_summary_includes_unattributed_idle_in_its_share():
    reqs = [{"carbon_g": {"total": 1.0}, "prompt_tokens": 100, "output_tokens": 400},
            {"carbon_g": {"total": 3.0}, "prompt_tokens": 100, "output_tokens": 600}]
    # a window of 10 J total whose 2.5 J were idle with no request running: a quarter of its operational carbon
    win = [{"type": "window", "energy_j": {"total": 10.0, "unattributed": 2.5}, "carbon_g": {"operational": 0.8}}]
    s = summary_sci(reqs, win)
    assert s["idle_carbon_g"] == pytest.approx(0.2) and s["idle_included"]
    assert s["g_per_request"] == pytest.approx(4.2 / 2)
    assert s["g_per_1k_output_tokens"] == pytest.approx(4.2 * 1000 / 1000)
    assert s["g_per_1k_tokens"] == pytest.approx(4.2 * 1000 / 1200)
    bare = summary_sci(reqs)
    assert not bare["idle_included"] and bare["g_per_request"] == pytest.approx(2.0)
    assert summary_sci([])["g_per_request"] is None
