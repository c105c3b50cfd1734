"""The committed sidecar benchmark pages are what their scripts render from the committed JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.parametrize("name", ["sidecar", "grpc_floor", "sidecar_micro_batch"])
def test_page_is_rendered_from_its_json(name, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for mod in ("sidecar", name):
        sys.modules.pop(mod, None)
    module = __import__(name)
    results = json.loads((BENCH / "results" / f"{name}.json").read_text())
    assert module.render(results) == (BENCH / "results" / f"{name}.md").read_text()
