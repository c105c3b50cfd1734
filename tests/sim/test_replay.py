"""``llmco2 replay``: the energy books balance, same input gives the same bytes, the time-varying
intensity, regions from one simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmco2_sidecar.cli.main import main
from llmco2_sidecar.energy.accounting import gpu_idle_w, resolve_accounting
from llmco2_sidecar.sim.engine import EngineConfig
from llmco2_sidecar.sim.replay import ReplaySetup, deployment, run_replay

MODEL, GPU = "meta-llama/Llama-2-7b-hf", "A100-SXM4-80GB"


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.exponential(0.2, 150))
    t -= t[0]
    t[60:] += 30.0  # an idle stretch: unattributed idle energy
    p = tmp_path_factory.mktemp("tr") / "t.csv"
    rows = ["arrival_s,prompt_tokens,output_tokens"] + [
        f"{a:.6f},{int(rng.integers(20, 1500))},{int(rng.integers(1, 200))}" for a in t]
    p.write_text("\n".join(rows) + "\n")
    return str(p)


def _setup(trace, **kw):
    return ReplaySetup(trace=trace, model=MODEL, gpu=GPU, predictor="roofline", **kw)


def test_energy_books_balance(trace, tmp_path):
    out = tmp_path / "req.jsonl"
    with open(out, "w") as fh:
        s = run_replay(_setup(trace), requests_out=fh)
    e = s["energy_j"]
    assert s["requests"] == 150
    assert e["prefill"] + e["decode"] + e["gpu_idle"] + e["host"] == pytest.approx(e["total"], rel=1e-12)
    assert e["attributed"] + e["unattributed_idle"] == pytest.approx(e["total"], rel=1e-9)
    assert e["gpu_idle"] > 0 and e["unattributed_idle"] > 0
    # GPU idle = idle power x (trace time - busy time); the GPUs drew prefill + decode while busy
    dep = deployment(_setup(trace))
    acc = resolve_accounting(dep)
    assert e["gpu_idle"] == pytest.approx(gpu_idle_w(acc) * (s["duration_s"] - s["simulation"]["busy_s"]), rel=1e-6)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 150
    assert sum(r["energy_j"]["total"] for r in recs) == pytest.approx(e["attributed"], rel=1e-9)
    assert sum(r["output_tokens"] for r in recs) == s["tokens"]["output"]
    c = s["carbon_g"]
    assert c["operational"] == pytest.approx(e["total"] * 1.58 / 3.6e6 * 481.0, rel=1e-12)
    assert c["embodied"] == pytest.approx(acc.embodied_g_per_gpu_s * s["duration_s"], rel=1e-12)
    assert s["j_per_output_token"] == pytest.approx(e["total"] / s["tokens"]["output"])
    lat = s["latency_s"]
    ttft = np.array([r["ttft_s"] for r in recs])
    for q, key in ((50, "ttft_p50"), (99, "ttft_p99")):
        exact = np.sort(ttft)[int(np.ceil(q / 100 * len(ttft))) - 1]
        assert lat[key] == pytest.approx(exact, rel=2e-3)
    for key in ("ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "e2e_p50", "e2e_p99"):
        assert lat[key] > 0
    assert lat["e2e_p99"] >= lat["ttft_p99"]


def test_cli_json_same_bytes_every_run(trace, tmp_path, capsys):
    args = ["replay", "--trace", trace, "--model", MODEL, "--gpu", GPU, "--predictor", "roofline", "--json",
            "--quiet", "--max-num-seqs", "32", "--max-num-batched-tokens", "1024"]
    outs, reqs = [], []
    for i in range(2):
        ro = tmp_path / f"r{i}.jsonl"
        assert main(args + ["--requests-out", str(ro)]) == 0
        outs.append(capsys.readouterr().out)
        reqs.append(ro.read_bytes())
    assert outs[0] == outs[1] and reqs[0] == reqs[1]
    s = json.loads(outs[0])
    for key in ("requests", "duration_s", "energy_j", "carbon_g", "latency_s", "j_per_output_token", "setup"):
        assert key in s
    assert set(s["energy_j"]) >= {"prefill", "decode", "gpu_idle", "host", "total"}
    assert set(s["carbon_g"]) >= {"operational", "embodied", "total"}
    assert set(s["latency_s"]) >= {"ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "e2e_p50", "e2e_p99"}
    assert s["setup"]["max_num_seqs"] == 32 and s["setup"]["max_num_batched_tokens"] == 1024


def test_cli_text_summary_and_errors(trace, capsys):
    assert main(["replay", "--trace", trace, "--model", MODEL, "--gpu", GPU, "--predictor", "roofline", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "simulated" in out and "gCO2e" in out and "TTFT" in out
    assert main(["replay", "--trace", trace, "--model", "meta-llama/Llama-2-70b-hf", "--gpu", "L4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gpu" in err
    assert main(["replay", "--trace", trace, "--model", MODEL, "--gpu", GPU, "--tp", "0", "--quiet"]) == 2
    assert "tp" in capsys.readouterr().err


def test_regions_from_one_simulation(trace):
    one = run_replay(_setup(trace, region="fr"))
    many = run_replay(_setup(trace), regions=("fr", "in"))
    assert many[0]["carbon_g"] == one["carbon_g"]
    assert many[1]["carbon_g"]["operational"] > many[0]["carbon_g"]["operational"]
    assert many[1]["energy_j"] == one["energy_j"]


def test_time_varying_intensity(trace, tmp_path):
    # two hours: 100 then 500 g/kWh; the trace starts 10 s before the second hour
    csv = tmp_path / "grid.csv"
    csv.write_text("timestamp,g_per_kwh\n2026-12-06T10:00:00Z,100\n2026-12-06T11:00:00Z,500\n")
    base = run_replay(_setup(trace, carbon_intensity_g_per_kwh=100.0))
    s = run_replay(_setup(trace, intensity_csv=str(csv), start_s=1796554800.0 - 10.0))  # 10:59:50 UTC
    e = s["energy_j"]["total"]
    assert s["energy_j"] == base["energy_j"]
    i = s["intensity"]
    assert i["series_mean_g_per_kwh"] == 300.0
    # energy before 11:00 at 100, after at 500: between the two, above 100
    assert 100.0 < i["effective_g_per_kwh"] < 500.0
    assert s["carbon_g"]["operational"] == pytest.approx(e * 1.58 / 3.6e6 * i["effective_g_per_kwh"])
    assert i["difference_g"] == pytest.approx(s["carbon_g"]["operational"] - e * 1.58 / 3.6e6 * 300.0)
    assert i["region"] == "world" and i["difference_vs_region_annual_g"] == pytest.approx(
        s["carbon_g"]["operational"] - e * 1.58 / 3.6e6 * 481.0)
    with pytest.raises(Exception, match="start"):
        run_replay(_setup(trace, intensity_csv=str(csv)))  # no timestamps in the trace, no --start


def test_engine_knobs_change_the_outcome(trace):
    a = run_replay(_setup(trace, engine=EngineConfig(max_num_seqs=4)))
    b = run_replay(_setup(trace, engine=EngineConfig(max_num_seqs=256)))
    assert a["latency_s"]["ttft_p99"] > b["latency_s"]["ttft_p99"]
    assert a["simulation"]["max_running"] <= 4


def test_shipped_predictor_figures_do_not_depend_on_the_call_size(trace, monkeypatch):
    """The replay predicts its chunks in calls of PREDICT_STEPS steps (the fused GNN forward runs them
    in blocks): other call sizes give the same summary, with the shipped GNN."""
    from llmco2_sidecar.sim import replay as replay_mod

    setup = ReplaySetup(trace=trace, model=MODEL, gpu=GPU, predictor="default")
    want = run_replay(setup)
    for size in (7, 128):
        monkeypatch.setattr(replay_mod, "PREDICT_STEPS", size)
        got = run_replay(setup)
        for k, v in want["energy_j"].items():
            assert got["energy_j"][k] == pytest.approx(v, rel=1e-7), (size, k)
    assert want["predictor"] == "llmco2-gnn-v2" and want["energy_j"]["total"] > 0


def test_a_replay_states_the_predictors_expected_error(trace, tmp_path):
    from llmco2_sidecar.predictor.heldout import expected_error

    out = tmp_path / "req.jsonl"
    with open(out, "w") as fh:
        s = run_replay(ReplaySetup(trace=trace, model=MODEL, gpu=GPU, predictor="default"), requests_out=fh)
    dep = deployment(_setup(trace))
    want = expected_error(dep.model, dep.gpu.gpu_id, hf_id=MODEL)
    assert s["expected_error_pct"] == pytest.approx(want.mape_pct, abs=0.005)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["expected_error_pct"] for r in recs} == {s["expected_error_pct"]}
    from llmco2_sidecar.sim.replay_text import fmt_summary

    assert f"expected error: about +-{s['expected_error_pct']:.0f}%" in fmt_summary(s)
    plain = run_replay(_setup(trace))
    assert plain["expected_error_pct"] is None and "expected error" not in fmt_summary(plain)  # Roofline: no scores


def test_the_models_context_bounds_what_is_served(tmp_path, capsys):
    """Llama-2-7B reads 4,096 tokens: a prompt that fills it is rejected (vLLM refuses it) and an output
    that would run past it stops there (vLLM's finish "length"); the summary and the text say so."""
    p = tmp_path / "ctx.csv"
    p.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,20\n0.1,5000,20\n0.2,4000,500\n0.3,4096,1\n")
    s = run_replay(_setup(str(p)))
    sim = s["simulation"]
    assert s["requests"] == 2 and sim["rejected"] == 2 and sim["truncated_outputs"] == 1
    assert sim["max_model_len"] == 4096
    assert s["tokens"]["output"] == 20 + 96  # the 500 asked for stop at 4,096 - 4,000
    assert "prompt fills the model's 4096-token context" in sim["rejected_examples"][0]
    assert main(["replay", "--trace", str(p), "--model", MODEL, "--gpu", GPU, "--predictor", "roofline",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 rejected (e.g." in out and "1 outputs cut at the model's 4096-token context" in out
