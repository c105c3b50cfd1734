"""``llmco2 demo`` end to end on a short slice of the trace: summary, carbon log, plot."""

from __future__ import annotations

import json

import pytest

from llmco2_sidecar.cli.main import main
from llmco2_sidecar.service.carbon_log import read_records


@pytest.mark.timeout(180)
def test_demo_writes_log_summary_and_plot(tmp_path, capsys):
    log = tmp_path / "demo" / "carbon.jsonl"
    rc = main(["demo", "--minutes", "0.5", "--log", str(log), "--json", "--predictor", "roofline"])
    out = capsys.readouterr().out
    assert rc == 0
    summary = json.loads(out[: out.rindex("}") + 1])
    recs = read_records(log)
    assert summary["requests"] == len(recs) > 50
    assert summary["setup"]["model"] == "meta-llama/Llama-2-7b-hf" and summary["setup"]["gpu"] == "A100-SXM4-80GB"
    assert summary["transport"]["dropped"] == 0 and summary["transport"]["all_acknowledged"]
    assert summary["energy_j"]["requests"] == pytest.approx(sum(r["energy_j"]["total"] for r in recs))
    # the window records account for everything: requests + unattributed idle
    assert summary["energy_j"]["windows_total"] == pytest.approx(
        summary["energy_j"]["requests"] + summary["energy_j"]["unattributed_idle"], rel=1e-9)
    assert summary["j_per_output_token"] > 0
    png = log.with_name("demo.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_bad_input(tmp_path, capsys):
    assert main(["demo", "--minutes", "0", "--log", str(tmp_path / "c.jsonl"), "--no-plot"]) == 2
    assert "minutes" in capsys.readouterr().err
