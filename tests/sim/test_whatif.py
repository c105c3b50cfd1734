"""``llmco2 whatif``: every fitting combination, the others with the reason, the Pareto front, the
pick under SLOs, worker processes giving the same results as one process, the plot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmco2_sidecar.cli.main import main
from llmco2_sidecar.sim.engine import EngineConfig
from llmco2_sidecar.sim.replay import ReplaySetup
from llmco2_sidecar.sim.whatif import choose, execute, front_of, pareto_front, plan, table

MODEL7, MODEL70 = "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-70b-hf"


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    rng = np.random.default_rng(2)
    t = np.cumsum(rng.exponential(0.1, 80))
    t -= t[0]
    p = tmp_path_factory.mktemp("tr") / "t.jsonl"
    p.write_text("".join(f'{{"arrival_s": {a:.6f}, "prompt_tokens": {int(rng.integers(50, 1200))}, '
                         f'"output_tokens": {int(rng.integers(1, 150))}}}\n' for a in t))
    return str(p)


def test_pareto_front():
    pts = [(1, 5), (2, 4), (3, 4), (2, 6), (5, 1), (5, 1)]
    assert pareto_front(pts) == [True, True, False, False, True, True]


def test_plan_lists_what_does_not_fit(trace):
    base = ReplaySetup(trace=trace, model=MODEL7, gpu="A100", predictor="roofline")
    tasks, unfit = plan(base, [MODEL7, MODEL70], ["A100-SXM4-80GB"], [1, 3], [64], ["fr", "us"])
    assert [(t.setup.model, t.setup.tp, t.regions) for t in tasks] == [(MODEL7, 1, ("fr", "us"))]
    reasons = {(u["config"]["model"], u["config"]["tp"]): u["reason"] for u in unfit}
    assert "does not fit" in reasons[(MODEL70, 1)] and "72.0 GB" in reasons[(MODEL70, 1)]
    assert "does not divide" in reasons[(MODEL7, 3)]
    assert len(unfit) == 3 * 2  # (7B TP3, 70B TP1, 70B TP3) x 2 regions


def test_workers_give_the_same_results_in_order(trace):
    base = ReplaySetup(trace=trace, model=MODEL7, gpu="A100", predictor="roofline", engine=EngineConfig())
    tasks, _ = plan(base, [MODEL7], ["A100-SXM4-80GB", "H100"], [1, 2], [16], [None])
    one = execute(tasks, jobs=1)
    two = execute(tasks, jobs=2)
    assert json.dumps(one) == json.dumps(two)
    assert [s[0]["setup"]["gpu"] for s in one] == ["A100-SXM4-80GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "H100-SXM5-80GB"]


def _fake(g, ttft, tpot, energy_scale=1.0, region="fr", gpu="A", idle=0.1, rejected=0):
    e = {"prefill": 10.0 * energy_scale, "decode": 50.0 * energy_scale, "gpu_idle": 100.0 * idle * energy_scale,
         "host": 5.0 * energy_scale}
    e["total"] = sum(e.values())
    return {"setup": {"model": "m", "gpu": gpu, "tp": 1, "pp": 1, "max_num_seqs": 8, "region": region,
                      "carbon_intensity_g_per_kwh": 50.0},
            "requests": 10, "tokens": {"output": 1000}, "duration_s": 100.0,
            "simulation": {"busy_s": 50.0, "preemptions": 0, "rejected": rejected}, "energy_j": e,
            "carbon_g": {"operational": g * 0.9, "embodied": g * 0.1, "total": g},
            "g_per_1k_output_tokens": g, "j_per_output_token": e["total"] / 1000,
            "latency_s": {"ttft_p99": ttft, "tpot_p99": tpot}}


def test_choose_meets_slo_and_explains():
    res = [_fake(1.0, 2.0, 0.05, gpu="slow"), _fake(2.0, 0.1, 0.02, gpu="fast", energy_scale=2, idle=0.8),
           _fake(3.0, 0.05, 0.01, gpu="fastest", energy_scale=3, idle=1.5)]
    c = choose(res, slo_ttft_ms=500, slo_tpot_ms=None)
    assert c["index"] == 1 and "fast" in c["label"]
    assert "below the next best" in c["why"] and "miss the SLOs" in c["why"] and "slow" in c["why"]
    assert "\n" not in c["why"]
    none = choose(res, slo_ttft_ms=1, slo_tpot_ms=None)
    assert none["index"] is None and "no configuration meets" in none["why"]
    assert choose(res, slo_ttft_ms=None, slo_tpot_ms=30)["index"] == 1


def test_cli_table_json_plot_and_pick(trace, tmp_path, capsys):
    png = tmp_path / "w.png"
    args = ["whatif", "--trace", trace, "--model", f"{MODEL7},{MODEL70}", "--gpu", "A100-SXM4-80GB,H100",
            "--tp", "1,4", "--max-num-seqs", "32", "--region", "fr,us", "--predictor", "roofline", "--jobs", "1",
            "--slo-ttft-ms", "2000", "--quiet"]
    assert main(args + ["--json", "--plot", str(png)]) == 0
    doc = json.loads(capsys.readouterr().out)
    labels = [c["label"] for c in doc["configurations"]]
    # 7B on TP1/TP4 and 70B on TP4, each GPU, each region; 70B TP1 does not fit
    assert len(labels) == 2 * 3 * 2 and len(set(labels)) == len(labels)
    assert {(u["config"]["model"], u["config"]["tp"]) for u in doc["does_not_fit"]} == {(MODEL70, 1)}
    assert any(c["pareto"] for c in doc["configurations"])
    assert doc["choice"]["label"] in labels and doc["choice"]["why"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pick:" in out and "does not fit" in out and "<- pick" in out


def test_cli_errors(trace, capsys):
    assert main(["whatif", "--trace", trace, "--model", MODEL7, "--gpu", "A100", "--tp", "1,x", "--quiet"]) == 2
    assert "tp" in capsys.readouterr().err
    assert main(["whatif", "--trace", trace, "--model", MODEL70, "--gpu", "L4", "--quiet"]) == 2
    assert "fits" in capsys.readouterr().err


def test_a_configuration_that_rejects_requests_is_never_picked_nor_on_the_front():
    """Serving 2 of 3 requests is not cheaper: it is a different workload (a prompt over its KV cache)."""
    res = [_fake(0.5, 0.1, 0.01, gpu="small", rejected=1), _fake(1.0, 0.2, 0.02, gpu="big")]
    c = choose(res, slo_ttft_ms=100000, slo_tpot_ms=None)
    assert c["index"] == 1 and "big" in c["label"]
    assert "reject requests" in c["why"] and "small" in c["why"]
    assert front_of(res) == [False, True]
    assert pareto_front([(0.1, 0.5), (0.2, 1.0)]) == [True, False]  # on carbon and latency alone it would win
    text = table(res, front_of(res), c)
    assert "rejected" in text.splitlines()[0] and "<- pick" in text.splitlines()[3]
    # the same rejections everywhere (the model's context): comparable, and the pick says so
    same = [_fake(0.5, 0.1, 0.01, gpu="small", rejected=3), _fake(1.0, 0.2, 0.02, gpu="big", rejected=3)]
    for r in same:
        r["simulation"]["rejected_examples"] = ["r9 (prompt fills the model's 4096-token context)"]
    c = choose(same, slo_ttft_ms=100000, slo_tpot_ms=None)
    assert c["index"] == 0 and "every candidate rejects 3 request(s)" in c["why"] and "4096-token" in c["why"]
    assert front_of(same) == [True, False]


def _tiny_trace(tmp_path, prompts):
    p = tmp_path / "tiny.jsonl"
    p.write_text("".join(f'{{"arrival_s": {0.5 * k}, "prompt_tokens": {n}, "output_tokens": 8}}\n'
                         for k, n in enumerate(prompts)))
    return str(p)


def test_cli_shows_and_excludes_a_configuration_that_drops_a_long_prompt(tmp_path, capsys):
    trace = _tiny_trace(tmp_path, [100, 60000, 100])  # 60k tokens of KV: more than an L4 holds beside 8B weights
    args = ["whatif", "--trace", trace, "--model", "meta-llama/Llama-3.1-8B", "--gpu", "L4,H100", "--predictor",
            "roofline", "--jobs", "1", "--slo-ttft-ms", "100000", "--quiet"]
    assert main(args + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_gpu = {c["setup"]["gpu"]: c for c in doc["configurations"]}
    l4 = next(v for k, v in by_gpu.items() if k.startswith("L4"))
    h100 = next(v for k, v in by_gpu.items() if k.startswith("H100"))
    assert l4["simulation"]["rejected"] == 1 and h100["simulation"]["rejected"] == 0
    assert not l4["pareto"] and doc["choice"]["label"] == h100["label"]
    assert main(args) == 0
    out = capsys.readouterr().out
    l4_row = next(line for line in out.splitlines() if line.startswith("Llama-3.1-8B L4"))
    assert l4_row.split()[-1] == "1" or l4_row.split()[-2] == "1"  # the rejected column


@pytest.mark.parametrize("flags, field", [
    (["--gpu", "A100,A100-SXM4-80GB"], "gpu: 'A100' and 'A100-SXM4-80GB' name the same gpu"),
    (["--gpu", "A100,A999"], "gpu"),
    (["--gpu", "A100", "--tp", "1,,2"], "tp: an empty item"),
])
def test_cli_list_errors_exit_2_naming_the_field(trace, capsys, flags, field):
    assert main(["whatif", "--trace", trace, "--model", MODEL7, *flags, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


def test_cli_an_empty_trace_is_one_line_and_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("arrival_s,prompt_tokens,output_tokens\n")
    zero = tmp_path / "zero.csv"
    zero.write_text("arrival_s,prompt_tokens,output_tokens\n0,0,0\n1,0,0\n")
    for t in (empty, zero):
        assert main(["whatif", "--trace", str(t), "--model", MODEL7, "--gpu", "A100", "--quiet"]) == 2
        assert "trace: no request in the trace" in capsys.readouterr().err
        for extra in ([], ["--json"]):
            assert main(["replay", "--trace", str(t), "--model", MODEL7, "--gpu", "A100", "--quiet", *extra]) == 2
            err = capsys.readouterr().err
            assert "trace: no request in the trace" in err and "Traceback" not in err
