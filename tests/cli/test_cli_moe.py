"""`llmco2 estimate` / `graph` / `catalog` with mixture-of-experts and quantized models, as real
subprocesses (one process per case: each loads the predictor)."""

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def llmco2(*args):
    return subprocess.run([sys.executable, "-m", "llmco2_sidecar.cli.main", *args], capture_output=True, text=True,
                          env=ENV, timeout=180)


def test_estimate_moe_batch_and_human_line():
    q = [{"model": "openai/gpt-oss-120b", "gpu": "H100", "batch": 8, "prompt_len": 512, "output_len": 64},
         {"model": "Qwen/Qwen3-30B-A3B", "gpu": "H100", "batch": 1, "prompt_len": 512, "output_len": 64},
         {"model": "Qwen/Qwen3-32B", "gpu": "H100", "batch": 1, "prompt_len": 512, "output_len": 64},
         {"model": "deepseek-ai/DeepSeek-R1", "gpu": "H200", "batch": 4, "prompt_len": 512, "output_len": 32, "tp": 8,
          "ep": 16, "dp": 2}]
    p = subprocess.run([sys.executable, "-m", "llmco2_sidecar.cli.main", "estimate", "--queries", "-", "--json"],
                       input="\n".join(json.dumps(x) for x in q), capture_output=True, text=True, env=ENV, timeout=300)
    assert p.returncode == 0, p.stderr
    oss, a3b, dense32, r1 = [json.loads(line) for line in p.stdout.splitlines()]
    assert oss["model_info"]["experts"] == 128 and oss["model_info"]["expert_weight_bits"] == 4.25
    assert oss["energy_j"]["total"] > 0 and oss["carbon_g"]["total"] > 0
    # decode at batch 1 reads ~3.3B active parameters instead of 32.8B: far fewer bytes than a dense 32B
    assert a3b["memory_bytes"]["decode"] < 0.25 * dense32["memory_bytes"]["decode"]
    assert r1["ep"] == 16 and r1["network_bytes"]["decode"] > 0 and r1["model_info"]["mla"]
    human = llmco2("estimate", "--model", "openai/gpt-oss-20b", "--gpu", "L40S", "--batch", "2", "--prompt-len", "128",
                   "--output-len", "16")
    assert human.returncode == 0, human.stderr
    assert "MoE 32 experts, 4 per token" in human.stdout and "4.25-bit experts (mxfp4)" in human.stdout


@pytest.mark.parametrize("args,field", [
    (["--model", "Qwen/Qwen3-30B-A3B", "--tp", "2", "--ep", "3"], "ep"),
    (["--model", "meta-llama/Llama-3.1-8B", "--tp", "2", "--ep", "2"], "ep"),
    (["--model", "Qwen/Qwen3-30B-A3B", "--tp", "2", "--ep", "4"], "ep"),  # ep > tp x dp
])
def test_estimate_bad_expert_parallelism_one_line(args, field):
    p = llmco2("estimate", *args, "--gpu", "H100", "--batch", "1", "--prompt-len", "8", "--output-len", "8")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert f"error: {field}:" in p.stderr


def test_graph_moe_json_and_table():
    p = llmco2("graph", "--model", "mistralai/Mixtral-8x7B-v0.1", "--gpu", "H100", "--tp", "2", "--batch", "256",
               "--prompt-len", "512", "--phase", "decode", "--json")
    assert p.returncode == 0, p.stderr
    g = json.loads(p.stdout)
    types = {k["ktype"] for k in g["kernels"]}
    assert {"moe_router", "moe_topk", "expert_linear"} <= types
    assert g["moe"]["expected_distinct_experts"] == pytest.approx(8 * (1 - 0.75 ** 256))
    assert ["topk", "experts_gate_up"] in g["edges"]
    t = llmco2("graph", "--model", "deepseek-ai/DeepSeek-V3", "--gpu", "H200", "--tp", "8", "--batch", "1",
               "--prompt-len", "512", "--phase", "decode")
    assert t.returncode == 0, t.stderr
    assert "MoE: 256 experts, 8 per token, 58 MoE + 3 dense layers" in t.stdout and "q_absorb" in t.stdout and "experts_gate_up" in t.stdout


def test_catalog_lists_moe_models_and_support():
    p = llmco2("catalog", "models", "--json")
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout)["models"]
    assert m["openai/gpt-oss-120b"]["experts"] == 128 and m["openai/gpt-oss-120b"]["quant_method"] == "mxfp4"
    assert m["deepseek-ai/DeepSeek-V3"]["mla"] and m["deepseek-ai/DeepSeek-V3"]["verified"]
    fp8 = m["Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"]
    assert fp8["alias_of"] == "Qwen/Qwen3-235B-A22B" and fp8["weight_bits"] == 8 and not fp8["verified"]
    assert m["Qwen/Qwen3-30B-A3B"]["heldout_mape"] is None or m["Qwen/Qwen3-30B-A3B"]["heldout_mape"] > 0
    human = llmco2("catalog", "models")
    assert "MoE 256/8 MLA" in human.stdout
