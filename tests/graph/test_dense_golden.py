"""Dense models' kernel-graph features stay bit-identical to those recorded before the MoE work
(``make_dense_golden.py``): MoE, MLA, local attention and precision must not move a dense figure."""

from pathlib import Path

import numpy as np

import importlib.util

_spec = importlib.util.spec_from_file_location("make_dense_golden", Path(__file__).with_name("make_dense_golden.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
compute = _mod.compute

GOLDEN = Path(__file__).with_name("data") / "dense_golden.npz"


def test_dense_features_bit_identical():
    want = np.load(GOLDEN)
    got = compute()
    assert set(got) == set(want.files)
    for key in want.files:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
