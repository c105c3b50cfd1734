import pytest

from llmco2_sidecar.energy import carbon
from llmco2_sidecar.estimate import CarbonSettings, estimate
from llmco2_sidecar.predictor.roofline import RooflinePredictor
from llmco2_sidecar.workload import BatchQuery

Q = BatchQuery("meta-llama/Llama-2-7b-hf", "A100", batch=8, prompt_len=512, output_len=64)


def test_contract_fields_and_sums():
    r = estimate(Q, predictor=RooflinePredictor())
    for k in ("energy_j", "carbon_g", "flops", "memory_bytes", "network_bytes", "latency_s", "predictor"):
        assert k in r
    e, c = r["energy_j"], r["carbon_g"]
    assert e["total"] == pytest.approx(e["prefill"] + e["decode"] + e["serving"])
    assert c["total"] == pytest.approx(c["operational"] + c["embodied"])
    assert c["operational"] == pytest.approx(e["total"] * carbon.DEFAULT_PUE / 3.6e6 * 481.0)
    assert r["predictor"] == "roofline-analytic"
    assert (r["model"], r["gpu"], r["batch"], r["prompt_len"], r["output_len"], r["tp"], r["pp"]) == (
        "meta-llama/Llama-2-7b-hf", "A100-SXM4-80GB", 8, 512, 64, 1, 1)
    assert r["flops"]["prefill"] > r["flops"]["decode"] > 0  # 4096 prompt tokens vs 504 decoded


def test_carbon_settings():
    r = estimate(Q, CarbonSettings(pue=1.1, carbon_intensity_g_per_kwh=100.0), predictor=RooflinePredictor())
    assert r["carbon_g"]["operational"] == pytest.approx(r["energy_j"]["total"] * 1.1 / 3.6e6 * 100.0)
    fr = estimate(Q, CarbonSettings(region="fr"), predictor=RooflinePredictor())
    assert fr["carbon_intensity_g_per_kwh"] == 56.0


def test_observed_latency_sets_the_wall_time():
    fast = estimate(Q, predictor=RooflinePredictor())
    slow = estimate(BatchQuery(**{**Q.__dict__, "observed_latency_s": 10.0}), predictor=RooflinePredictor())
    assert slow["latency_s"]["prefill"] + slow["latency_s"]["decode"] == pytest.approx(10.0)
    assert slow["energy_j"]["total"] > fast["energy_j"]["total"]  # idle power over a longer wall time


def test_monotone_in_batch_and_tokens():
    totals = [estimate(BatchQuery("meta-llama/Llama-2-7b-hf", "A100", b, p, 32), predictor=RooflinePredictor())
              ["energy_j"]["total"] for b in (1, 4) for p in (128, 1024)]
    assert totals[0] < totals[1] and totals[2] < totals[3] and totals[0] < totals[2]


def test_the_estimate_states_its_expected_error():
    from llmco2_sidecar.hardware import load_gpu
    from llmco2_sidecar.models import load_model
    from llmco2_sidecar.predictor.default import default_predictor
    from llmco2_sidecar.predictor.heldout import expected_error

    q = BatchQuery("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "H100", batch=8, prompt_len=256, output_len=16, tp=8)
    r = estimate(q, predictor=default_predictor())
    assert r["predictor"] == "llmco2-gnn-moe-v1"  # a mixture of experts: the MoE model answers
    want = expected_error(load_model(q.model), load_gpu("H100").gpu_id)
    assert r["expected_error"]["mape_pct"] == pytest.approx(want.mape_pct, abs=0.005)
    assert "precision=fp8" in r["expected_error"]["groups"]  # an FP8 MoE is judged by its hardest group
    assert estimate(Q, predictor=RooflinePredictor())["expected_error"] is None
