"""Held-out splits by group: whole model families, whole GPUs, whole sources.

A split never puts one group on both sides. Early stopping and hyper-parameters use a validation
split carved from the *training* groups only (:func:`validation_split`), never the test groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Split:
    """Indices into a list of samples. ``name`` reads e.g. ``"family=qwen3"`` or ``"gpu:H100->B200"``."""

    name: str
    train: np.ndarray
    test: np.ndarray


def leave_one_group_out(groups: Sequence[str], prefix: str) -> list[Split]:
    """One split per distinct group: test = that group, train = all others."""
    g = np.asarray(groups)
    out = []
    for value in sorted(set(g.tolist())):
        test = np.flatnonzero(g == value)
        train = np.flatnonzero(g != value)
        if len(train) and len(test):
            out.append(Split(f"{prefix}={value}", train, test))
    return out


def transfer_splits(groups: Sequence[str], prefix: str) -> list[Split]:
    """Train on one group, test on each other one (e.g. train H100 -> test B200 and the reverse)."""
    g = np.asarray(groups)
    values = sorted(set(g.tolist()))
    out = []
    for a in values:
        for b in values:
            if a != b:
                out.append(Split(f"{prefix}:{a}->{b}", np.flatnonzero(g == a), np.flatnonzero(g == b)))
    return out


def validation_split(train: np.ndarray, groups: Sequence[str], seed: int = 0, fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Split the training indices into (fit, validation) by group, never by row.

    With a single training group the rows are split at random (there is no other choice); the
    validation rows still come only from the training side.
    """
    g = np.asarray(groups)[train]
    values = sorted(set(g.tolist()))
    rng = np.random.default_rng(seed)
    if len(values) >= 3:
        n_val = max(1, int(round(fraction * len(values))))
        val_groups = set(rng.choice(values, size=n_val, replace=False).tolist())
        mask = np.array([v in val_groups for v in g])
    else:
        mask = rng.random(len(train)) < fraction
        if mask.all() or not mask.any():
            mask = np.zeros(len(train), dtype=bool)
            mask[: max(1, len(train) // 5)] = True
    return train[~mask], train[mask]


def check_disjoint(split: Split, groups: Sequence[str]) -> None:
    """Raise if a group appears on both sides of ``split``."""
    g = np.asarray(groups)
    shared = set(g[split.train].tolist()) & set(g[split.test].tolist())
    if shared:
        raise AssertionError(f"{split.name}: groups on both sides: {sorted(shared)}")

