"""How much of the GNN's residual over the physics prior to keep, chosen on a shift like the test's.

``log E = log prior + scale x clip(residual, -bound, bound)`` (:meth:`.gnn.GNNPredictor.shrink`).
:func:`.training.choose_shrink` picks ``(scale, bound)`` on held-out *architectures* inside the
training side, which cannot see a change of GPU or of source (engine, lab): there the chosen scale
stays near 1 although the residual makes cross-source transfer worse. Here the choice is made on
inner folds that each leave one GPU kind (``by="gpu"``), one source (``by="source"``), one model
family (``by="family"``) or one architecture (``by="model"``) of the training side out: the ensemble is retrained on the rest (early-stopped on held-out architectures of
the rest, as always), its residual scored on the left-out group for every point of the grid
(:data:`.training.SHRINK_SCALES` x :data:`.training.SHRINK_BOUNDS`), and the point with the lowest
mean MAPE over the folds is applied to the model trained on the whole training side.

Only the training side's rows ever enter a fold, so a split's test group is never seen. A training
side with a single GPU kind (or source) has no fold of that kind: the residual is then kept whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .dataset import Example, Featurized, pack
from .gnn import GNNConfig, GNNPredictor
from .splits import validation_split
from .training import (HYPER_GRID, SHRINK_BOUNDS, SHRINK_SCALES, TrainOptions, pick_shrink, set_shrink,
                       shrink_grid_mape, train_ensemble)

#: What an inner fold may leave out (``--shrink-by``): a GPU kind, a source, a model family, an
#: architecture (``model``: fine-tunes and FP8 copies of one architecture are one group), or any of them
#: (comma-separated, e.g. ``gpu,source``).
SHRINK_BY = ("gpu", "source", "family", "model")


def parse_shrink_by(value: str | None) -> tuple[str, ...]:
    """``"gpu"``, ``"source"``, ``"family"``, ``"model"`` or a comma list of them -> the kinds; empty or ``"none"`` -> ``()``. Raises
    ``ValueError`` naming the bad kind."""
    if not value or value.strip().lower() == "none":
        return ()
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in value.split(",") if k.strip()))
    bad = [k for k in kinds if k not in SHRINK_BY]
    if bad:
        raise ValueError(f"unknown kind {bad[0]!r} (choose from {', '.join(SHRINK_BY)}, comma-separated, or none)")
    return kinds


@dataclass(frozen=True)
class InnerFold:
    """One inner fold of a training side: fit on ``fit`` (indices into the examples), score on ``held``."""

    name: str
    fit: np.ndarray
    held: np.ndarray


def inner_folds(examples: list[Example], train: np.ndarray, by: tuple[str, ...]) -> list[InnerFold]:
    """Leave-one-group-out folds *inside* ``train``: one per GPU kind, source, family or architecture
    present there, as ``by`` names (a kind with a single group gives none). Folds holding out the same rows are kept once."""
    train = np.asarray(train)
    out: list[InnerFold] = []
    seen: set[bytes] = set()
    for kind in by:
        g = np.array([getattr(examples[i], kind) for i in train])
        values = sorted(set(g.tolist()))
        if len(values) < 2:
            continue
        for v in values:
            held, fit = train[g == v], train[g != v]
            key = np.sort(held).tobytes()
            if key in seen:
                continue
            seen.add(key)
            out.append(InnerFold(f"{kind}={v}", fit, held))
    return out


def choose_shrink_inner(
    examples: list[Example],
    feats: list[Featurized],
    train: np.ndarray,
    by: tuple[str, ...],
    config: GNNConfig,
    options: TrainOptions,
    groups: list[str],
    inner_epochs: int | None = None,
    grid: tuple[dict, ...] = HYPER_GRID,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[float, float, dict]:
    """``(scale, bound, info)`` minimising the mean MAPE over :func:`inner_folds` of ``train``.

    ``groups``: each example's architecture (for the inner early-stopping split, as in every fit).
    ``inner_epochs``: epochs of the inner fits (default: ``options.epochs``). ``info`` holds the folds,
    each fold's MAPE with the residual whole and with the chosen shrink, and the prior alone's (scale 0).
    Without a fold the residual is kept whole (1, inf)."""
    folds = inner_folds(examples, train, by)
    info: dict = {"shrink_by": ",".join(by), "folds": []}
    if not folds:
        info["note"] = "no inner fold (a single GPU kind / source on the training side): residual kept whole"
        return 1.0, float("inf"), info
    opts = TrainOptions(**{**options.__dict__, "epochs": inner_epochs or options.epochs})
    grids = []
    for fold in folds:
        fit_idx, val_idx = validation_split(fold.fit, groups, seed=options.seed)
        inner = train_ensemble(examples, feats, fit_idx, val_idx, config, opts, grid=grid, progress=progress, shrink=False)
        hp = pack([feats[i] for i in fold.held], [examples[i] for i in fold.held], inner._node_idx, inner._glob_idx,
                  inner.state.norm, clip=inner.state.clip_inputs)  # scored as the model will predict
        g = shrink_grid_mape(inner, hp)
        grids.append(g)
        info["folds"].append({"held": fold.name, "n_fit": int(len(fold.fit)), "n_held": int(len(fold.held)),
                              "mape_whole": float(g[0, 0] * 100), "mape_prior": float(g[0, -1] * 100)})
        if log is not None:
            log(f"inner fold {fold.name} (fit {len(fold.fit)}, held {len(fold.held)}): residual whole "
                f"{g[0, 0] * 100:.1f}%, prior alone {g[0, -1] * 100:.1f}%, best {g.min() * 100:.1f}%")
    mean = np.mean(grids, axis=0)
    scale, bound = pick_shrink(mean)
    i, j = _grid_index(scale, bound)
    for f, g in zip(info["folds"], grids):
        f["mape_chosen"] = float(g[i, j] * 100)
    info.update({"inner_epochs": opts.epochs, "mean_mape_whole": float(mean[0, 0] * 100),
                 "mean_mape_chosen": float(mean[i, j] * 100), "mean_mape_prior": float(mean[0, -1] * 100)})
    return scale, bound, info


def _grid_index(scale: float, bound: float) -> tuple[int, int]:
    return SHRINK_BOUNDS.index(bound), SHRINK_SCALES.index(scale)


def apply_inner_shrink(model: GNNPredictor, scale: float, bound: float, info: dict) -> GNNPredictor:
    """Set the inner folds' choice on ``model`` (trained on the whole training side)."""
    set_shrink(model, scale, bound)
    model.state.info["shrink_inner"] = info
    return model
