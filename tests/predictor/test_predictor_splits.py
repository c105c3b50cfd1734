import numpy as np
import pytest

from llmco2_sidecar.predictor.splits import Split, check_disjoint, leave_one_group_out, transfer_splits, validation_split

GROUPS = ["llama", "llama", "qwen", "qwen", "qwen", "gemma", "llama", "gemma"]


def test_leave_one_group_out_never_shares_a_group():
    splits = leave_one_group_out(GROUPS, "family")
    assert [s.name for s in splits] == ["family=gemma", "family=llama", "family=qwen"]
    for s in splits:
        check_disjoint(s, GROUPS)
        assert sorted(np.concatenate([s.train, s.test]).tolist()) == list(range(len(GROUPS)))


def test_transfer_splits_both_directions():
    gpus = ["H100", "B200", "H100", "B200", "H100"]
    splits = transfer_splits(gpus, "gpu")
    assert [s.name for s in splits] == ["gpu:B200->H100", "gpu:H100->B200"]
    for s in splits:
        check_disjoint(s, gpus)


def test_check_disjoint_catches_a_leak():
    with pytest.raises(AssertionError):
        check_disjoint(Split("bad", np.array([0, 2]), np.array([1])), GROUPS)


def test_validation_split_stays_inside_train_and_by_group():
    s = leave_one_group_out(GROUPS, "family")[0]  # test = gemma
    models = ["a", "a", "b", "c", "c", "x", "d", "x"]
    fit, val = validation_split(s.train, models, seed=0)
    assert set(fit) | set(val) == set(s.train) and not set(fit) & set(val)
    assert not set(np.asarray(models)[fit]) & set(np.asarray(models)[val])
