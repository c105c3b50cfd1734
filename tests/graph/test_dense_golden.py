"""Dense models' kernel-graph features stay bit-identical to those recorded before the MoE work
(``make_dense_golden.py``): MoE, MLA, local attention and precision must not move a dense figure."""

from pathlib import Path

import importlib.util

import numpy as np

from llmco2_sidecar.hardware import load_gpu

_spec = importlib.util.spec_from_file_location("make_dense_golden", Path(__file__).with_name("make_dense_golden.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
compute = _mod.compute

GOLDEN = Path(__file__).with_name("data") / "dense_golden.npz"


# node types appended after the golden was recorded: dense graphs never use them
NEW_TYPES = ("moe_router", "moe_topk", "expert_linear", "shared_expert", "all_to_all", "attention_mla")


def test_dense_features_bit_identical():
    from llmco2_sidecar.graph import GLOBAL_FEATURE_NAMES, NODE_FEATURE_NAMES

    want = np.load(GOLDEN)
    got = compute()
    assert set(got) == set(want.files)
    new_cols = [j for j, c in enumerate(NODE_FEATURE_NAMES) if c.removeprefix("type_") in NEW_TYPES]
    old_cols = [j for j in range(len(NODE_FEATURE_NAMES)) if j not in new_cols]
    for key in want.files:
        g = got[key]
        if key.endswith("|node_x"):
            assert not g[:, :, new_cols].any(), key
            g = g[:, :, old_cols]
        expected = want[key]
        if key.endswith("|global_x"):  # globals appended after the golden: the old ones come first
            simt = GLOBAL_FEATURE_NAMES.index("log_simt_us")  # no CUDA-core conversion work (graph.dequant)
            assert simt >= want[key].shape[1] and not g[:, simt].any(), key
            g = g[:, :want[key].shape[1]]
            # the GPU's idle power is catalog data, not graph code: it follows the cited readings
            # (hardware/idle.py); every other global stays as recorded
            expected = expected.copy()
            expected[:, GLOBAL_FEATURE_NAMES.index("idle_kw")] = np.float32(_GPU_OF[key.split("|")[0]].idle_w / 1e3)
        np.testing.assert_array_equal(g, expected, err_msg=key)


_GPU_OF = {model: load_gpu(gpu) for model, gpu, _tp, _pp in _mod.CASES}
