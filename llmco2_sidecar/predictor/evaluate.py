"""Held-out evaluation of every predictor on the same group splits (used by ``benchmarks/accuracy.py``
and ``llmco2 train``).

Groups: the model architecture (fine-tunes and FP8 checkpoints of one architecture are one group),
the model family, the GPU (train on one, test on the other) and the data source (when there are two).
Validation for early stopping comes from the training groups only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .baselines import LLMCarbonBaseline, RandomForestBaseline, RooflineBaseline
from .dataset import CONDITION_GLOBALS, SHAPE_GLOBALS, Example, Featurized, featurize, measured_examples, mlenergy_examples, pack, scope_range
from .gnn import GNNConfig, GNNPredictor
from .measurements import read_measurements
from .metrics import summary
from .mlenergy import load_rows
from .mlenergy_v2 import load_v2_rows
from .splits import Split, check_disjoint, leave_one_group_out, transfer_splits, validation_split
from .shrink import apply_inner_shrink, choose_shrink_inner
from .training import HYPER_GRID, TrainOptions, bagged_grid, fit_prior, train_ensemble
from .dataset import example_prior_terms


def architecture(e: Example) -> str:
    return e.model  # dataset.architecture_of: FP8 copies and releases of one architecture are one group


def precision(e: Example) -> str:
    """The checkpoint's number format as published (bfloat16, fp8, mxfp4; measurements: bf16)."""
    return str(e.meta.get("precision", "bfloat16"))


def load_examples(mlenergy_dir: str | Path | None, measurements_dir: str | Path | None, seed: int = 0,
                  v2_dir: str | Path | None = None,
                  step_times: str = "uniform") -> tuple[list[Example], list[Featurized], dict[str, str]]:
    """Examples of every source given: ML.ENERGY v3 (``mlenergy_dir``), ML.ENERGY v2 (``v2_dir``) and
    the project's own measurements; their features; and ``{row key: reason}`` for the rows left out.
    ``step_times``: how each ML.ENERGY window's steps share its mean step time (:func:`.dataset.mlenergy_examples`)."""
    examples: list[Example] = []
    skipped: dict[str, str] = {}
    rows = []
    if mlenergy_dir is not None:
        rows += load_rows(mlenergy_dir)
    if v2_dir is not None:
        rows += load_v2_rows(v2_dir)
    if rows:
        ex, sk = mlenergy_examples(rows, seed=seed, step_times=step_times)
        examples += ex
        skipped.update(sk)
    if measurements_dir is not None:
        ex, sk = measured_examples(read_measurements(measurements_dir))
        examples += ex
        skipped.update(sk)
    return examples, featurize(examples), skipped


def make_splits(examples: list[Example]) -> list[Split]:
    """Source, GPU, family and architecture hold-outs; each checked for shared groups.

    * source: train on every other source, test on one (with ML.ENERGY v3 and v2: both directions);
    * GPU: leave one GPU kind out (train on the others, whatever their source);
    * family and architecture: leave one out (all sources and GPUs of it).
    """
    out: list[Split] = []
    fam = [e.family for e in examples]
    arch = [architecture(e) for e in examples]
    gpu = [e.gpu for e in examples]
    src = [e.source for e in examples]
    src_splits = [Split(f"source: train {'+'.join(sorted(set(np.asarray(src)[s.train].tolist())))} -> test {s.name.split('=', 1)[1]}",
                        s.train, s.test) for s in leave_one_group_out(src, "source")]
    model_splits = leave_one_group_out(arch, "model")
    model_tests = {tuple(s.test.tolist()) for s in model_splits}
    # a family with one architecture is the same split as that model's: scored once, as the model
    fam_splits = [s for s in leave_one_group_out(fam, "family") if tuple(s.test.tolist()) not in model_tests]
    prec = [precision(e) for e in examples]
    # per precision: the low-precision formats held out one at a time (train on every other format)
    prec_splits = [s for s in leave_one_group_out(prec, "precision") if s.name != "precision=bfloat16"]
    for split, groups in ([(s, src) for s in src_splits]
                          + [(s, gpu) for s in leave_one_group_out(gpu, "gpu")]
                          + [(s, prec) for s in prec_splits]
                          + [(s, fam) for s in fam_splits]
                          + [(s, arch) for s in model_splits]):
        check_disjoint(split, groups)
        out.append(split)
    return out


# A predictor spec: fit on (examples, feats, train, seed) -> predict(test) -> array.
Fitted = Callable[[np.ndarray], np.ndarray]
Spec = Callable[[list[Example], list[Featurized], np.ndarray, int], Fitted]


def gnn_spec(config: GNNConfig, options: TrainOptions, progress: Callable[[int], None] | None = None,
             shrink_by: tuple[str, ...] = (), inner_epochs: int | None = None, fitted: dict | None = None,
             bag: int = 1) -> Spec:
    """Train on the training groups (the :data:`~.training.HYPER_GRID` ensemble); early stopping uses
    held-out architectures *within* them. ``shrink_by`` (``("gpu",)``, ``("source",)`` or both): the
    GNN residual's scale and bound chosen on inner leave-one-GPU/source-out folds of the training side
    (:func:`.shrink.choose_shrink_inner`, inner fits of ``inner_epochs``). ``bag``: each grid point from
    that many initialisations (:func:`.training.bagged_grid`). ``fitted``: a dict that keeps
    each fitted model (for :func:`whole_residual_spec`). The returned predictor's ``info`` says what
    was chosen."""
    def fit(examples, feats, train, seed):
        opts = TrainOptions(**{**options.__dict__, "seed": seed})
        groups = [architecture(e) for e in examples]
        fit_idx, val_idx = validation_split(train, groups, seed=seed)
        grid = bagged_grid(HYPER_GRID, bag, seed)
        model = train_ensemble(examples, feats, fit_idx, val_idx, config, opts, grid=grid, progress=progress,
                               shrink=False if shrink_by else None)
        if shrink_by and config.use_prior:
            scale, bound, info = choose_shrink_inner(examples, feats, train, shrink_by, config, opts, groups,
                                                     inner_epochs=inner_epochs, grid=grid, progress=progress)
            apply_inner_shrink(model, scale, bound, info)
        if fitted is not None:
            fitted[_fit_key(train, seed)] = model
        predict = lambda test: predict_gnn(model, examples, feats, test)  # noqa: E731
        predict.info = {"residual_scale": model.state.residual_scale,
                        "residual_bound": model.state.residual_bound if np.isfinite(model.state.residual_bound) else None,
                        **({"shrink_inner": model.state.info["shrink_inner"]} if "shrink_inner" in model.state.info else {})}
        return predict
    return fit


def _fit_key(train: np.ndarray, seed: int) -> tuple[bytes, int]:
    return np.asarray(train, dtype=np.int64).tobytes(), seed


def _take_fit(fitted: dict, train: np.ndarray, seed: int, pop: bool, spec: str):
    """The model ours fitted on this split (``pop``: dropped from ``fitted``, the last twin to read it)."""
    model = (fitted.pop if pop else fitted.get)(_fit_key(train, seed), None)
    if model is None:
        raise RuntimeError(f"{spec}: ours must be fitted on this split first")
    return model


def whole_residual_spec(fitted: dict, pop: bool = True) -> Spec:
    """The model a :func:`gnn_spec` with the same ``fitted`` dict trained on the same split (it must
    run first), scored with its GNN residual whole (scale 1, no bound): the like-for-like "before".
    ``pop``: the fit is dropped from ``fitted`` once taken (the last twin to read it)."""
    def fit(examples, feats, train, seed):
        model = _take_fit(fitted, train, seed, pop, "whole_residual_spec")

        def predict(test):
            st = model.state
            keep = st.residual_scale, st.residual_bound
            st.residual_scale, st.residual_bound = 1.0, float("inf")
            try:
                return predict_gnn(model, examples, feats, test)
            finally:
                st.residual_scale, st.residual_bound = keep
        return predict
    return fit


def predict_gnn(model: GNNPredictor, examples: list[Example], feats: list[Featurized], idx: np.ndarray) -> np.ndarray:
    p = pack([feats[i] for i in idx], [examples[i] for i in idx], model._node_idx, model._glob_idx, model.state.norm,
             clip=model.state.clip_inputs)
    return model.predict_packed(p)


def prior_spec(choose_design: bool = False) -> Spec:
    def fit(examples, feats, train, seed):
        prior = fit_prior(feats, examples, train, choose_design)
        return lambda test: example_prior_terms([feats[i] for i in test], [examples[i] for i in test]) @ prior.coef
    return fit


def baseline_spec(cls) -> Spec:
    def fit(examples, feats, train, seed):
        kw = {"seed": seed} if cls is RandomForestBaseline else {}
        b = cls(**kw).fit([examples[i] for i in train], [feats[i] for i in train])
        return lambda test: b.predict([examples[i] for i in test], [feats[i] for i in test])
    return fit


OURS = "llmco2-gnn (2-GNN + physics prior)"
#: With ``shrink_by``: ours' own fit on each split scored with the GNN residual whole (the "before").
WHOLE = "same fit as llmco2-gnn, residual whole"
CLIPPED = "same fit as llmco2-gnn, GNN inputs clipped to the training range"  # not an llmco2-gnn name: tools/card_heldout.py takes those
#: the same fits with only the GPU and engine globals clipped (:data:`.dataset.CONDITION_GLOBALS`); its
#: name must not start with :data:`CLIPPED`'s prefix (tools and tests select that column by prefix)
CLIPPED_CONDITIONS = "same fit as llmco2-gnn, GPU and engine inputs clipped to the training range"


def clipped_inputs_spec(fitted: dict, pop: bool = True, scope: tuple[str, ...] | None = None) -> Spec:
    """The model a :func:`gnn_spec` with the same ``fitted`` dict trained on the same split (it must run
    first), scored with its GNN's global inputs clipped to the training side's range
    (``ModelState.clip_inputs``): the training is the same, only the extrapolation differs. ``scope``:
    only these globals clipped (:func:`.dataset.scope_range`); None: all. ``pop``: as
    :func:`whole_residual_spec`'s."""
    def fit(examples, feats, train, seed):
        model = _take_fit(fitted, train, seed, pop, "clipped_inputs_spec")

        def predict(test):
            st = model.state
            keep = st.clip_inputs, st.norm
            st.clip_inputs = True
            if scope is not None:
                st.norm = scope_range(st.norm, list(st.config.global_columns()), scope)
            try:
                return predict_gnn(model, examples, feats, test)
            finally:
                st.clip_inputs, st.norm = keep
        return predict
    return fit


#: the same fits, clipped as shipped, predicting with the prior alone (residual scale 0) for a test row whose
#: model shape lies outside the training side's range (:data:`.dataset.SHAPE_GLOBALS`)
SHAPE_GATED = "same fit as llmco2-gnn, prior alone outside the training models' shapes"


def shape_gated_spec(fitted: dict, pop: bool = True) -> Spec:
    """The model a :func:`gnn_spec` with the same ``fitted`` dict trained on the same split (it must run
    first), scored with its inputs clipped (as shipped) where the test row's model shape (hidden size,
    layers, heads, KV heads, FFN width, parameters) lies inside the training side's range, and with the
    physics prior alone (the GNN's residual off) where any of them lies outside: the network corrects
    the prior only for architectures like those it learned from. ``pop``: as :func:`whole_residual_spec`'s."""
    def fit(examples, feats, train, seed):
        model = _take_fit(fitted, train, seed, pop, "shape_gated_spec")

        def predict(test):
            st = model.state
            test = np.asarray(test)
            outside = np.array([shape_outside(model, feats[i]) for i in test], dtype=bool)
            predict.info = {"n_outside_shapes": int(outside.sum())}
            keep = st.clip_inputs, st.residual_scale
            st.clip_inputs = True
            try:
                out = np.empty(len(test))
                if (~outside).any():
                    out[~outside] = predict_gnn(model, examples, feats, test[~outside])
                if outside.any():
                    st.residual_scale = 0.0
                    out[outside] = predict_gnn(model, examples, feats, test[outside])
                return out
            finally:
                st.clip_inputs, st.residual_scale = keep
        return predict
    return fit


def shape_outside(model: GNNPredictor, fe: Featurized) -> bool:
    """Does any of the row's model-shape globals lie outside the model's training range?"""
    names = list(model.state.config.global_columns())
    cols = [k for k, n in enumerate(names) if n in SHAPE_GLOBALS]
    g = fe.global_x[:, model._glob_idx][:, cols]
    lo, hi = model.state.norm["glob_lo"][cols], model.state.norm["glob_hi"][cols]
    return bool(np.any(g < lo - 1e-6) or np.any(g > hi + 1e-6))


def predictor_specs(epochs: int = 300, moe_recipe: bool = False, shrink_by: tuple[str, ...] = (),
                    inner_epochs: int | None = None, bag: int = 1, clip_variant: bool = False,
                    clip_inputs: bool = False, prior_on_all: bool = False) -> dict[str, Spec]:
    """Every predictor of the accuracy table (ours first). ``moe_recipe``: ours and the prior alone
    with the MoE recipe's switches (soft power window, choices on the training side's validation).
    ``shrink_by``: ours keeps the share of its GNN residual chosen on inner leave-one-GPU/source-out
    folds (:mod:`.shrink`), and :data:`WHOLE` scores the same fits with the residual whole. ``bag``: ours'
    ensemble from that many initialisations per grid point (the GNN baselines keep one). ``clip_variant``:
    :data:`CLIPPED` scores ours' fits with the GNN's inputs clipped to the training range, and
    :data:`CLIPPED_CONDITIONS` with only the GPU and engine inputs clipped. ``clip_inputs``:
    ours is fitted as the shipped dense model is (``llmco2 train --clip-inputs``: its GNN's global inputs
    clipped to the training side's range), so its inner folds (``shrink_by``) are scored that way too.
    ``prior_on_all``: ours' physics prior fitted on its whole training side, early-stopping
    architectures included (:class:`.training.TrainOptions`)."""
    opt = TrainOptions(epochs=epochs)
    ours_opt = TrainOptions(epochs=epochs, choose_on_validation=moe_recipe, clip_inputs=clip_inputs,
                            prior_on_all=prior_on_all)
    fitted: dict = {}
    ours = {OURS: gnn_spec(GNNConfig(soft_window=moe_recipe), ours_opt, shrink_by=shrink_by, inner_epochs=inner_epochs,
                           fitted=fitted if (shrink_by or clip_variant) else None, bag=bag)}
    if shrink_by:
        ours[WHOLE] = whole_residual_spec(fitted, pop=not clip_variant)
    if clip_variant:  # both twins read the same fit: the last one pops it
        ours[CLIPPED] = clipped_inputs_spec(fitted, pop=False)
        ours[CLIPPED_CONDITIONS] = clipped_inputs_spec(fitted, pop=False, scope=CONDITION_GLOBALS)
        ours[SHAPE_GATED] = shape_gated_spec(fitted)
    return {
        **ours,
        "physics prior alone": prior_spec(moe_recipe),
        "LLMCO2 paper 2-GNN (no prior)": gnn_spec(GNNConfig(name="paper-2gnn", use_prior=False, soft_window=False), opt),
        "NNLQP (1 GNN)": gnn_spec(GNNConfig(name="nnlqp", two_stage=False, use_prior=False, roofline_features=False,
                                            phase_features=False, soft_window=False), opt),
        "DeepEn (random forest)": baseline_spec(RandomForestBaseline),
        "LLMCarbon (FLOP count)": baseline_spec(LLMCarbonBaseline),
        "Roofline (analytic)": baseline_spec(RooflineBaseline),
    }


def ablation_specs(epochs: int = 300) -> dict[str, Spec]:
    """The paper's Table 5 steps, then ours."""
    opt = TrainOptions(epochs=epochs)
    refine = TrainOptions(epochs=epochs, refine_rounds=1, refine_epochs=max(20, epochs // 3))
    return {
        "1 GNN (NNLQP-style)": gnn_spec(GNNConfig(name="a0", two_stage=False, use_prior=False, roofline_features=False,
                                                  phase_features=False), opt),
        "+ prefill/decode (2 GNN)": gnn_spec(GNNConfig(name="a1", use_prior=False, roofline_features=False), opt),
        "+ Roofline features": gnn_spec(GNNConfig(name="a2", use_prior=False), opt),
        "+ targeted refinement": gnn_spec(GNNConfig(name="a3", use_prior=False), refine),
        "+ physics prior (ours)": gnn_spec(GNNConfig(name="a4"), opt),
        "+ physics prior + refinement": gnn_spec(GNNConfig(name="a5"), refine),
    }


@dataclass
class Result:
    split: str
    predictor: str
    n: int
    mape: float
    eba10: float
    eba30: float
    info: dict | None = None  # what the predictor chose on this split's training side (e.g. its residual shrink)


def evaluate(examples: list[Example], feats: list[Featurized], splits: list[Split], specs: dict[str, Spec], seed: int = 0,
             progress: Callable[[str], None] | None = None) -> tuple[list[Result], dict[str, dict[str, np.ndarray]]]:
    """Fit every spec on every split's training side and score it on the test side.

    Returns the results and, per predictor, ``{"pred", "true", "split", "idx"}`` arrays over all test
    samples (``idx``: the example's index).
    """
    y = np.array([e.target for e in examples])
    results: list[Result] = []
    points: dict[str, dict[str, list]] = {name: {"pred": [], "true": [], "split": [], "idx": []} for name in specs}
    for split in splits:
        for name, spec in specs.items():
            if progress is not None:
                progress(f"{split.name}: {name}")
            predict = spec(examples, feats, split.train, seed)
            pred = np.asarray(predict(split.test), dtype=np.float64)
            s = summary(pred, y[split.test])
            results.append(Result(split.name, name, s["n"], s["mape"], s["eba10"], s["eba30"], getattr(predict, "info", None)))
            points[name]["pred"].append(pred)
            points[name]["true"].append(y[split.test])
            points[name]["split"].append(np.full(len(pred), split.name))
            points[name]["idx"].append(np.asarray(split.test))
    merged = {k: {kk: np.concatenate(vv) if vv else np.zeros(0) for kk, vv in v.items()} for k, v in points.items()}
    return results, merged
