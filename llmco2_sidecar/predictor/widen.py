"""Reading a model file trained on fewer feature columns than this code computes (node types added
since, such as the MoE kernels): its tensors widened so that it computes exactly what it did."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .gnn import GNNConfig


def widen(tensors: dict, meta: dict, cfg: "GNNConfig", path: Path) -> dict:
    """A model trained on fewer feature columns, read for this code's columns (added node types, such
    as the MoE kernels). Each new column gets mean 0 and std 1 in the normalisation and, in the first
    layer reading it, a zero weight, so the model computes exactly what it did on the graphs it was
    trained on. A new node type with a parent (:data:`~llmco2_sidecar.graph.kernels.KERNEL_TYPE_PARENT`)
    gets the parent column's weight divided by its std instead: such a node then reads as its parent
    type (its parent column is 0, normalised ``-mean/std``; the added ``1 / std`` makes up
    ``(1 - mean) / std``). Dropped or renamed columns cannot be mapped: retrain."""
    from ..graph.kernels import KERNEL_TYPE_PARENT

    old_n, new_n = list(meta["node_columns"]), cfg.node_columns()
    old_g, new_g = list(meta["global_columns"]), cfg.global_columns()
    if not (set(old_n) <= set(new_n) and set(old_g) <= set(new_g)):
        raise ValueError(f"{path}: feature columns differ from this code's graph features; retrain the model")
    out = dict(tensors)
    jn = [new_n.index(c) for c in old_n]
    jg = [new_g.index(c) for c in old_g]

    def widen_vec(key: str, cols: list[int], width: int, fill: float) -> None:
        v = torch.full((width,), fill, dtype=tensors[key].dtype)
        v[cols] = tensors[key]
        out[key] = v

    widen_vec("norm.node_mean", jn, len(new_n), 0.0)
    widen_vec("norm.node_std", jn, len(new_n), 1.0)
    widen_vec("norm.glob_mean", jg, len(new_g), 0.0)
    widen_vec("norm.glob_std", jg, len(new_g), 1.0)
    if "norm.glob_lo" in tensors:  # a column the model never saw is not clipped
        widen_vec("norm.glob_lo", jg, len(new_g), float("-inf"))
        widen_vec("norm.glob_hi", jg, len(new_g), float("inf"))
    std = tensors["norm.node_std"]
    for key, w in tensors.items():
        if key.endswith(("conv1.lin_l.weight", "conv1.lin_r.weight")):  # [hidden, F]
            nw = torch.zeros(w.shape[0], len(new_n), dtype=w.dtype)
            nw[:, jn] = w
            for c in new_n:
                parent = KERNEL_TYPE_PARENT.get(c.removeprefix("type_")) if c.startswith("type_") else None
                if c not in old_n and parent and f"type_{parent}" in old_n:
                    j = old_n.index(f"type_{parent}")
                    nw[:, new_n.index(c)] = w[:, j] / std[j]
            out[key] = nw
        elif key.endswith("lin1.weight"):  # [hidden, 2 hidden + G (+1 for the total head)]
            pooled = w.shape[1] - len(old_g) - (1 if ".tot." in key and cfg.two_stage else 0)
            extra = w.shape[1] - pooled - len(old_g)
            nw = torch.zeros(w.shape[0], pooled + len(new_g) + extra, dtype=w.dtype)
            nw[:, :pooled] = w[:, :pooled]
            nw[:, [pooled + j for j in jg]] = w[:, pooled:pooled + len(old_g)]
            if extra:
                nw[:, -extra:] = w[:, -extra:]
            out[key] = nw
    return out
