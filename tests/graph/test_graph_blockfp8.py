"""Hand counts for block-scaled FP8 GEMMs (graph/blockfp8.py): the activation quantisation pass before
each GEMM, the experts' 64-row M tiles, the routed experts' promotion on B200; per-channel FP8 and
16-bit models untouched."""

import dataclasses

import numpy as np
import pytest

from llmco2_sidecar.graph import blockfp8, layer_graph, step_features
from llmco2_sidecar.graph.aggregates import aggregates
from llmco2_sidecar.graph.builder import roofline
from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.workload import Parallelism, StepBatch

QWEN_FP8 = "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8"
# Qwen3-235B-A22B (config.json): hidden 4096, 64 query heads and 4 KV heads of 128, 128 experts, 8 per
# token, expert intermediate 1536, 94 layers, all MoE; FP8 release: weight_block_size [128, 128]
H, HEADS, HD, E, K, I = 4096, 64, 128, 128, 8, 1536
B200_OPS_S = 75e12 / 2
H100_OPS_S = 66.9e12 / 2


def dep(name, gpu="B200", model=None, **par):
    return Deployment(model or load_model(name), load_gpu(gpu), Parallelism(**par))


def per_channel(name):
    """The same checkpoint read as per-channel FP8 (no block scales): the graph of before."""
    return dataclasses.replace(load_model(name), weight_block_size=0)


def layer_sums(d, steps):
    g = layer_graph(d)
    r = roofline(g.kernels, aggregates(steps, d).step, d)
    return g, r


def test_constants_from_the_format():
    assert blockfp8.QUANT_BYTES_PER_ELEMENT == 2 + 1 + 8 / 128  # read bf16, write e4m3, fp32 scale per 128 (w + r)
    assert blockfp8.QUANT_OPS_PER_ELEMENT == 1 + 1 + 1 + 0.5  # widen, |x| max, scale, packed convert
    assert blockfp8.EXPERT_M_TILE == 64  # vLLM 0.11 fused-MoE default BLOCK_SIZE_M for fp8 block quant


def test_qwen3_235b_layer_activation_quantisation_bytes_at_1000_tokens():
    """One FP8 Qwen3-235B layer on one of two B200s (EP = TP = 2, as ML.ENERGY v3 serves it), a
    1000-token prefill: q/k/v share one quantised copy of the hidden state (4096), o_proj's input is
    this GPU's 32 heads x 128 (4096), the experts' gate/up input once per token (4096), the down input
    per (token, expert) pair: 8 experts / 2 GPUs x 1536 = 6144. 18,432 elements per token."""
    steps = StepBatch.from_steps([[(0, 1000)]])
    q_per_token = H + (HEADS // 2) * HD + H + (K // 2) * I
    assert q_per_token == 18432
    # the GEMMs read FP8 inputs: q, k, v (3 x 4096), o (4096), gate/up per pair (4 x 4096), down per pair (6144)
    gemm_in = 3 * H + (HEADS // 2) * HD + (K // 2) * H + (K // 2) * I
    assert gemm_in == 38912
    d = dep(QWEN_FP8, tp=2, ep=2)
    pc = dep(QWEN_FP8, model=per_channel(QWEN_FP8), tp=2, ep=2)
    g, r = layer_sums(d, steps)
    _, r0 = layer_sums(pc, steps)
    names = g.names
    qel = aggregates(steps, d).step @ np.array([k.qelems or (0.0,) * 8 for k in g.kernels]).T
    assert qel[0].sum() == pytest.approx(1000 * q_per_token, rel=1e-12)
    assert qel[0, names.index("k_proj")] == 0 and qel[0, names.index("v_proj")] == 0
    # bytes: + 3.0625 per quantised element, - 1 per element a GEMM reads; 17,536 B per token and layer
    extra = 1000 * (q_per_token * (3 + 8 / 128) - gemm_in)
    assert extra == pytest.approx(1000 * 17536)
    assert r.mem_bytes[0].sum() - r0.mem_bytes[0].sum() == pytest.approx(extra, rel=1e-9)
    # quantisation ops on the CUDA cores: 3.5 per element
    quant_s = 1000 * q_per_token * 3.5 / B200_OPS_S
    attn_simt = sum(r.simt_s[0, names.index(n)] for n in ("q_proj", "o_proj"))
    assert attn_simt == pytest.approx(((H + (HEADS // 2) * HD) * 1000 * 3.5) / B200_OPS_S, rel=1e-9)
    assert r.simt_s[0, names.index("k_proj")] == 0.0  # B200: attention block scales inside the MMA, input shared
    promo = (r.flops[0, names.index("experts_gate_up")] + r.flops[0, names.index("experts_down")]) / 256 / B200_OPS_S
    assert r.simt_s[0].sum() == pytest.approx(quant_s + promo, rel=1e-9)


def test_expert_m_tiles_at_decode_batch_8():
    """Batch 8 on 2 GPUs: each GPU holds 64 experts and touches 64 (1 - (1 - 8/128)^8) = 25.8 of them
    per layer; each runs one whole 64-row tile of gate/up (4096 x 3072) and down (1536 x 4096)."""
    steps = StepBatch.from_steps([[(500 + j, 1) for j in range(8)]])
    d = dep(QWEN_FP8, tp=2, ep=2)
    g, r = layer_sums(d, steps)
    _, r0 = layer_sums(dep(QWEN_FP8, model=per_channel(QWEN_FP8), tp=2, ep=2), steps)
    touched = 64 * (1 - (1 - K / E) ** 8)
    assert touched == pytest.approx(25.8, abs=0.05)
    tile = touched * 64 * 2 * (H * 2 * I + I * H)
    assert r.flops[0].sum() - r0.flops[0].sum() == pytest.approx(tile, rel=1e-9)
    useful = 8 * (K // 2) * 2 * (H * 2 * I + I * H)
    assert tile / useful == pytest.approx(64 * touched / 32, rel=1e-9)  # ~52 x the useful expert FLOPs
    # the weights read are unchanged (same touched experts); the padded tiles stay below the memory time
    gu = g.names.index("experts_gate_up")
    assert r.time_s[0, gu] == pytest.approx(r.mem_bytes[0, gu] / 8e12, rel=1e-12)


def test_hopper_promotion_counts_the_executed_tiles_and_the_quantisation():
    steps = StepBatch.from_steps([[(0, 512)]])
    d = dep(QWEN_FP8, "H100", tp=8)
    g, r = layer_sums(d, steps)
    qel = aggregates(steps, d).step @ np.array([k.qelems or (0.0,) * 8 for k in g.kernels]).T
    for j, k in enumerate(g.kernels):
        want = (r.flops[0, j] / 256 + qel[0, j] * 3.5) / H100_OPS_S if k.dtype == "fp8" else 0.0
        assert r.simt_s[0, j] == pytest.approx(want, rel=1e-12), k.name


def test_deepseek_v3_fused_inputs():
    """DeepSeek-V3: q_a and kv_a read one quantised copy of the hidden state (vLLM's fused projection),
    q_b its 1536-wide latent; the shared expert quantises its own input; the first three dense layers'
    gate and up share one copy."""
    name = "deepseek-ai/DeepSeek-V3.1"
    m = load_model(name)
    g = layer_graph(dep(name, tp=8, ep=8))
    q = {k.name: k.qelems[1] for k in g.kernels if k.qelems}
    dense, moe = m.num_dense_layers / m.num_layers, (m.num_layers - m.num_dense_layers) / m.num_layers
    assert q["q_a_proj"] == pytest.approx(7168) and q["kv_a_proj"] == 0.0
    assert q["q_b_proj"] == pytest.approx(1536)
    assert q["o_proj"] == pytest.approx((128 // 8) * m.v_head_dim)
    assert q["shared_gate_up"] == pytest.approx(7168 * moe) and q["shared_down"] == pytest.approx(2048 // 8 * moe)
    assert q["gate_proj"] == pytest.approx(7168 * dense) and q["up_proj"] == 0.0
    assert q["experts_gate_up"] == pytest.approx(7168 * moe)  # once per token
    assert q["experts_down"] == pytest.approx(8 / 8 * 2048 * moe)  # per pair: k / tp pairs of 2048
    assert "q_absorb" not in q and "v_up" not in q  # 16-bit in vLLM's absorbed MLA


@pytest.mark.parametrize("name", ["meta-llama/Llama-3.1-405B-Instruct-FP8", "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8",
                                  "Qwen/Qwen3-235B-A22B", "openai/gpt-oss-120b"])
def test_other_formats_untouched(name):
    """Per-channel FP8, 16-bit and MXFP4 models: no quantisation pass, no padded tiles (the graph of before)."""
    m = load_model(name)
    assert not m.weight_block_size
    g = layer_graph(dep(name, "H100", tp=8))
    assert not any(k.qelems for k in g.kernels + g.outside)
    steps = StepBatch.from_steps([[(0, 300), (500, 1)]])
    for gpu in ("H100", "B200"):
        f = step_features(dep(name, gpu, tp=8), steps)
        if "FP8" in name or "Qwen3-235B-A22B" == name.split("/")[1]:
            assert f.simt_s is None, (name, gpu)
