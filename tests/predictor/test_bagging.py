"""Ours' ensemble from several initialisations per grid point (training.bagged_grid, ``--bag``)."""

import numpy as np

from llmco2_sidecar.predictor.evaluate import predict_gnn
from llmco2_sidecar.predictor.gnn import GNNConfig, GNNPredictor
from llmco2_sidecar.predictor.training import HYPER_GRID, TrainOptions, bagged_grid, refit_all, train_ensemble


def test_bagged_grid():
    assert bagged_grid(HYPER_GRID, 1, 7) is HYPER_GRID
    g = bagged_grid(HYPER_GRID, 3, 7)
    assert len(g) == 3 * len(HYPER_GRID)
    assert [p["seed"] for p in g] == [7, 7, 1007, 1007, 2007, 2007]
    assert [p["hidden"] for p in g] == [p["hidden"] for p in HYPER_GRID] * 3


def test_a_bagged_ensemble_averages_distinct_members_and_round_trips(tiny_data, tmp_path):
    ex, feats = tiny_data
    idx = np.arange(len(ex))
    opts = TrainOptions(epochs=6, eval_every=3)
    one = train_ensemble(ex, feats, idx[:-3], idx[-3:], GNNConfig(), opts)
    bag = train_ensemble(ex, feats, idx[:-3], idx[-3:], GNNConfig(), opts, grid=bagged_grid(HYPER_GRID, 2, 0))
    assert len(one.nets) == 2 and len(bag.nets) == 4
    # the first initialisation's members are the unbagged ensemble's; the second's differ
    for a, b in zip(one.nets, bag.nets[:2]):
        assert all(np.array_equal(x.detach().numpy(), y.detach().numpy()) for x, y in zip(a.parameters(), b.parameters()))
    w = [next(n.parameters()).detach().numpy() for n in bag.nets]
    assert not np.array_equal(w[0], w[2])
    assert not np.allclose(predict_gnn(bag, ex, feats, idx), predict_gnn(one, ex, feats, idx), rtol=1e-6)
    full = refit_all(ex, feats, bag, GNNConfig(), opts, grid=bagged_grid(HYPER_GRID, 2, 0))
    assert len(full.nets) == 4 and len(full.state.info["refit_epochs"]) == 4
    loaded = GNNPredictor.load(full.save(tmp_path / "b.safetensors"))
    np.testing.assert_allclose(predict_gnn(loaded, ex, feats, idx), predict_gnn(full, ex, feats, idx), rtol=1e-6)
