"""benchmarks/record_encode.py: it times records the pipeline really wrote, with both encoders writing the
same values."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def enc(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for mod in ("sidecar", "pipeline_cold", "record_encode"):
        sys.modules.pop(mod, None)
    return __import__("record_encode")


def test_real_records_and_the_encoders_it_compares(enc, tmp_path):
    from llmco2_sidecar.service.carbon_log import dumps

    records = enc.real_records(tmp_path, steps=128)
    assert records and all(r["type"] == "request" and r["energy_j"]["total"] > 0 for r in records)
    before = enc._stdlib_before()
    for r in records:
        assert json.loads(before(r)) == json.loads(dumps(r)) == r  # the same values either way
        assert '", "' in before(r) and '", "' not in dumps(r)  # the old spaced lines, the new compact ones
    assert len(enc._floats(records[0])) >= 10  # energy, carbon, SCI, times: what float.__repr__ is timed on


def test_quick_run_writes_its_page(enc, tmp_path):
    assert enc.main(["--quick", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "record_encode.json").read_text())
    assert r["records"] > 0 and r["shipped_us"] > 0 and r["stdlib_before_us"] > 0 and r["float_repr_us"] > 0
    assert (tmp_path / "record_encode.md").read_text() == enc.render(r)
