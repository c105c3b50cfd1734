"""Request records (service/records.py): the expected error travels with predicted figures only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmco2_sidecar.config import SidecarConfig
from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.predictor.gnn import load_default
from llmco2_sidecar.predictor.heldout import expected_error
from llmco2_sidecar.predictor.roofline import RooflinePredictor
from llmco2_sidecar.service.lookups import record_to_proto
from llmco2_sidecar.service.records import make_accounting, request_record, with_predictor

STREAM = SimpleNamespace(stream_id="e1", model_label="Qwen/Qwen3-8B", gpu_label="H100-SXM5-80GB")


def _dep(model: str = "Qwen/Qwen3-8B", gpu: str = "H100-SXM5-80GB") -> Deployment:
    return Deployment(load_model(model), load_gpu(gpu))


def test_an_engines_accounting_names_its_model_and_that_models_error():
    dep = _dep()
    acc = with_predictor(make_accounting(SidecarConfig(), dep), load_default(), dep, "Qwen/Qwen3-8B")
    assert acc.expected_error_pct == pytest.approx(expected_error(dep.model, dep.gpu.gpu_id).mape_pct, abs=0.005)
    assert acc.predictor_name == "llmco2-gnn-v2"
    plain = with_predictor(make_accounting(SidecarConfig(), dep), RooflinePredictor(), dep)
    assert plain.expected_error_pct is None and plain.predictor_name == "roofline-analytic"
    rec = request_record(STREAM, acc, "r0", 1.0, 10, 5, 1.0, 2.0, 0.5, 0.1, 6, False, predictor="ignored")
    assert rec["predictor"] == "llmco2-gnn-v2"  # the answering model, not the caller's label


@pytest.mark.parametrize("source, want", [("predicted", 16.4), ("measured", None)])
def test_a_record_carries_the_error_of_a_predicted_figure_only(source, want):
    acc = make_accounting(SidecarConfig(), _dep())
    acc.expected_error_pct = 16.4
    rec = request_record(STREAM, acc, "r1", 1.0, 10, 5, 1.0, 2.0, 0.5, 0.1, 6, False, source=source)
    assert rec["expected_error_pct"] == want
    assert record_to_proto(rec).expected_error_pct == (want or 0.0)
    err = request_record(STREAM, acc, "r2", 1.0, 10, 5, 0.0, 0.0, 0.0, 0.0, 0, False, error="predict failed")
    assert err["source"] == "error" and err["expected_error_pct"] is None  # no figure, no error bar
