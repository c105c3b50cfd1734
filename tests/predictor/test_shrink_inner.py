"""The GNN residual's scale and bound chosen on inner leave-one-GPU/source/family/architecture-out folds
of the training side (predictor/shrink.py, ``--shrink-by``)."""

import copy
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llmco2_sidecar.predictor import evaluate, shrink, training
from llmco2_sidecar.predictor.evaluate import architecture, gnn_spec, predict_gnn, whole_residual_spec
from llmco2_sidecar.predictor.gnn import GNNConfig
from llmco2_sidecar.predictor.shrink import choose_shrink_inner, inner_folds, parse_shrink_by
from llmco2_sidecar.predictor.splits import leave_one_group_out
from llmco2_sidecar.predictor.training import TrainOptions

FAST = TrainOptions(epochs=6, eval_every=3)


def _fake_examples():
    out = []
    for src, gpus in (("v3", ("H100", "B200")), ("v2", ("A100", "H100"))):
        for gpu in gpus:
            for k in range(3):
                out.append(SimpleNamespace(source=src, gpu=gpu, model=f"m{k}", family="fa" if k < 2 else "fb"))
    return out


@pytest.mark.parametrize("kind", ["gpu", "source"])
def test_inner_folds_stay_inside_the_training_side(kind):
    ex = _fake_examples()
    for split in leave_one_group_out([getattr(e, kind) for e in ex], kind):
        test = set(split.test.tolist())
        for by in (("gpu",), ("source",), ("gpu", "source")):
            folds = inner_folds(ex, split.train, by)
            for f in folds:
                assert not test & (set(f.fit.tolist()) | set(f.held.tolist())), (split.name, f.name)
                assert sorted(f.fit.tolist() + f.held.tolist()) == sorted(split.train.tolist())
                assert len(f.fit) and len(f.held)
            held_sets = [tuple(sorted(f.held.tolist())) for f in folds]
            assert len(held_sets) == len(set(held_sets))  # the same rows held out once
    # train v3 (H100 + B200): one fold per GPU, none per source (a single source)
    v3 = np.array([i for i, e in enumerate(ex) if e.source == "v3"])
    assert [f.name for f in inner_folds(ex, v3, ("gpu", "source"))] == ["gpu=B200", "gpu=H100"]
    # gpu=B200 held out: A100 and H100 folds, and v2 / v3 folds
    no_b200 = np.array([i for i, e in enumerate(ex) if e.gpu != "B200"])
    assert [f.name for f in inner_folds(ex, no_b200, ("gpu", "source"))] == ["gpu=A100", "gpu=H100", "source=v2", "source=v3"]
    assert inner_folds(ex, np.array([i for i, e in enumerate(ex) if e.gpu == "H100" and e.source == "v3"]), ("gpu",)) == []


def test_parse_shrink_by():
    assert parse_shrink_by("gpu") == ("gpu",)
    assert parse_shrink_by(" gpu, source,gpu") == ("gpu", "source")
    assert parse_shrink_by("Family,model") == ("family", "model")
    assert parse_shrink_by("") == () and parse_shrink_by("none") == ()
    with pytest.raises(ValueError, match="'precision'"):
        parse_shrink_by("gpu,precision")


def test_family_and_model_folds_leave_one_family_or_architecture_out():
    ex = _fake_examples()
    everything = np.arange(len(ex))
    assert [f.name for f in inner_folds(ex, everything, ("family",))] == ["family=fa", "family=fb"]
    folds = inner_folds(ex, everything, ("model",))
    assert [f.name for f in folds] == ["model=m0", "model=m1", "model=m2"]
    for f in folds:
        assert {ex[i].model for i in f.held} == {f.name.split("=")[1]}
        assert f.name.split("=")[1] not in {ex[i].model for i in f.fit}
    # family fb has one architecture (m2): asked for both kinds, its rows are held out once
    assert [f.name for f in inner_folds(ex, everything, ("family", "model"))] == ["family=fa", "family=fb", "model=m0",
                                                                                 "model=m1"]
    # a model split (m2 out) leaves one family on the training side: no family fold, one per architecture
    no_m2 = np.array([i for i, e in enumerate(ex) if e.model != "m2"])
    assert inner_folds(ex, no_m2, ("family",)) == []
    assert [f.name for f in inner_folds(ex, no_m2, ("model",))] == ["model=m0", "model=m1"]


def test_the_test_architecture_enters_no_inner_fit(tiny_data, monkeypatch):
    """Every fit made for a split (outer and inner, their early-stopping rows and the inner held-out
    rows) uses training-side rows only."""
    ex, feats = tiny_data
    arch = [architecture(e) for e in ex]
    split = next(s for s in leave_one_group_out(arch, "model") if s.name == "model=Qwen/Qwen3-8B")
    seen, held = [], []
    real_train, real_pack = training.train_ensemble, shrink.pack

    def spy_train(examples, feats_, fit_idx, val_idx, *a, **k):
        seen.append((np.asarray(fit_idx), np.asarray(val_idx)))
        return real_train(examples, feats_, fit_idx, val_idx, *a, **k)

    def spy_pack(fs, exs, *a, **k):
        held.append([e.key for e in exs])
        return real_pack(fs, exs, *a, **k)

    monkeypatch.setattr(evaluate, "train_ensemble", spy_train)
    monkeypatch.setattr(shrink, "train_ensemble", spy_train)
    monkeypatch.setattr(shrink, "pack", spy_pack)
    predict = gnn_spec(GNNConfig(), FAST, shrink_by=("gpu",))(ex, feats, split.train, 0)
    assert len(seen) == 3 and len(held) == 2  # the outer fit, then one per GPU of the training side
    test_ids = set(split.test.tolist())
    for fit_idx, val_idx in seen:
        assert not test_ids & set(fit_idx.tolist()) and not test_ids & set(val_idx.tolist())
    test_keys = {ex[i].key for i in split.test}
    assert held and not any(test_keys & set(h) for h in held)
    assert [f["held"] for f in predict.info["shrink_inner"]["folds"]] == ["gpu=B200", "gpu=H100"]


def _exact_prior_data(tiny_data, log_factor):
    """The tiny examples relabelled so that a fixed prior times ``exp(log_factor)`` is exact on every
    row; returns (examples, feats, that prior). The prior is half of one fitted on the made-up labels
    (which sit at the power cap): its steps then lie between 1.9 x the power floor and 0.5 x the cap, so
    a residual of +-0.25 moves every step and +1 doubles all of them at least."""
    ex, feats = tiny_data
    prior = copy.deepcopy(training.fit_prior(feats, ex, np.arange(len(ex))))
    prior.coef = prior.coef * 0.5
    model = training.train_ensemble(ex, feats, np.arange(len(ex)), None, GNNConfig(), FAST)
    model.state.prior = prior
    model.state.residual_scale = 0.0  # the prior inside the power window, as the model predicts it
    y = predict_gnn(model, ex, feats, np.arange(len(ex))) * np.exp(log_factor)
    return [replace(e, target=float(t)) for e, t in zip(ex, y)], feats, prior


def _push_after_training(monkeypatch, prior, log_shift):
    """Every ensemble fitted from here on has the fixed ``prior`` and a total-head residual of exactly
    ``log_shift`` on every step."""
    real = training.train_ensemble
    monkeypatch.setattr(training, "fit_prior", lambda *a, **k: prior)

    def pushed(*a, **k):
        m = real(*a, **k)
        with torch.no_grad():
            for net in m.nets:
                net.tot.lin2.weight.zero_()
                net.tot.lin2.bias.fill_(log_shift)
        return m
    monkeypatch.setattr(shrink, "train_ensemble", pushed)


def test_a_residual_that_only_hurts_the_held_out_gpu_gets_scale_zero(tiny_data, monkeypatch):
    ex, feats, prior = _exact_prior_data(tiny_data, 0.0)
    _push_after_training(monkeypatch, prior, 1.0)  # every step e^1 too high (or at the cap, 2 x) on the left-out GPU
    arch = [architecture(e) for e in ex]
    scale, bound, info = choose_shrink_inner(ex, feats, np.arange(len(ex)), ("gpu",), GNNConfig(), FAST, arch)
    assert scale == 0.0
    assert [f["held"] for f in info["folds"]] == ["gpu=B200", "gpu=H100"]
    for f in info["folds"]:
        assert f["mape_prior"] < 1e-6 and f["mape_whole"] > 99 and f["mape_chosen"] == f["mape_prior"]


def test_a_residual_that_is_right_on_the_held_out_gpu_is_kept_whole(tiny_data, monkeypatch):
    ex, feats, prior = _exact_prior_data(tiny_data, 0.25)
    _push_after_training(monkeypatch, prior, 0.25)  # exactly the missing factor (0.25: exact in float32)
    arch = [architecture(e) for e in ex]
    scale, bound, info = choose_shrink_inner(ex, feats, np.arange(len(ex)), ("gpu",), GNNConfig(), FAST, arch)
    assert (scale, bound) == (1.0, float("inf"))
    assert info["mean_mape_whole"] < 1e-4 and info["mean_mape_prior"] > 20  # percent


def test_no_fold_keeps_the_residual_whole(tiny_data):
    ex, feats = tiny_data
    h100 = np.array([i for i, e in enumerate(ex) if e.gpu == "H100"])
    scale, bound, info = choose_shrink_inner(ex, feats, h100, ("gpu",), GNNConfig(), FAST, [architecture(e) for e in ex])
    assert (scale, bound) == (1.0, float("inf")) and info["folds"] == [] and "no inner fold" in info["note"]


def test_the_whole_residual_twin_scores_the_same_fit_unshrunk(tiny_data):
    ex, feats = tiny_data
    train, test = np.arange(len(ex))[:-3], np.arange(len(ex))[-3:]
    fitted: dict = {}
    ours = gnn_spec(GNNConfig(), FAST, fitted=fitted)(ex, feats, train, 0)
    model = next(iter(fitted.values()))
    model.state.residual_scale, model.state.residual_bound = 0.0, float("inf")
    whole = whole_residual_spec(fitted)(ex, feats, train, 0)
    shrunk = ours(test)
    got = whole(test)
    assert (model.state.residual_scale, model.state.residual_bound) == (0.0, float("inf"))  # restored
    model.state.residual_scale = 1.0
    np.testing.assert_allclose(got, predict_gnn(model, ex, feats, test), rtol=1e-12)
    assert not np.allclose(got, shrunk, rtol=1e-6)
    with pytest.raises(RuntimeError, match="fitted on this split first"):
        whole_residual_spec(fitted)(ex, feats, train, 0)


def test_inner_folds_are_scored_as_the_model_predicts_with_its_inputs_clipped(tiny_data, monkeypatch):
    """A recipe that clips its GNN's inputs (the shipped dense one) has its inner folds scored with the
    inputs clipped to each inner fit's range, as its predictions will be."""
    ex, feats = tiny_data
    clips = []
    real_pack = shrink.pack

    def spy_pack(fs, exs, node_idx, glob_idx, norm, clip=False):
        clips.append(clip)
        return real_pack(fs, exs, node_idx, glob_idx, norm, clip=clip)

    monkeypatch.setattr(shrink, "pack", spy_pack)
    arch = [architecture(e) for e in ex]
    for clip in (True, False):
        clips.clear()
        opts = TrainOptions(**{**FAST.__dict__, "clip_inputs": clip})
        choose_shrink_inner(ex, feats, np.arange(len(ex)), ("gpu",), GNNConfig(), opts, arch)
        assert clips == [clip, clip]  # one held-out pack per GPU fold
