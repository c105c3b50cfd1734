"""Hand counts for the CUDA-core work of low-precision weights (graph/dequant.py): weights converted to
16 bits where the GPU's tensor cores lack the format, block-scaled FP8 promotion; none for 16-bit
models on any GPU."""

import dataclasses

import numpy as np
import pytest

from llmco2_sidecar.graph import dequant, kernel_table, layer_graph, step_features
from llmco2_sidecar.graph import builder, kernel_time
from llmco2_sidecar.graph.builder import roofline
from llmco2_sidecar.graph.aggregates import aggregates
from llmco2_sidecar.hardware import load_catalog, load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.workload import Parallelism, StepBatch

# gpt-oss-20b (config.json): hidden 2880, expert intermediate 2880, 32 experts, 4 per token, 24 layers,
# every layer MoE; MXFP4 experts
H, I, E, K, LAYERS = 2880, 2880, 32, 4, 24
H100_OPS_S = 66.9e12 / 2  # FP32 66.9 TFLOP/s, one FMA (2 FLOPs) per lane and clock
A100_OPS_S = 19.5e12 / 2


def dep(model, gpu="H100", **par):
    return Deployment(load_model(model), load_gpu(gpu), Parallelism(**par))


def test_ops_per_element_from_the_formats():
    # MXFP4: place the 4-bit code (1) + one multiply for block scale and bias (1) + 2 ops per 32-element scale
    assert dequant.MXFP4_OPS_PER_ELEMENT == 2 + 2 / 32
    assert dequant.FP8_OPS_PER_ELEMENT == 2
    assert dequant.simt_ops_per_s(load_gpu("H100")) == pytest.approx(H100_OPS_S)


def test_gpt_oss_20b_moe_layer_batch_1_h100_vs_b200():
    steps = StepBatch.from_steps([[(1000, 1)]])  # one decode token
    # batch 1: the 4 routed experts of each layer, each 3 h i weights (gate, up, down)
    elems = K * 3 * H * I
    per_layer_s = elems * (2 + 2 / 32) / H100_OPS_S
    d = dep("openai/gpt-oss-20b", "H100")
    rows = {r.name: r for r in kernel_table(d, steps) if r.scope == "layer"}
    g = layer_graph(d)
    r = roofline(g.kernels, aggregates(steps, d).step, d)
    simt = dict(zip(g.names, r.simt_s[0]))
    assert simt["experts_gate_up"] + simt["experts_down"] == pytest.approx(per_layer_s, rel=1e-12)
    assert sum(simt.values()) == pytest.approx(per_layer_s, rel=1e-12)  # nothing else converts
    f = step_features(d, steps)
    assert f.simt_path_s[0] == pytest.approx(LAYERS * per_layer_s, rel=1e-12)  # about 147 us
    assert f.simt_s[0] == pytest.approx(LAYERS * per_layer_s, rel=1e-12)  # one GPU
    # memory-bound at batch 1: the Roofline time is the bytes' time, the compute part grew
    gu = rows["experts_gate_up"]
    assert gu.bound == "memory" and gu.time_s == pytest.approx(gu.mem_bytes / d.gpu.mem_bandwidth_bytes_s)
    # B200 reads MXFP4 in its tensor cores: no conversion
    b = dep("openai/gpt-oss-20b", "B200")
    fb = step_features(b, steps)
    assert fb.simt_s is None and fb.simt_path_s is None
    assert roofline(layer_graph(b).kernels, aggregates(steps, b).step, b).simt_s is None
    col = builder.GLOBAL_FEATURE_NAMES.index("log_simt_us")
    assert f.global_x[0, col] == pytest.approx(np.log1p(LAYERS * per_layer_s * 1e6), rel=1e-6)
    assert fb.global_x[0, col] == 0.0


def test_compute_bound_kernel_time_adds_the_conversion():
    d = dep("openai/gpt-oss-20b", "A100")  # A100: no FP4, FP32 19.5 TF; a 8192-token prefill is compute-bound
    steps = StepBatch.from_steps([[(0, 8192)]])
    rows = {r.name: r for r in kernel_table(d, steps) if r.scope == "layer"}
    gu = rows["experts_gate_up"]
    touched = E * (1 - (1 - K / E) ** 8192)  # all 32
    conv_s = touched * H * 2 * I * (2 + 2 / 32) / A100_OPS_S
    assert gu.bound == "compute"
    assert gu.time_s == pytest.approx(gu.flops / 312e12 + conv_s, rel=1e-9)


def test_fp8_weights_converted_on_a100_only():
    # Llama-3.1-405B-Instruct-FP8: per-channel FP8 GEMMs; q_proj's weights are h x (heads x head_dim)
    steps = StepBatch.from_steps([[(100, 1)]])
    a = dep("meta-llama/Llama-3.1-405B-Instruct-FP8", "A100", tp=8)
    m = a.model
    g = layer_graph(a)
    r = roofline(g.kernels, aggregates(steps, a).step, a)
    simt = dict(zip(g.names, r.simt_s[0]))
    q_elems = m.hidden_size * (m.num_heads // 8) * m.head_dim
    assert simt["q_proj"] == pytest.approx(q_elems * 2 / A100_OPS_S, rel=1e-12)
    assert simt["input_norm"] == 0.0  # only the FP8 GEMMs
    for gpu in ("H100", "H200", "B200", "L40S", "L4"):  # FP8 tensor cores, per-channel scales: nothing
        f = step_features(dep("meta-llama/Llama-3.1-405B-Instruct-FP8", gpu, tp=8), steps)
        assert f.simt_s is None, gpu


def test_block_scaled_fp8_promotion_on_hopper():
    # Qwen3-235B-A22B FP8 (128 x 128 blocks): one CUDA-core FMA per output element per 128-wide K block,
    # i.e. FLOPs / 256 ops, on H100 (plus the activation quantisation: test_graph_blockfp8); on B200 the
    # routed experts only (Triton fused-MoE kernel); none for per-channel FP8
    steps = StepBatch.from_steps([[(0, 512)]])
    d = dep("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "H100", tp=8)
    g = layer_graph(d)
    r = roofline(g.kernels, aggregates(steps, d).step, d)
    q = aggregates(steps, d).step @ np.array([k.qelems or (0.0,) * 8 for k in g.kernels]).T
    for j, k in enumerate(g.kernels):
        want = (r.flops[0, j] / 256 + 3.5 * q[0, j]) / H100_OPS_S if k.dtype == "fp8" else 0.0
        assert r.simt_s[0, j] == pytest.approx(want, rel=1e-12), k.name
    assert any(k.dtype == "fp8" for k in g.kernels)
    b = dep("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "B200", tp=8)
    rb = roofline(g.kernels, aggregates(steps, b).step, b)
    for j, k in enumerate(g.kernels):
        promo = rb.flops[0, j] / 256 if k.ktype == "expert_linear" else 0.0
        want = (promo + 3.5 * q[0, j]) / (75e12 / 2) if k.dtype == "fp8" else 0.0
        assert rb.simt_s[0, j] == pytest.approx(want, rel=1e-12), k.name
    mav = dep("meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "H100", tp=8)
    assert step_features(mav, steps).simt_s is None


@pytest.mark.parametrize("model", ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B", "mistralai/Mixtral-8x7B-v0.1",
                                   "Qwen/Qwen3-30B-A3B", "google/gemma-2-9b"])
def test_16_bit_models_unchanged_on_every_gpu(model, monkeypatch):
    """No 16-bit kernel is marked, no GPU gives it CUDA-core work, and its features are byte-identical to
    the graph's with the conversion switched off."""
    steps = StepBatch.from_steps([[(0, 300), (500, 1), (2000, 1)], [(300, 1), (501, 1)]])
    gpus = sorted(load_catalog().gpus)
    m = load_model(model)
    for gid in gpus:
        d = Deployment(m, load_gpu(gid), Parallelism())
        assert not any(k.wfmt for k in layer_graph(d).kernels + layer_graph(d).outside)
        f = step_features(d, steps)
        assert f.simt_s is None and f.global_x[:, -1].tolist() == [0.0, 0.0]
    on = [step_features(Deployment(m, load_gpu(g), Parallelism()), steps) for g in gpus]
    monkeypatch.setattr(kernel_time, "simt_seconds", lambda kernels, gpu: None)  # the Roofline's CUDA-core part
    builder._layer_graph.cache_clear()
    off = [step_features(Deployment(m, load_gpu(g), Parallelism()), steps) for g in gpus]
    builder._layer_graph.cache_clear()
    for a, b in zip(on, off):
        assert a.node_x.tobytes() == b.node_x.tobytes() and a.global_x.tobytes() == b.global_x.tobytes()
        assert a.roofline_s.tobytes() == b.roofline_s.tobytes()


def test_step_roofline_and_shares_match_the_graph():
    """The engine simulator's fast Roofline and the request shares see the same CUDA-core time."""
    from llmco2_sidecar.graph import request_shares
    from llmco2_sidecar.graph.step_time import step_roofline_s

    steps = StepBatch.from_steps([[(0, 2048), (100, 1)], [(2048, 1), (101, 1)]])
    for gpu in ("A100", "H100", "B200"):
        d = dep("openai/gpt-oss-120b", gpu)
        t, _ = step_roofline_s(d, steps)
        f = step_features(d, steps)
        assert t == pytest.approx(f.roofline_s, rel=1e-12)
        s = request_shares(d, steps)
        assert np.bincount(steps.request_step, weights=s) == pytest.approx([1.0, 1.0])
    # A100 without FP4: the prefill step is compute-bound and its time includes the conversion
    a = dep("openai/gpt-oss-120b", "A100")
    assert step_features(a, steps).simt_path_s[0] > 0


def test_a_gpu_without_fp32_figure_gets_no_conversion_term():
    h = load_gpu("H100")
    bare = dataclasses.replace(h, dense_tflops={k: v for k, v in h.dense_tflops.items() if k != "fp32"})
    f = step_features(Deployment(load_model("openai/gpt-oss-20b"), bare, Parallelism()), StepBatch.from_steps([[(0, 8)]]))
    assert f.simt_s is None


def test_graph_table_attainable_rate_counts_the_conversion():
    d = dep("openai/gpt-oss-20b", "A100")
    gu = {r.name: r for r in kernel_table(d, StepBatch.from_steps([[(0, 8192)]]))}["experts_gate_up"]
    assert gu.roofline_tflops * 1e12 == pytest.approx(gu.flops / gu.time_s, rel=1e-12) and gu.roofline_tflops < 312
