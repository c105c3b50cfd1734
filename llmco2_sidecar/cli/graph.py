"""``llmco2 graph``: the per-layer kernel graph of a batch with its Roofline figures."""

from __future__ import annotations

import argparse
import json

from ..workload import BatchQuery
from .helpfmt import DefaultsShown


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = DefaultsShown
    p.epilog = ("Prefill: one step computing the batch's prompts. Decode: one decode step at mid generation "
                "(context = prompt + output/2) -- the paper aggregates decode over the output tokens; "
                "`llmco2 estimate` does. Figures are per GPU; layer kernels are for one layer.")
    p.add_argument("--model", required=True, help="bundled Hugging Face id or path to a config.json")
    p.add_argument("--gpu", required=True, help="GPU id or alias")
    p.add_argument("--batch", type=int, required=True, help="requests in the batch")
    p.add_argument("--prompt-len", type=int, required=True, help="prompt tokens per request")
    p.add_argument("--output-len", type=int, default=128, help="generated tokens (sets the decode context)")
    p.add_argument("--phase", choices=("prefill", "decode"), default="prefill", help="which step of the batch to draw")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel stages")
    p.add_argument("--ep", type=int, default=1, help="expert-parallel size (MoE; vLLM: tp x dp)")
    p.add_argument("--dp", type=int, default=1, help="data-parallel replicas (with --ep > --tp)")
    p.add_argument("--unfused-attention", action="store_true", help="QK^T, softmax and SV as separate kernels")
    p.add_argument("--json", action="store_true", help="print the kernels and edges as JSON")


def _fmt(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def _moe_info(dep, steps) -> dict | None:
    m = dep.model
    if not m.is_moe:
        return None
    from ..graph.moe import touched_share

    share = float(touched_share(steps.new_tokens.sum(), m, dep.parallel))
    return {"experts": m.num_experts, "experts_per_token": m.experts_per_token, "moe_layers": m.num_moe_layers,
            "dense_layers": m.num_dense_layers, "expected_distinct_experts": m.num_experts * share}


def run(a: argparse.Namespace) -> int:
    from ..estimate import deployment_for
    from ..graph import kernel_table, layer_graph, ridge_points
    from ..workload import StepBatch

    q = BatchQuery(a.model, a.gpu, a.batch, a.prompt_len, a.output_len, a.tp, a.pp, ep=a.ep, dp=a.dp)
    dep = deployment_for(q)
    if a.phase == "prefill":
        steps = StepBatch.from_steps([[(0, q.prompt_len)] * q.batch])
    else:
        steps = StepBatch.from_steps([[(q.prompt_len + q.output_len // 2, 1)] * q.batch])
    rows = kernel_table(dep, steps, 0, fused_attention=not a.unfused_attention)
    g = layer_graph(dep, fused_attention=not a.unfused_attention)
    mrp, nrp = ridge_points(dep)
    if a.json:
        print(json.dumps({
            "model": dep.model.name, "gpu": dep.gpu.gpu_id, "phase": a.phase, "tp": a.tp, "pp": a.pp, "ep": a.ep,
            "moe": _moe_info(dep, steps),
            "ridge_points": {"memory_flop_per_byte": mrp, "network_flop_per_byte": nrp},
            "kernels": [r.__dict__ for r in rows],
            "edges": [[g.names[i], g.names[j]] for i, j in g.edge_index.T.tolist()],
        }))
        return 0
    print(f"{dep.model.name} on {dep.gpu.gpu_id}, TP {a.tp} PP {a.pp}, {a.phase}: batch {q.batch}, prompt {q.prompt_len}"
          + (f", decode context {q.prompt_len + q.output_len // 2}" if a.phase == "decode" else ""))
    print(f"ridge points: memory {mrp:.0f} FLOP/B, network {nrp:.0f} FLOP/B; per GPU; 'layer' rows x {dep.model.num_layers} layers")
    moe = _moe_info(dep, steps)
    if moe:
        print(f"MoE: {moe['experts']} experts, {moe['experts_per_token']} per token, {moe['moe_layers']} MoE + "
              f"{moe['dense_layers']} dense layers; this step touches {moe['expected_distinct_experts']:.1f} distinct "
              f"experts per MoE layer (uniform routing); layer rows are per-layer averages over the layer kinds")
    head = f"{'kernel':<22}{'scope':<7}{'FLOPs':>10}{'mem B':>10}{'net B':>10}{'intensity':>11}{'roof TF/s':>11}  {'bound':<8}{'time us':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.name:<22}{r.scope:<7}{_fmt(r.flops):>10}{_fmt(r.mem_bytes):>10}{_fmt(r.net_bytes):>10}"
              f"{r.intensity:>11.1f}{r.roofline_tflops:>11.1f}  {r.bound:<8}{r.time_s * 1e6:>10.1f}")
    layer_t = sum(r.time_s for r in rows if r.scope == "layer")
    other_t = sum(r.time_s for r in rows if r.scope == "model")
    print(f"Roofline time per step: {(layer_t * dep.model.num_layers + other_t) * 1e3:.3f} ms "
          f"({dep.model.num_layers} x {layer_t * 1e6:.1f} us + {other_t * 1e6:.1f} us outside the layers)")
    return 0

