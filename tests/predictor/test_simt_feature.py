"""The GNN reads the CUDA-core conversion's global (log_simt_us, graph.dequant) only where its training side
had any: dense 16-bit training keeps the columns of before the feature (its files reproduce byte for byte)."""

from types import SimpleNamespace

import numpy as np

from llmco2_sidecar.predictor.gnn import ALL_GLOBALS, GNNConfig, load_default, load_default_moe
from llmco2_sidecar.predictor.training import with_simt_feature

COL = ALL_GLOBALS.index("log_simt_us")


def feats(values):
    g = np.zeros((len(values), len(ALL_GLOBALS)), np.float32)
    g[:, COL] = values
    return SimpleNamespace(global_x=g)


def test_columns_follow_the_switch():
    assert "log_simt_us" not in GNNConfig().global_columns()
    assert "log_simt_us" in GNNConfig(simt_feature=True).global_columns()
    assert "log_simt_us" not in GNNConfig(simt_feature=True, roofline_features=False).global_columns()  # baselines


def test_switched_on_by_a_training_side_with_conversion_work():
    cfg = GNNConfig()
    assert with_simt_feature(cfg, [feats([0.0, 0.0]), feats([0.0])]) is cfg
    on = with_simt_feature(cfg, [feats([0.0]), feats([0.0, 2.5])])
    assert on.simt_feature and on.name == cfg.name and not cfg.simt_feature


def test_shipped_models():
    assert not load_default().state.config.simt_feature  # dense 16-bit data
    moe = load_default_moe()
    assert moe.state.config.simt_feature and "log_simt_us" in moe.state.config.global_columns()
