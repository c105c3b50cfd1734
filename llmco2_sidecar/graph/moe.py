"""Kernels of a mixture-of-experts block on one GPU (per MoE layer; coefficient vectors over
:data:`~.kernels.EXTENDED_AGGREGATES`).

* ``moe_router``: the gate GEMM ``hidden -> E`` on every token, replicated on each TP rank (vLLM's
  replicated gate); 16-bit weights (checkpoints keep the router unquantized).
* ``moe_topk``: softmax (or sigmoid) over the E scores and the top-k choice, ``6 E`` FLOPs per token
  (5 for the normalisation, as the attention softmax, 1 comparison per score); writes k weights
  and k int32 ids per token.
* ``expert_linear`` (gate/up and down of the routed experts) and the gated activation between them:
  FLOPs on ``T x k`` token-expert pairs. Weight bytes on ``U``, the share of the GPU's experts the step
  touches: with ``B`` routed tokens, ``1 - (1 - k/E)^B`` under uniform routing, so decode at batch 1
  reads k experts per layer (the active parameters) and a batch of a few hundred tokens reads nearly
  all of them. Real routers are not uniform: popular experts make the distinct count smaller at
  mid batch sizes (fewer bytes), and DeepSeek's grouped routing (top-4 of 8 groups) concentrates
  each token's experts in half the groups. The uniform figure is an upper bound on the expected
  bytes at a given batch; at batch 1 and at large batches it is exact.
* ``shared_expert``: always-active experts (DeepSeek, Qwen2-MoE, Llama-4), a dense gated MLP.
* ``all_to_all``: expert parallelism across data-parallel ranks (``ep > tp``). Each TP rank
  dispatches its ``1/tp`` share of the tokens' ``k`` copies to the experts' owners, a share
  ``(ep - 1)/ep`` of them remote, and the combine returns as many; balanced routing assumed.
  With ``ep == tp`` (vLLM's ``--enable-expert-parallel`` without DP) the tokens are replicated on
  the TP ranks and the MLP all-reduce combines the experts' outputs: no all-to-all.

Tensor parallelism without EP splits every expert's intermediate size over the ``tp`` GPUs (each GPU
holds a slice of all ``E`` experts and processes all pairs); with EP each GPU holds ``E / ep``
whole experts and processes ``k / tp`` pairs per token on average. Either way a GPU computes
``T k 6 h i / tp`` FLOPs per MoE layer.
"""

from __future__ import annotations

from ..models.spec import ModelSpec
from ..workload import Parallelism
from .kernels import Kernel, Shapes, _x


def touched_share(tokens, model: ModelSpec, par: Parallelism):
    """``U``: expected share of a GPU's experts that ``tokens`` routed tokens of this replica touch
    (uniform routing). With EP across DP ranks the GPU also serves the other ``ep/tp - 1`` replicas'
    tokens, taken as equally many."""
    import numpy as np

    seen = np.asarray(tokens, dtype=np.float64) * (par.ep / par.tp if par.ep > 1 else 1.0)
    return 1.0 - np.power(1.0 - model.experts_per_token / model.num_experts, seen)


def moe_kernels(model: ModelSpec, par: Parallelism, s: Shapes, gemm_dtype: str = "") -> list[Kernel]:
    """The MoE block's kernels on one GPU, in execution order (one MoE layer)."""
    h, E, k = s.h, model.num_experts, model.experts_per_token
    ep, tp = par.ep, par.tp
    tp_e = tp if ep == 1 else 1  # experts' intermediate split
    i_g = model.expert_intermediate_size // tp_e
    on_gpu = E / ep  # experts held per GPU
    pairs = k * tp_e / tp  # token-expert pairs per token on this GPU
    wr = max(s.wb, 2.0)  # router weights stay 16-bit
    ks = [
        Kernel("router", "moe_router", (h, E, 0), _x(T=2 * h * E), _x(run=h * E * wr, T=(h + E) * s.ab)),
        Kernel("topk", "moe_topk", (E, k, 0), _x(T=6 * E), _x(T=E * s.ab + k * (s.ab + 4))),
    ]
    if ep > tp:
        a2a = pairs * (ep - 1) / ep * h * s.ab
        ks.append(Kernel("moe_dispatch", "all_to_all", (h, k, ep), _x(), _x(T=2 * pairs * h * s.ab), _x(T=a2a)))
    ks += [
        Kernel("experts_gate_up", "expert_linear", (h, 2 * i_g, on_gpu), _x(T=pairs * 2 * h * 2 * i_g),
               _x(U=on_gpu * h * 2 * i_g * s.wbe, T=pairs * (h + 2 * i_g) * s.ab), dtype=gemm_dtype),
        Kernel("experts_act", "activation", (i_g, i_g, on_gpu), _x(T=pairs * 5 * i_g), _x(T=pairs * 3 * i_g * s.ab)),
        Kernel("experts_down", "expert_linear", (i_g, h, on_gpu), _x(T=pairs * 2 * i_g * h),
               _x(U=on_gpu * i_g * h * s.wbe, T=pairs * (i_g + h) * s.ab), dtype=gemm_dtype),
    ]
    if ep > tp:
        a2a = pairs * (ep - 1) / ep * h * s.ab
        ks.append(Kernel("moe_combine", "all_to_all", (h, k, ep), _x(T=pairs * h), _x(T=2 * pairs * h * s.ab), _x(T=a2a)))
    if model.shared_expert_intermediate_size:
        i_s = model.shared_expert_intermediate_size // tp
        ks += [
            Kernel("shared_gate_up", "shared_expert", (h, 2 * i_s, 0), _x(T=2 * h * 2 * i_s),
                   _x(run=h * 2 * i_s * s.wb, T=(h + 2 * i_s) * s.ab), dtype=gemm_dtype),
            Kernel("shared_act", "activation", (i_s, i_s, 0), _x(T=5 * i_s), _x(T=3 * i_s * s.ab)),
            Kernel("shared_down", "shared_expert", (i_s, h, 0), _x(T=2 * i_s * h),
                   _x(run=i_s * h * s.wb, T=(i_s + h) * s.ab), dtype=gemm_dtype),
        ]
    return ks


def moe_edges(names: set[str], src: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Edges inside the MoE block fed by ``src`` (the post-attention norm) and its output nodes."""
    e = [(src, "router"), ("router", "topk"), (src, "experts_gate_up")]
    if "moe_dispatch" in names:
        e += [("topk", "moe_dispatch"), (src, "moe_dispatch"), ("moe_dispatch", "experts_gate_up")]
    else:
        e.append(("topk", "experts_gate_up"))
    e += [("experts_gate_up", "experts_act"), ("experts_act", "experts_down")]
    outs = ["experts_down"]
    if "moe_combine" in names:
        e += [("experts_down", "moe_combine"), ("topk", "moe_combine")]
        outs = ["moe_combine"]
    else:
        e.append(("topk", "experts_down"))  # routing weights scale the experts' outputs
    if "shared_gate_up" in names:
        e += [(src, "shared_gate_up"), ("shared_gate_up", "shared_act"), ("shared_act", "shared_down")]
        outs.append("shared_down")
    return e, outs
