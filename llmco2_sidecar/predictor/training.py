"""Training the step predictor (and its GNN variants) through the weighted-step examples.

Loss on each example: ``(log(sum_s w_s E_s / denom) - log(target))^2`` (a relative error, symmetric
in over- and under-prediction); measured prefill examples also supervise head 1. A small penalty
keeps head 1's residual near its prior where no prefill label exists (ML.ENERGY has none). Adam,
full batch, early stopping on a validation split drawn from the training groups.

Targeted refinement (paper 4.1, applied to the labels we have): after the first pass the training
examples with the highest errors are up-weighted and training continues (``refine_rounds``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .dataset import Example, Featurized, SOURCE_MLENERGY, example_duration_terms, example_prior_terms, fit_normalizer, pack
from .gnn import ALL_GLOBALS, GNNConfig, GNNPredictor, ModelState
from ..graph import NODE_FEATURE_NAMES
from .layers import TwoStageGNN
from .prior import DurationModel, PhysicsPrior


@dataclass
class TrainOptions:
    epochs: int = 150
    lr: float = 3e-3
    weight_decay: float = 1e-2
    prefill_reg: float = 0.05
    residual_reg: float = 1.0
    eval_every: int = 5
    refine_rounds: int = 0
    refine_epochs: int = 100
    seed: int = 0
    #: the MoE recipe's training-side choices (``--moe-recipe``): the prior's design by inner
    #: leave-one-architecture-out (:meth:`~.prior.PhysicsPrior.fit`) and the GNN residual's scale and
    #: bound on the validation architectures (:func:`choose_shrink`). Off: the shipped dense recipe.
    choose_on_validation: bool = False
    #: the fitted model clips its GNN's global inputs to the training side's range (ModelState.clip_inputs)
    clip_inputs: bool = False
    #: the physics prior fitted on the whole training side (the networks' rows and their early-stopping
    #: architectures) instead of the networks' rows only; off: the recipe of every shipped model so far
    prior_on_all: bool = False
    #: what the duration model adds its fitted overheads to (:data:`~.prior.DURATION_BASES`): ``kernel``,
    #: the Roofline time with its compute-bound kernels at the GPU's measured GEMM efficiency (models
    #: trained from 2026-12-07), or ``roofline``, the Roofline time (the models before)
    duration_base: str = "kernel"


def fit_duration(feats: list[Featurized], examples: list[Example], idx: np.ndarray,
                 base: str = "kernel") -> DurationModel:
    """Step-time model for steps without an observed duration, fitted on the newest engine's rows
    (ML.ENERGY v3, vLLM 0.11.1) when the training side has any: an older engine's overhead (v2's
    vLLM 0.4.2) is not what a user of today's vLLM sees. Measured totals are used too. ``base``: see
    :class:`~.prior.DurationModel`."""
    idx = np.asarray(idx)
    newest = [i for i in idx if examples[i].source == SOURCE_MLENERGY]
    pool = newest if newest else list(idx)
    use = [i for i in pool if examples[i].head == "total"]
    model = DurationModel(base=base)
    a, y = example_duration_terms([feats[i] for i in use], [examples[i] for i in use], model)
    return model.fit(a, y)


def fit_prior(feats: list[Featurized], examples: list[Example], idx: np.ndarray, choose_design: bool = False) -> PhysicsPrior:
    """The physics prior on ``idx``; with ``choose_design`` its design (one fit over every row, or the
    16-bit physics from 16-bit rows plus the low-precision terms) by inner leave-one-architecture-out."""
    a = example_prior_terms([feats[i] for i in idx], [examples[i] for i in idx])
    y = np.array([examples[i].target for i in idx])
    return PhysicsPrior().fit(a, y, groups=[examples[i].model for i in idx] if choose_design else None)


def train_gnn(
    examples: list[Example],
    feats: list[Featurized],
    train_idx: np.ndarray,
    val_idx: np.ndarray | None,
    config: GNNConfig,
    options: TrainOptions = TrainOptions(),
    progress: Callable[[int], None] | None = None,
) -> GNNPredictor:
    """Fit prior, duration model and GNN on ``train_idx``; early-stop on ``val_idx`` (train groups only)."""
    torch.manual_seed(options.seed)
    np.random.seed(options.seed)
    train_idx = np.asarray(train_idx)
    prior_idx = train_idx
    if options.prior_on_all and val_idx is not None and len(val_idx):
        prior_idx = np.concatenate([train_idx, np.asarray(val_idx)])
    prior = fit_prior(feats, examples, prior_idx, options.choose_on_validation) if config.use_prior else PhysicsPrior()
    duration = fit_duration(feats, examples, train_idx, options.duration_base)
    node_cols = np.array([NODE_FEATURE_NAMES.index(c) for c in config.node_columns()])
    glob_cols = np.array([ALL_GLOBALS.index(c) for c in config.global_columns()])
    tr_feats = [feats[i] for i in train_idx]
    tr_ex = [examples[i] for i in train_idx]
    norm = fit_normalizer(tr_feats, node_cols, glob_cols)
    # constant log step energy for the prior-free variants: mean log of (target * denom / weight sum)
    log_bias = float(np.mean([np.log(e.target * e.denom / e.weight.sum()) for e in tr_ex]))
    net = TwoStageGNN(len(node_cols), len(glob_cols), config.hidden, config.two_stage)
    model = GNNPredictor(net, ModelState(config, norm, prior, duration, log_bias))
    train_p = pack(tr_feats, tr_ex, node_cols, glob_cols, norm)
    val_p = None
    if val_idx is not None and len(val_idx):
        val_p = pack([feats[i] for i in val_idx], [examples[i] for i in val_idx], node_cols, glob_cols, norm)

    log_target = torch.log(train_p.target)
    ex_weight = torch.ones(train_p.n_examples, dtype=torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    best = (float("inf"), copy.deepcopy(net.state_dict()))
    best_epoch = options.epochs
    total_epochs = options.epochs + options.refine_rounds * options.refine_epochs
    pre_mask = train_p.is_prefill
    with torch.no_grad():
        prior_tot_log, prior_pre_log = model.log_priors(torch.cat([g.prior_tot for g in train_p.groups]),
                                            torch.cat([g.prior_pre for g in train_p.groups]))
    for epoch in range(total_epochs):
        if options.refine_rounds and epoch >= options.epochs and (epoch - options.epochs) % options.refine_epochs == 0:
            # targeted refinement: up-weight the worst-predicted training examples
            with torch.no_grad():
                err = torch.abs(torch.from_numpy(model.predict_packed(train_p)) / train_p.target - 1)
            ex_weight = (err / err.median().clamp(min=1e-6)).clamp(1.0, 5.0)
        net.train()
        opt.zero_grad()
        lp, lt, pos = model.forward_packed(train_p)
        contrib = train_p.step_weight[pos] * model.bounded_energy(train_p, lt)
        pred = torch.zeros(train_p.n_examples, dtype=torch.float64).index_add(0, train_p.step_example[pos], contrib)
        loss = (ex_weight * (torch.log(pred) - log_target) ** 2).sum() / ex_weight.sum()
        if options.residual_reg and config.use_prior:  # keep the GNN a correction of the prior
            loss = loss + options.residual_reg * ((lt - prior_tot_log) ** 2).mean()
        if config.two_stage:
            ex_of_step = train_p.step_example[pos]
            step_is_pre = pre_mask[ex_of_step]
            if step_is_pre.any():  # measured prefill labels (single-step examples)
                lp_pre = lp[step_is_pre].double()
                loss = loss + ((lp_pre - log_target[ex_of_step[step_is_pre]]) ** 2).mean()
            if config.use_prior:  # no prefill label: keep head 1 near its prior
                loss = loss + options.prefill_reg * ((lp - prior_pre_log) ** 2).mean()
        loss.backward()
        opt.step()
        net.eval()
        if val_p is not None and (epoch + 1) % options.eval_every == 0:
            pred_v = model.predict_packed(val_p)
            v = float(np.mean(np.abs(pred_v / val_p.target.numpy() - 1)))
            if v < best[0]:
                best = (v, copy.deepcopy(net.state_dict()))
                best_epoch = epoch + 1
        if progress is not None:
            progress(1)
    if val_p is not None:
        net.load_state_dict(best[1])
        model.state.info["val_mape"] = best[0] * 100
        model.state.info["best_epoch"] = best_epoch
    net.eval()
    return model


#: Hyper-parameter points every GNN variant trains (ours and the GNN baselines alike): a small,
#: strongly regularised net and a larger, lightly regularised one (the latter suits the prior-free
#: variants, which must learn the energy scale themselves). Their log predictions are averaged: on
#: the validation splits neither point won consistently, and the average was never far from the
#: better one.
HYPER_GRID = ({"hidden": 16, "weight_decay": 1e-2, "residual_reg": 1.0},
              {"hidden": 32, "weight_decay": 1e-4, "residual_reg": 0.0})


def bagged_grid(grid: tuple[dict, ...], bag: int, seed: int) -> tuple[dict, ...]:
    """Every grid point trained from ``bag`` initialisations (torch seeds ``seed``, ``seed + 1000``, ...;
    same data, same early-stopping architectures); ``bag`` 1: ``grid`` itself. The ensemble averages
    all of them (``--bag``: the held-out figures of one initialisation swing by several points)."""
    if bag <= 1:
        return grid
    return tuple({**p, "seed": seed + 1000 * k} for k in range(bag) for p in grid)


def with_simt_feature(config: GNNConfig, feats: list[Featurized]) -> GNNConfig:
    """``config`` with ``simt_feature`` on when any of ``feats`` (a training side) has CUDA-core
    conversion work (a non-zero ``log_simt_us``), else as it is (dense 16-bit data: the columns, and so
    the trained file, of before the feature)."""
    col = ALL_GLOBALS.index("log_simt_us")
    if config.simt_feature or not any(np.any(fe.global_x[:, col] != 0) for fe in feats):
        return config
    return GNNConfig(**{**config.__dict__, "simt_feature": True})


def train_ensemble(
    examples: list[Example],
    feats: list[Featurized],
    fit_idx: np.ndarray,
    val_idx: np.ndarray | None,
    config: GNNConfig,
    options: TrainOptions = TrainOptions(),
    grid: tuple[dict, ...] = HYPER_GRID,
    progress: Callable[[int], None] | None = None,
    shrink: bool | None = None,
) -> GNNPredictor:
    """Train one network per grid point (each early-stopped on ``val_idx``) and average them; with a
    prior and validation rows, :func:`choose_shrink` sets how much of the GNN's residual is kept. The
    networks read ``log_simt_us`` when a row of the training side (fit and validation rows) has CUDA-core
    conversion work (:func:`with_simt_feature`)."""
    side = np.concatenate([np.asarray(fit_idx), np.asarray(val_idx if val_idx is not None else [], dtype=np.int64)])
    config = with_simt_feature(config, [feats[i] for i in side])
    members = []
    for point in grid:
        cfg = GNNConfig(**{**config.__dict__, "hidden": point.get("hidden", config.hidden)})
        opts = TrainOptions(**{**options.__dict__, **{k: v for k, v in point.items() if k != "hidden"}})
        members.append(train_gnn(examples, feats, fit_idx, val_idx, cfg, opts, progress=progress))

    first = members[0]
    state = ModelState(config, first.state.norm, first.state.prior, first.state.duration, first.state.log_bias,
                       {"members": [dict(p) for p in grid],
                        "member_val_mape": [m.state.info.get("val_mape") for m in members],
                        "member_best_epoch": [m.state.info.get("best_epoch") for m in members]})
    # the range of the globals over the whole training side (fit and validation rows): what the
    # network has seen, for ``clip_inputs`` (a no-op on these rows, so training is unchanged by it)
    from .dataset import global_range

    state.norm = {**state.norm, **global_range([feats[i] for i in side], first._glob_idx)}
    state.clip_inputs = options.clip_inputs
    model = GNNPredictor([m.net for m in members], state)
    if val_idx is not None and len(val_idx):
        from .dataset import pack

        vp = pack([feats[i] for i in val_idx], [examples[i] for i in val_idx], model._node_idx, model._glob_idx, state.norm,
                  clip=state.clip_inputs)
        if config.use_prior and (options.choose_on_validation if shrink is None else shrink):
            choose_shrink(model, vp)
        state.info["val_mape"] = float(np.mean(np.abs(model.predict_packed(vp) / vp.target.numpy() - 1)) * 100)
    return model


#: Residual scales and bounds (log units) tried by :func:`choose_shrink`, identity first (it wins ties).
SHRINK_SCALES = (1.0, 0.75, 0.5, 0.25, 0.0)
SHRINK_BOUNDS = (float("inf"), 0.5, 0.3, 0.2, 0.1)


def shrink_grid_mape(model: GNNPredictor, val: "Packed") -> np.ndarray:
    """MAPE (fraction) on ``val`` of ``log E = log prior + scale x clip(residual, -bound, bound)`` for
    every point of the grid: ``[len(SHRINK_BOUNDS), len(SHRINK_SCALES)]``, the model's own residual
    taken unshrunk (its scale and bound are left as they were)."""
    st = model.state
    keep = st.residual_scale, st.residual_bound
    st.residual_scale, st.residual_bound = 1.0, float("inf")
    try:
        with torch.no_grad():
            _, lt, pos = model.forward_packed(val)
            lpr, _ = model.log_priors(torch.cat([g.prior_tot for g in val.groups]), torch.cat([g.prior_pre for g in val.groups]))
            lpr = lpr.double()
            r = lt.double() - lpr
            out = np.empty((len(SHRINK_BOUNDS), len(SHRINK_SCALES)))
            for i, b in enumerate(SHRINK_BOUNDS):
                for j, a in enumerate(SHRINK_SCALES):
                    contrib = val.step_weight[pos] * model.bounded_energy(val, lpr + a * r.clamp(-b, b))
                    pred = torch.zeros(val.n_examples, dtype=torch.float64).index_add_(0, val.step_example[pos], contrib)
                    out[i, j] = float(torch.mean(torch.abs(pred / val.target - 1)))
    finally:
        st.residual_scale, st.residual_bound = keep
    return out


def pick_shrink(grid: np.ndarray) -> tuple[float, float]:
    """The (scale, bound) of the smallest entry of a :func:`shrink_grid_mape` grid; ties go to the
    earlier point (bounds from none, scales from 1: the least shrinking)."""
    best = (float("inf"), 1.0, float("inf"))
    for i, b in enumerate(SHRINK_BOUNDS):
        for j, a in enumerate(SHRINK_SCALES):
            if grid[i, j] < best[0] - 1e-12:
                best = (float(grid[i, j]), a, b)
    return best[1], best[2]


def set_shrink(model: GNNPredictor, scale: float, bound: float) -> None:
    """Set the residual's scale and bound on ``model.state`` (and in its info, for the model file)."""
    st = model.state
    st.residual_scale, st.residual_bound = scale, bound
    st.info["residual_scale"], st.info["residual_bound"] = scale, (bound if np.isfinite(bound) else None)


def choose_shrink(model: GNNPredictor, val: "Packed") -> tuple[float, float]:
    """Choose how much of the GNN's correction to the physics prior to keep: ``scale`` and ``bound``
    of ``log E = log prior + scale x clip(residual, -bound, bound)`` minimising the MAPE on ``val``
    (held-out architectures inside the training side, never a test group). A GNN that only fits the
    training architectures is pulled back toward the prior (scale 0: the prior alone, inside the
    power window). Sets them on ``model.state``; returns them. (Held-out GPUs or sources inside the
    training side instead: :func:`.shrink.choose_shrink_inner`.)"""
    scale, bound = pick_shrink(shrink_grid_mape(model, val))
    set_shrink(model, scale, bound)
    return scale, bound


def refit_all(examples: list[Example], feats: list[Featurized], chosen: GNNPredictor, config: GNNConfig,
              options: TrainOptions = TrainOptions(), grid: tuple[dict, ...] = HYPER_GRID,
              progress: Callable[[int], None] | None = None) -> GNNPredictor:
    """The shipped model: the ensemble retrained on every example, each member for the number of
    epochs its early stopping chose in ``chosen`` (fitted with a validation split), so no
    architecture is left unfitted."""
    epochs = chosen.state.info.get("member_best_epoch") or [options.epochs] * len(grid)
    grid2 = tuple({**p, "epochs": int(e or options.epochs)} for p, e in zip(grid, epochs))
    model = train_ensemble(examples, feats, np.arange(len(examples)), None, config, options, grid=grid2, progress=progress)
    model.state.residual_scale, model.state.residual_bound = chosen.state.residual_scale, chosen.state.residual_bound
    model.state.info.update({"refit_epochs": [p["epochs"] for p in grid2], "chosen_val_mape": chosen.state.info.get("val_mape"),
                             "member_val_mape": chosen.state.info.get("member_val_mape"),
                             "residual_scale": chosen.state.info.get("residual_scale"),
                             "residual_bound": chosen.state.info.get("residual_bound")})
    return model
