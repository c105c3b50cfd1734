"""``llmco2 demo`` end to end on a short slice of the trace: deterministic summary, the live
sidecar's records agreeing with the in-process accounting, the carbon log, the plot."""

from __future__ import annotations

import json

import pytest

from llmco2_sidecar.cli.main import main
from llmco2_sidecar.service.carbon_log import read_records


@pytest.mark.timeout(300)
def test_demo_is_deterministic_and_agrees_with_the_sidecar(tmp_path, capsys):
    outs = []
    for i in range(2):
        log = tmp_path / f"demo{i}" / "carbon.jsonl"
        rc = main(["demo", "--minutes", "0.5", "--log", str(log), "--json", "--predictor", "roofline"])
        cap = capsys.readouterr()
        assert rc == 0
        outs.append(cap.out)
        assert "step times from the simulator" in cap.err
    assert outs[0] == outs[1]  # the same figures, byte for byte
    summary = json.loads(outs[0])
    recs = read_records(log)
    assert summary["requests"] == len(recs) > 50
    assert summary["sidecar"]["agrees_with_replay"] and summary["sidecar"]["records"] == len(recs)
    assert summary["setup"]["model"] == "meta-llama/Llama-2-7b-hf" and summary["setup"]["gpu"] == "A100-SXM4-80GB"
    assert "simulat" in summary["demo"]["step_times"] and "simulated" in summary["note"]
    assert "latencies are estimates" in summary["note"]  # the duration model's error is said, not hidden
    e = summary["energy_j"]
    assert e["attributed"] == pytest.approx(sum(r["energy_j"]["total"] for r in recs), rel=1e-6)
    assert e["attributed"] + e["unattributed_idle"] == pytest.approx(e["total"], rel=1e-9)
    assert summary["j_per_output_token"] > 0
    png = log.with_name("demo.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_text_says_step_times_are_simulated(tmp_path, capsys):
    assert main(["demo", "--minutes", "0.2", "--log", str(tmp_path / "c.jsonl"), "--no-plot",
                 "--predictor", "roofline"]) == 0
    out = capsys.readouterr().out
    assert "step times come from the engine simulator" in out and "agrees with the in-process accounting" in out


def test_demo_bad_input(tmp_path, capsys):
    assert main(["demo", "--minutes", "0", "--log", str(tmp_path / "c.jsonl"), "--no-plot"]) == 2
    assert "minutes" in capsys.readouterr().err
