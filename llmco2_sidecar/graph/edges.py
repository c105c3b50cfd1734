"""The data dependencies between the kernels of one layer (:func:`layer_edges`): the edges of the
kernel graph's DAG, the residual stream included; MLA's and the experts' own edges come from
:mod:`.mla` and :mod:`.moe`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .kernels import Kernel


def layer_edges(kernels: list[Kernel]) -> list[tuple[str, str]]:
    """Data dependencies between the kernels of one layer (a DAG, residual stream included)."""
    names = {k.name for k in kernels}
    seq_attn_out = [n for n in ("o_proj", "post_attn_out_norm", "attn_all_reduce") if n in names]
    seq_mlp_out = [n for n in ("post_mlp_out_norm", "mlp_all_reduce") if n in names]
    e: list[tuple[str, str]] = []
    if "kv_a_proj" in names:
        from .mla import mla_edges

        e += mla_edges(names)
        e.append(("v_up", "o_proj"))
    else:
        for proj in ("q_proj", "k_proj", "v_proj"):
            e.append(("input_norm", proj))
        if "qk_norm" in names:
            e += [("q_proj", "qk_norm"), ("k_proj", "qk_norm"), ("qk_norm", "rope")]
        else:
            e += [("q_proj", "rope"), ("k_proj", "rope")]
        if "attention" in names:
            e += [("rope", "attention"), ("v_proj", "attention"), ("attention", "o_proj")]
        else:
            e += [("rope", "attn_qk"), ("attn_qk", "attn_softmax"), ("attn_softmax", "attn_sv"), ("v_proj", "attn_sv"),
                  ("attn_sv", "o_proj")]
    e += list(zip(seq_attn_out, seq_attn_out[1:]))
    e.append((seq_attn_out[-1], "residual_add_1"))
    e.append(("input_norm", "residual_add_1"))  # residual stream (the layer input, read by the norm)
    e.append(("residual_add_1", "post_attention_norm"))
    mlp_outs: list[str] = []
    if "gate_proj" in names:
        e += [("post_attention_norm", "gate_proj"), ("post_attention_norm", "up_proj"), ("gate_proj", "act_mul"),
              ("up_proj", "act_mul"), ("act_mul", "down_proj")]
        mlp_outs.append("down_proj")
    elif "up_proj" in names:
        e += [("post_attention_norm", "up_proj"), ("up_proj", "act"), ("act", "down_proj")]
        mlp_outs.append("down_proj")
    if "router" in names:
        from .moe import moe_edges

        moe_e, moe_outs = moe_edges(names, "post_attention_norm")
        e += moe_e
        mlp_outs += moe_outs
    after = seq_mlp_out[0] if seq_mlp_out else "residual_add_2"
    e += [(o, after) for o in mlp_outs]
    e += list(zip(seq_mlp_out, seq_mlp_out[1:]))
    if seq_mlp_out:
        e.append((seq_mlp_out[-1], "residual_add_2"))
    e.append(("residual_add_1", "residual_add_2"))
    if "pp_send_recv" in names:
        e.append(("residual_add_2", "pp_send_recv"))
    return e
