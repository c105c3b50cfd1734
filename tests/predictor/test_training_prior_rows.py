"""``TrainOptions.prior_on_all`` (predictor/training.py): which rows the network's physics prior is fitted on."""

import numpy as np

from llmco2_sidecar.predictor import training
from llmco2_sidecar.predictor.gnn import GNNConfig


def test_prior_on_all_fits_the_prior_on_the_early_stopping_rows_too(tiny_data, monkeypatch):
    """On: the network's prior comes from its rows and its early-stopping architectures; off (every
    shipped model so far): from its rows alone."""
    ex, feats = tiny_data
    fit_idx = np.array([i for i, e in enumerate(ex) if "Qwen" in e.model])
    val_idx = np.array([i for i, e in enumerate(ex) if "Llama" in e.model])
    seen = []
    real = training.fit_prior

    def spy(feats_, examples, idx, choose_design=False):
        seen.append(sorted(np.asarray(idx).tolist()))
        return real(feats_, examples, idx, choose_design)

    monkeypatch.setattr(training, "fit_prior", spy)
    fast = dict(epochs=2, eval_every=1)
    training.train_gnn(ex, feats, fit_idx, val_idx, GNNConfig(), training.TrainOptions(**fast))
    training.train_gnn(ex, feats, fit_idx, val_idx, GNNConfig(), training.TrainOptions(**fast, prior_on_all=True))
    training.train_gnn(ex, feats, fit_idx, None, GNNConfig(), training.TrainOptions(**fast, prior_on_all=True))
    assert seen == [sorted(fit_idx.tolist()), sorted(fit_idx.tolist() + val_idx.tolist()), sorted(fit_idx.tolist())]
