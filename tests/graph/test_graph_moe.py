"""Hand counts for the MoE, MLA, local-attention and precision parts of the kernel graph (derived
here from the architecture, not taken from the code)."""

import numpy as np
import pytest

from llmco2_sidecar.errors import InputError
from llmco2_sidecar.graph import kernel_table, layer_graph, request_shares, step_features
from llmco2_sidecar.graph.builder import check_deployment, slice_aggregates
from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.workload import Parallelism, StepBatch


def dep(model, gpu="H100", **par):
    return Deployment(load_model(model), load_gpu(gpu), Parallelism(**par))


def layer_rows(d, steps):
    return {r.name: r for r in kernel_table(d, steps) if r.scope == "layer"}


def test_mixtral_layer_flops_hand_count():
    d = dep("mistralai/Mixtral-8x7B-v0.1", tp=2)
    T, tp = 1000, 2
    h, i, hd, nq, nkv = 4096, 14336, 128, 32, 8
    rows = layer_rows(d, StepBatch.from_steps([[(0, T)]]))
    q, kv = nq * hd // tp, nkv * hd // tp
    proj = 2 * T * (h * q + 2 * h * kv + q * h)  # q, k, v, o on this GPU
    attn = (4 * hd + 5) * (nq // tp) * T * (T + 1) / 2
    rope = 3 * T * (q + kv)
    norms = 2 * 4 * h * T
    resid = 2 * h * T
    all_reduce = 2 * (tp - 1) / tp * h * T
    router = 2 * h * 8 * T + 6 * 8 * T  # gate GEMM + softmax/top-k
    experts = T * 2 * (2 * h * 2 * (i // tp) + 5 * (i // tp) + 2 * (i // tp) * h)  # 2 experts per token
    hand = proj + attn + rope + norms + resid + all_reduce + router + experts
    assert sum(r.flops for r in rows.values()) == pytest.approx(hand, rel=1e-12)
    assert rows["experts_gate_up"].flops == T * 2 * 2 * h * 2 * (i // tp)


def test_mixtral_decode_bytes_batch_1_and_256():
    d = dep("mistralai/Mixtral-8x7B-v0.1", "H200")
    m = d.model
    ctx = 1000
    expert_bytes = 3 * 4096 * 14336 * 2  # one expert, BF16
    embed_table = m.vocab_size * m.hidden_size * 2  # indexed, not read whole
    non_expert = m.total_params * 2 - 32 * 8 * expert_bytes - embed_table
    kv = m.kv_bytes_per_token * (ctx + 1)
    # batch 1: the 2 routed experts of each layer, i.e. the active parameters
    f1 = step_features(d, StepBatch.from_steps([[(ctx, 1)]]))
    weights_1 = non_expert + 32 * 2 * expert_bytes
    assert weights_1 == pytest.approx(m.active_params * 2 - embed_table)
    acts = f1.memory_bytes[0] - weights_1 - kv
    assert 0 < acts < 0.001 * weights_1  # activations of one token: noise beside the weights
    # batch 256: E (1 - (1 - k/E)^B) = 8 (1 - 0.75^256) distinct experts: all 8
    rows = layer_rows(d, StepBatch.from_steps([[(ctx, 1)] * 256]))
    touched = 8 * (1 - 0.75 ** 256)
    acts = 256 * 2 * ((4096 + 2 * 14336) + (14336 + 4096)) * 2  # 2 pairs per token, in and out of each GEMM
    expert_weights = rows["experts_gate_up"].mem_bytes + rows["experts_down"].mem_bytes - acts
    assert expert_weights == pytest.approx(touched * expert_bytes, rel=1e-12)
    assert 32 * touched * expert_bytes == pytest.approx(m.routed_expert_params * 2, rel=1e-9)  # all of them
    # in between, the expected distinct experts: batch 3 touches 8 (1 - 0.75^3) = 4.625 per layer
    f3 = step_features(d, StepBatch.from_steps([[(ctx, 1)] * 3]))
    assert f3.memory_bytes[0] - 3 * kv == pytest.approx(non_expert + 32 * 4.625 * expert_bytes, rel=0.001)


def test_mla_kv_bytes_per_token_and_decode_read():
    d = dep("deepseek-ai/DeepSeek-V3", "H200", tp=8)
    rows = layer_rows(d, StepBatch.from_steps([[(4000, 1)]]))
    latent = (512 + 64) * 1  # FP8 weights, but the KV cache stays 16-bit unless --kv-cache-dtype fp8
    kb = 2
    # every TP rank reads the whole latent of all 4001 tokens (it is shared by the heads)
    nh = 128 // 8
    q_o = (nh * (512 + 64) + nh * 512) * 2
    assert rows["attention"].mem_bytes == pytest.approx(latent * kb * 4001 + q_o + latent * kb)
    assert d.model.kv_bytes_per_token == 61 * latent * kb
    assert rows["attention"].flops == pytest.approx((4 * 512 + 2 * 64 + 5) * nh * 4001)


def test_fp8_gemms_at_the_fp8_peak_where_the_gpu_has_one():
    steps = StepBatch.from_steps([[(0, 65536)]])  # compute-bound expert GEMMs
    h100 = layer_rows(dep("deepseek-ai/DeepSeek-V3", "H200", tp=8), steps)
    a100 = layer_rows(dep("deepseek-ai/DeepSeek-V3", "A100", tp=8, pp=2), steps)
    # H200 FP8 dense peak, with the block-scaled FP8 scaling on the CUDA cores inside the compute time
    # (graph.dequant: one FMA per 128 FLOPs' K block of each output, FLOPs / 256 ops at 66.9e12 / 2 ops/s)
    # plus the activation quantisation pass's 3.5 ops per hidden element and token (graph.blockfp8);
    # FLOPs include the 64-row tiles (each GPU holds a slice of all 256 experts, one partial tile each)
    gu = h100["experts_gate_up"]
    quant_ops = 65536 * 7168 * 3.5 * 58 / 61  # 58 of 61 layers MoE
    t = gu.flops / 1979e12 + (gu.flops / 256 + quant_ops) / 33.45e12
    assert gu.roofline_tflops == pytest.approx(gu.flops / t / 1e12, rel=1e-9)
    useful = 65536 * 8 * 2 * 7168 * 2 * (2048 // 8) * 58 / 61
    assert gu.flops == pytest.approx(useful + 256 * 64 * 2 * 7168 * 2 * (2048 // 8) * 58 / 61, rel=1e-9)
    per_channel = layer_rows(dep("meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "H200", tp=8), steps)
    assert per_channel["experts_gate_up"].roofline_tflops == pytest.approx(1979.0)  # scales in the epilogue
    assert h100["attention"].roofline_tflops <= 989.5  # attention stays BF16
    # no FP8 on Ampere: BF16 peak, less the weights' conversion to BF16 (once per step: small at 65,536 tokens)
    gu = a100["experts_gate_up"]
    conv_s = 256 * 7168 * 2 * (2048 // 8) * 2 / 9.75e12 * 58 / 61  # all 256 experts' slices, 58 of 61 layers MoE
    assert gu.roofline_tflops == pytest.approx(gu.flops / (gu.flops / 312e12 + conv_s) / 1e12, rel=1e-9)
    assert h100["router"].roofline_tflops <= 989.5


def test_gpt_oss_mxfp4_expert_bytes():
    d = dep("openai/gpt-oss-120b", "H100")
    T = 4096  # prefill: every expert touched
    rows = layer_rows(d, StepBatch.from_steps([[(0, T)]]))
    u = 1 - (1 - 4 / 128) ** T
    weights = 128 * u * 2880 * 2 * 2880 * 4.25 / 8
    assert rows["experts_gate_up"].mem_bytes == pytest.approx(weights + 4 * T * (2880 + 2 * 2880) * 2)
    assert rows["q_proj"].mem_bytes == pytest.approx(2880 * 64 * 64 * 2 + 64 * 64 * 2 + T * (2880 + 64 * 64) * 2)


def test_expert_parallel_all_to_all_bytes():
    steps = StepBatch.from_steps([[(0, 512)]])
    d = dep("deepseek-ai/DeepSeek-V3", "H200", tp=8, dp=2, ep=16)
    rows = layer_rows(d, steps)
    share = 58 / 61  # MoE layers; the per-layer graph carries the average
    pairs = 8 / 8  # k copies of the 1/tp share of the tokens
    want = share * 512 * pairs * 15 / 16 * 7168 * 2
    assert rows["moe_dispatch"].net_bytes == pytest.approx(want)
    assert rows["moe_combine"].net_bytes == pytest.approx(want)
    assert "moe_dispatch" not in layer_graph(dep("deepseek-ai/DeepSeek-V3", "H200", tp=8, ep=8)).names  # ep == tp: all-reduce
    # useful FLOPs per GPU do not depend on how the experts are spread; the 64-row tiles do (graph.blockfp8:
    # EP 16: 16 whole experts per GPU, all touched by 1024 routed tokens; TP 8: slices of all 256)
    no_ep = layer_rows(dep("deepseek-ai/DeepSeek-V3", "H200", tp=8), steps)
    u16 = 1 - (1 - 8 / 256) ** 1024
    u8 = 1 - (1 - 8 / 256) ** 512
    tiles_ep = share * 16 * u16 * 64 * 2 * 7168 * 2 * 2048
    tiles_tp = share * 256 * u8 * 64 * 2 * 7168 * 2 * (2048 // 8)
    assert rows["experts_gate_up"].flops - tiles_ep == pytest.approx(no_ep["experts_gate_up"].flops - tiles_tp)


def test_moe_deployment_checks():
    with pytest.raises(InputError) as e:
        check_deployment(dep("meta-llama/Llama-3.1-8B", ep=2, tp=2))
    assert e.value.field == "ep"
    with pytest.raises(InputError) as e:
        Parallelism(tp=2, ep=3, dp=2)
    assert e.value.field == "ep"
    with pytest.raises(InputError) as e:  # 768 / 5 is not whole
        check_deployment(dep("Qwen/Qwen3-30B-A3B", tp=5))


@pytest.mark.parametrize("kind,W", [("sliding", 128), ("chunked", 8192)])
def test_local_attention_aggregates_brute_force(kind, W):
    model = load_model("openai/gpt-oss-20b" if kind == "sliding" else "meta-llama/Llama-4-Scout-17B-16E-Instruct")
    assert model.local_window == W
    cases = [(0, 1), (0, 300), (5, 1), (W - 1, 3), (W, 1), (3 * W + 17, 1), (2 * W - 5, W + 40), (0, 3 * W + 2)]
    got = slice_aggregates(np.array([n for _, n in cases], float), np.array([c for c, _ in cases], float), model)
    for (c, n), row in zip(cases, got):
        keys = []
        for p in range(c + 1, c + n + 1):  # 1-based query positions
            lo = max(1, p - W + 1) if kind == "sliding" else (p - 1) // W * W + 1
            keys.append(range(lo, p + 1))
        assert row[6] == sum(len(k) for k in keys)
        assert row[7] == len(set().union(*keys))


def test_gpt_oss_attention_mixes_full_and_sliding_layers():
    d = dep("openai/gpt-oss-20b")
    ctx = 10000
    rows = layer_rows(d, StepBatch.from_steps([[(ctx, 1)]]))
    kv_tok = 2 * 8 * 64 * 2  # K and V of 8 heads of 64, BF16
    # half the layers read all 10001 tokens, half read the 128-token window
    read = 0.5 * kv_tok * (ctx + 1) + 0.5 * kv_tok * 128
    assert rows["attention"].mem_bytes == pytest.approx(read + 2 * 64 * 64 * 2 + kv_tok)


def test_shares_sum_to_one_for_moe_steps():
    for d in (dep("Qwen/Qwen3-30B-A3B", "A100"), dep("deepseek-ai/DeepSeek-V3", "H200", tp=8),
              dep("openai/gpt-oss-20b", "L40S")):
        steps = StepBatch.from_steps([[(0, 300), (500, 1), (9000, 1)], [(70, 1)] * 5])
        sh = request_shares(d, steps)
        assert np.bincount(steps.request_step, weights=sh) == pytest.approx([1.0, 1.0])
        assert (sh > 0).all()


def test_moe_layer_graph_is_a_connected_dag():
    import networkx as nx

    for d in (dep("deepseek-ai/DeepSeek-V3", "H200", tp=8, dp=2, ep=16), dep("meta-llama/Llama-4-Maverick-17B-128E-Instruct", tp=8, pp=2),
              dep("mistralai/Mixtral-8x7B-v0.1")):
        g = layer_graph(d)
        G = nx.DiGraph()
        G.add_nodes_from(range(g.n_nodes))
        G.add_edges_from(g.edge_index.T.tolist())
        assert nx.is_directed_acyclic_graph(G) and nx.is_weakly_connected(G)


def test_mla_kv_capacity_counts_the_latent_on_every_tp_rank():
    from llmco2_sidecar.schedule import ACTIVATION_RESERVE_FRACTION, GPU_MEMORY_UTILIZATION, kv_capacity_tokens

    d = dep("deepseek-ai/DeepSeek-V3", "H200", tp=8)
    m, gpu = d.model, d.gpu
    usable = gpu.memory_bytes * 8 * (GPU_MEMORY_UTILIZATION - ACTIVATION_RESERVE_FRACTION) - m.weight_bytes
    cap = kv_capacity_tokens(d)
    per_gpu_token = 61 * 576 * 2  # each of the 8 GPUs caches the whole 70 KB latent of a token
    assert cap <= usable / (8 * per_gpu_token) + 16 and cap > 0.9 * usable / (8 * per_gpu_token)


def test_fast_step_roofline_matches_the_features_for_moe_and_fp8():
    from llmco2_sidecar.graph.step_time import step_roofline_s

    steps = StepBatch.from_steps([[(0, 300), (500, 1), (9000, 1)], [(70, 1)] * 5, [(0, 8192)]])
    for d in (dep("openai/gpt-oss-120b"), dep("deepseek-ai/DeepSeek-V3", "H200", tp=8, dp=2, ep=16),
              dep("meta-llama/Llama-4-Scout-17B-16E-Instruct", tp=4)):
        t, n = step_roofline_s(d, steps)
        np.testing.assert_allclose(t, step_features(d, steps, with_nodes=False).roofline_s, rtol=1e-12)
        assert list(n) == [3, 5, 1]
