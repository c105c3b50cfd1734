"""End to end with a mixture-of-experts model: the real vLLM CPU build (0.32) serves a tiny random
Mixtral (2 layers, 4 experts, 2 active per token) with LLMCO2_SIDECAR set, a real sidecar accounts it.

Checks: the plugin's identity carries the expert fields (its log line), every response carries its
carbon and equals its record, the step records carry what the engine scheduled, and the requests'
energies sum to the steps' attributed energies. test_vllm_e2e.py covers the outage and restart paths
with the dense model; this one stays short.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from llmco2_e2e_harness import HarnessError, Sidecar, VllmServer, build_tiny_model, http_request, sse_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

PROMPT = ("Mixture of experts routes every token to a few of its experts. " * 5).strip()


def test_vllm_serves_a_tiny_moe_with_carbon(vllm_python: Path, tmp_path: Path) -> None:
    model = build_tiny_model(vllm_python, tmp_path / "tiny-mixtral", arch="mixtral")
    assert json.loads((model / "config.json").read_text())["num_local_experts"] == 4
    sidecar = Sidecar(tmp_path / "sidecar").start()
    dump = tmp_path / "steps.jsonl"
    server = VllmServer(vllm_python, model, tmp_path / "vllm", env={
        "LLMCO2_SIDECAR": sidecar.address, "LLMCO2_GPU": "H100", "LLMCO2_STEP_DUMP": str(dump),
        "LLMCO2_RESPONSE_WAIT_S": "10"})
    server.start()
    try:
        sidecar.wait_ready()
        server.wait_ready()
        assert "MoE 4 experts (2 per token) ep 1" in server.log_tail(500_000), "the identity lacks the expert fields"
        results = []
        for i, (route, stream) in enumerate([("completions", False), ("chat", True), ("completions", True)]):
            path = "/v1/completions" if route == "completions" else "/v1/chat/completions"
            body = {"prompt": PROMPT} if route == "completions" else {"messages": [{"role": "user", "content": PROMPT}]}
            body.update(model="tiny", max_tokens=6, ignore_eos=True, stream=stream, temperature=0.0)
            status, hdrs, payload = http_request(server.port, "POST", path, body, {"x-request-id": f"moe{i}"},
                                                 timeout_s=180)
            assert status == 200, payload[:500]
            if stream:
                events = sse_events(payload)
                ev = [e for e in events if isinstance(e, dict) and e.get("object") == "llmco2.carbon"][0]
                assert events[-1] == "[DONE]" and ev["status"] == "final"
                carbon_g, energy_j = ev["carbon_g"], ev["energy_j"]
            else:
                assert hdrs.get("x-llmco2-carbon-status") == "final", hdrs
                carbon_g, energy_j = float(hdrs["x-llmco2-carbon-g"]), float(hdrs["x-llmco2-energy-j"])
            assert carbon_g > 0 and energy_j > 0
            results.append((("chatcmpl-" if route == "chat" else "cmpl-") + f"moe{i}-", carbon_g, energy_j))
        recs = sidecar.records("request")
        for prefix, carbon_g, energy_j in results:
            mine = [r for r in recs if r["request_id"].startswith(prefix)]
            assert len(mine) == 1, (prefix, [r["request_id"] for r in recs])
            assert math.isclose(mine[0]["carbon_g"]["total"], carbon_g, rel_tol=1e-5)
            assert math.isclose(mine[0]["energy_j"]["total"], energy_j, rel_tol=1e-5)
            assert mine[0]["model"] == "tiny"
        scheduled = [json.loads(line) for line in dump.read_text().splitlines()]
        steps = {s["step_id"]: s for s in sidecar.records("step")}
        assert scheduled and len(steps) == len(scheduled)
        for s in scheduled:
            assert steps[s["step_id"]]["tokens"] == s["total_num_scheduled_tokens"]
        steps_j = sum(s["energy_j"]["total"] - s["energy_j"]["idle"] for s in steps.values())
        assert math.isclose(sum(r["energy_j"]["total"] for r in recs), steps_j, rel_tol=1e-6)
        assert server.proc.poll() is None and "llmco2: hook error" not in server.log_tail(500_000)
    except HarnessError as exc:
        pytest.fail(str(exc))
    finally:
        server.stop()
        sidecar.stop()
