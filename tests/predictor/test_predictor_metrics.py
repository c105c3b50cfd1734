import pytest

from llmco2_sidecar.predictor.metrics import eba, mape, summary


def test_mape_hand_computed():
    # errors: 10%, 50%, 0%, 25%  -> mean 21.25%
    assert mape([110, 50, 3, 5], [100, 100, 3, 4]) == pytest.approx(21.25)


def test_eba_hand_computed():
    pred, true = [110, 50, 3, 5, 131], [100, 100, 3, 4, 100]
    # errors 0.10, 0.50, 0.0, 0.25, 0.31
    assert eba(pred, true, 0.10) == pytest.approx(40.0)  # 0.10 counts as within 10%
    assert eba(pred, true, 0.30) == pytest.approx(60.0)
    s = summary(pred, true)
    assert s["n"] == 5 and s["eba10"] == pytest.approx(40.0) and s["eba30"] == pytest.approx(60.0)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError):
        mape([1, 2], [1])
    with pytest.raises(ValueError):
        mape([1], [0])
    with pytest.raises(ValueError):
        mape([], [])
