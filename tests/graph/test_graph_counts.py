"""Hand-checked counts for the kernel graph (derived in the test, not taken from the code)."""

import numpy as np
import pytest

from llmco2_sidecar.errors import InputError
from llmco2_sidecar.graph import kernel_table, layer_graph, step_features
from llmco2_sidecar.graph.builder import check_deployment
from llmco2_sidecar.workload import StepBatch


def test_llama2_7b_prefill_flops_hand_count(dep):
    d = dep()
    m = d.model
    T = 1024
    f = step_features(d, StepBatch.from_steps([[(0, T)]]))
    # 2 x non-embedding parameters x tokens, plus attention: per layer and head, 4*d_head FLOPs per
    # (query, key) pair for QK^T and SV (+5 for softmax), T(T+1)/2 causal pairs; LM head for one row.
    pairs = T * (T + 1) / 2
    attention = m.num_layers * m.num_heads * (4 * m.head_dim + 5) * pairs
    lm_head = 2 * m.hidden_size * m.vocab_size
    hand = 2 * m.non_embedding_params * T + attention + lm_head
    assert f.flops[0] == pytest.approx(hand, rel=0.02)
    assert m.non_embedding_params == pytest.approx(6.476e9, rel=1e-3)


def test_llama2_7b_decode_bytes_are_weights_plus_kv(dep):
    d = dep()
    m = d.model
    ctx = 2000
    f = step_features(d, StepBatch.from_steps([[(ctx, 1)]]))
    weights_read = (m.total_params - m.vocab_size * m.hidden_size) * 2  # the embedding table is only indexed
    kv_read = m.kv_bytes_per_token * (ctx + 1)
    assert f.memory_bytes[0] == pytest.approx(weights_read + kv_read, rel=0.01)


def test_gqa_uses_kv_heads_for_kv_reads(dep):
    d = dep("meta-llama/Meta-Llama-3-8B")  # 32 query heads, 8 KV heads
    m = d.model
    ctx = 4096
    rows = {r.name: r for r in kernel_table(d, StepBatch.from_steps([[(ctx, 1)]]))}
    kv_bytes = 2 * m.num_kv_heads * m.head_dim * 2 * (ctx + 1)
    q_o_bytes = 2 * m.num_heads * m.head_dim * 2
    kv_write = 2 * m.num_kv_heads * m.head_dim * 2
    assert rows["attention"].mem_bytes == pytest.approx(kv_bytes + q_o_bytes + kv_write)
    assert rows["k_proj"].flops == 2 * m.hidden_size * m.num_kv_heads * m.head_dim
    assert rows["q_proj"].flops == 4 * rows["k_proj"].flops  # GQA ratio 4


def test_tp_conserves_work_and_all_reduce_bytes(dep):
    steps = StepBatch.from_steps([[(0, 512), (300, 1), (900, 1)]])
    base = step_features(dep("meta-llama/Llama-2-70b-hf", "H100", tp=1), steps)
    for tp in (2, 4, 8):
        d = dep("meta-llama/Llama-2-70b-hf", "H100", tp=tp)
        per_gpu = {r.name: r for r in kernel_table(d, steps)}
        ref = {r.name: r for r in kernel_table(dep("meta-llama/Llama-2-70b-hf", "H100"), steps)}
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "attention"):
            assert per_gpu[name].flops * tp == pytest.approx(ref[name].flops), name
        T, h = 514, d.model.hidden_size
        assert per_gpu["attn_all_reduce"].net_bytes == pytest.approx(2 * (tp - 1) / tp * T * h * 2)
        assert per_gpu["mlp_all_reduce"].net_bytes == per_gpu["attn_all_reduce"].net_bytes
        for name in ("input_norm", "post_attention_norm", "residual_add_1", "residual_add_2"):
            assert per_gpu[name].flops == ref[name].flops, name  # replicated on every TP rank, not split
        f = step_features(d, steps)
        # replica FLOPs = TP=1 FLOPs + the all-reduce additions + the replicated kernels on the other ranks
        L = d.model.num_layers
        reduce_adds = (2 * L + 1) * (tp - 1) / tp * T * h * tp
        replicated = L * sum(ref[n].flops for n in ("input_norm", "post_attention_norm", "residual_add_1",
                                                     "residual_add_2")) + ref["final_norm"].flops
        assert f.flops[0] == pytest.approx(base.flops[0] + reduce_adds + (tp - 1) * replicated, rel=1e-9)
        assert base.network_bytes[0] == 0 and f.network_bytes[0] > 0


def test_pp_send_recv_bytes(dep):
    steps = StepBatch.from_steps([[(0, 128)] * 4])
    for pp in (2, 4):
        d = dep("meta-llama/Llama-2-13b-hf", "A100", pp=pp)
        f = step_features(d, steps)
        assert f.network_bytes[0] == pytest.approx((pp - 1) * 512 * d.model.hidden_size * 2)
        assert "pp_send_recv" in layer_graph(d).names


def test_exact_composition_not_mean_length(dep):
    d = dep()
    # a prefill chunk of 100 tokens on 50 cached: 100*50 + 100*101/2 causal pairs
    r = {x.name: x for x in kernel_table(d, StepBatch.from_steps([[(50, 100)]]))}
    m = d.model
    assert r["attention"].flops == pytest.approx(m.num_heads * (4 * m.head_dim + 5) * (100 * 50 + 100 * 101 / 2))
    # two decodes at contexts 0 and 2000 read the same KV as two at 1000 (linear), but a long and a short
    # prefill chunk do more attention work than two medium ones (quadratic): the mean would be wrong
    a = step_features(d, StepBatch.from_steps([[(0, 10), (0, 1990)], [(0, 1000), (0, 1000)]]))
    assert a.flops[0] > a.flops[1]


def test_monotone_in_tokens_and_batch(dep):
    d = dep()
    steps = StepBatch.from_steps([[(0, p)] * b for b in (1, 2, 4) for p in (16, 256, 2048)])
    f = step_features(d, steps)
    for arr in (f.flops, f.memory_bytes, f.roofline_s):
        grid = arr.reshape(3, 3)
        assert (np.diff(grid, axis=0) > 0).all() and (np.diff(grid, axis=1) > 0).all()


def test_layer_graph_is_a_connected_dag(dep):
    for d in (dep(), dep("Qwen/Qwen3-8B", "H100", tp=2, pp=2), dep("google/gemma-2-9b")):
        g = layer_graph(d)
        n = g.n_nodes
        indeg = np.bincount(g.edge_index[1], minlength=n)
        order, frontier = [], [i for i in range(n) if indeg[i] == 0]
        while frontier:
            i = frontier.pop()
            order.append(i)
            for j in g.edge_index[1][g.edge_index[0] == i]:
                indeg[j] -= 1
                if indeg[j] == 0:
                    frontier.append(j)
        assert len(order) == n  # acyclic
        touched = set(g.edge_index.ravel().tolist())
        assert touched == set(range(n))  # no isolated kernel


def test_vectorised_equals_one_by_one(dep):
    d = dep("Qwen/Qwen2.5-7B", "H100", tp=2)
    steps = [[(0, 300), (40, 1)], [(7, 1)] * 5, [(100, 64), (0, 3), (2000, 1)]]
    together = step_features(d, StepBatch.from_steps(steps))
    for i, s in enumerate(steps):
        alone = step_features(d, StepBatch.from_steps([s]))
        np.testing.assert_allclose(together.node_x[i], alone.node_x[0], rtol=1e-6)
        np.testing.assert_allclose(together.global_x[i], alone.global_x[0], rtol=1e-6)
        assert together.flops[i] == pytest.approx(alone.flops[0])


def test_prefill_and_decode_feature_sets(dep):
    d = dep()
    f = step_features(d, StepBatch.from_steps([[(0, 256), (500, 1), (600, 1)]]))
    assert f.prefill_tokens[0] == 256 and f.decode_tokens[0] == 2 and f.n_requests[0] == 3
    assert f.flops_prefill[0] + f.flops_decode[0] == pytest.approx(f.flops[0], rel=1e-9)
    assert f.node_x.shape[2] == len(f.node_feature_names)
    assert f.global_x.shape[1] == len(f.global_feature_names)


def test_bad_parallelism_named(dep):
    with pytest.raises(InputError) as e:
        check_deployment(dep("meta-llama/Llama-2-7b-hf", "A100", tp=3))
    assert e.value.field == "tp"
    with pytest.raises(InputError) as e:
        check_deployment(dep("meta-llama/Llama-2-7b-hf", "A100", pp=64))
    assert e.value.field == "pp"
    with pytest.raises(InputError):
        StepBatch.from_steps([[(0, 0)]])


def test_unfused_attention_materialises_scores(dep):
    d = dep()
    steps = StepBatch.from_steps([[(0, 512)]])
    fused = {r.name: r for r in kernel_table(d, steps)}
    unfused = {r.name: r for r in kernel_table(d, steps, fused_attention=False)}
    assert {"attn_qk", "attn_softmax", "attn_sv"} <= set(unfused) and "attention" not in unfused
    total = sum(unfused[n].flops for n in ("attn_qk", "attn_softmax", "attn_sv"))
    assert total == pytest.approx(fused["attention"].flops)
    pairs = 512 * 513 / 2
    score_bytes = 4 * d.model.num_heads * pairs * 2  # written by QK^T, read+written by softmax, read by SV
    extra = sum(unfused[n].mem_bytes for n in ("attn_qk", "attn_softmax", "attn_sv")) - fused["attention"].mem_bytes
    assert extra == pytest.approx(score_bytes)
