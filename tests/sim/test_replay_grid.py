"""``llmco2 replay --grid``: static, an hourly CSV, a live API read once; records and the summary
carry the intensity's kind and source and their SCI."""

from __future__ import annotations

import json

import pytest
from grid_fakes import UK_NATIONAL, FakeApi, fresh

from llmco2_sidecar.cli.main import main

MODEL, GPU = "meta-llama/Llama-2-7b-hf", "A100-SXM4-80GB"


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    p = tmp_path_factory.mktemp("tr") / "t.csv"
    t0 = 1796554800 - 60  # 2026-12-06T10:59:00Z: the trace crosses 11:00
    rows = ["timestamp,prompt_tokens,output_tokens"] + [f"{t0 + 6 * i},{100 + 10 * i},{20 + i}" for i in range(20)]
    p.write_text("\n".join(rows) + "\n")
    return str(p)


def _replay(trace, tmp_path, *extra, capsys):
    out = tmp_path / "req.jsonl"
    assert main(["replay", "--trace", trace, "--model", MODEL, "--gpu", GPU, "--predictor", "roofline", "--json",
                 "--quiet", "--requests-out", str(out), *extra]) == 0
    cap = capsys.readouterr()
    return json.loads(cap.out), [json.loads(x) for x in out.read_text().splitlines()], cap.err


def test_replay_grid_static_csv_and_live(trace, tmp_path, capsys):
    s, recs, _ = _replay(trace, tmp_path, "--grid", "static:fr", capsys=capsys)
    assert s["setup"]["region"] == "fr"
    r = recs[0]
    assert (r["carbon_intensity_kind"], r["carbon_intensity_source"]) == ("location", "static:fr")
    assert r["sci"]["g_per_request"] == r["carbon_g"]["total"]
    sci = s["sci"]
    assert sci["idle_included"] and sci["g_per_request"] == pytest.approx(s["carbon_g"]["total"] / s["requests"])
    assert sci["g_per_1k_output_tokens"] == s["g_per_1k_output_tokens"]

    csv = tmp_path / "g.csv"
    csv.write_text("timestamp,g_per_kwh\n2026-12-06T10:00Z,100\n2026-12-06T11:00Z,500\n")
    s, recs, _ = _replay(trace, tmp_path, "--grid", f"csv:{csv}", capsys=capsys)
    assert s["intensity"]["series_mean_g_per_kwh"] == 300.0
    assert {r["carbon_intensity_source"] for r in recs} <= {"csv:g.csv (per step)"}
    assert {r["carbon_intensity_ts"] for r in recs} == {1796551200.0, 1796554800.0}  # both hours were used

    api = FakeApi()
    api.set("/intensity", 200, fresh(UK_NATIONAL))
    try:
        s, recs, err = _replay(trace, tmp_path, "--grid", "ukci", "--grid-url", api.url, capsys=capsys)
    finally:
        api.close()
    assert s["setup"]["carbon_intensity_g_per_kwh"] == 182.0
    assert "182 gCO2e/kWh (location, ukci:national (forecast)) now" in err


def test_replay_grid_conflicts(trace, tmp_path, capsys):
    assert main(["replay", "--trace", trace, "--model", MODEL, "--gpu", GPU, "--grid", "static:de",
                 "--carbon-intensity", "100"]) == 2
    assert "grid: --grid replaces --carbon-intensity" in capsys.readouterr().err
