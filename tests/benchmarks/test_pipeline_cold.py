"""benchmarks/pipeline_cold.py: its micro-batches are what the pipeline would close, and a case runs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def cold(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    for mod in ("sidecar", "pipeline_cold"):
        sys.modules.pop(mod, None)
    return __import__("pipeline_cold")


def test_micro_batches_and_a_case(cold, tmp_path):
    from llmco2_sidecar.config import SidecarConfig
    from llmco2_sidecar.service.server import SidecarCore

    core = SidecarCore(SidecarConfig(port=0, log=str(tmp_path / "carbon.jsonl"), predictor="roofline"))
    loop = asyncio.new_event_loop()
    core.start(loop)
    try:
        groups = cold._micro_batches(core, 4, 3, "e-test")
        assert [len(g) for g in groups] == [4, 4, 4]
        assert all(it.steps.n_steps == 1 for g in groups for it in g)
        # the benchmark workload finishes one request every 4 steps: each group holds one finish
        assert [sum(len(it.done) for it in g) for g in groups] == [1, 1, 1]
        r = cold.run_case(core, "x", 4, 0.001, "sleep", batches=3, warm=1)
        assert r["batches"] == 3 and r["median_us_per_batch"] > 0
        assert r["median_us_per_step"] == pytest.approx(r["median_us_per_batch"] / 4)
    finally:
        core.pipeline.stop()
        core.carbon_log.close()
        core.journal.close()
        loop.close()
