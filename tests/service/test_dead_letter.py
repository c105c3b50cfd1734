"""The dead-letter file: one JSON line per failed unit, counted, logged once per distinct error, and
bounded in size."""

from __future__ import annotations

import json
import logging

from llmco2_sidecar.service.dead_letter import DeadLetter
from llmco2_sidecar.service.metrics import SidecarMetrics


def test_entries_counter_log_lines_and_rotation(tmp_path, caplog):
    m = SidecarMetrics()
    dl = DeadLetter(tmp_path / "carbon.jsonl.dead-letter", m, max_bytes=2000)
    caplog.set_level(logging.ERROR, "llmco2.dead_letter")
    for i in range(30):
        dl.put("predict", "e1", RuntimeError("same failure"), [f"r{i}"], 2, {"n": i})
    dl.put("finish", "e2", ValueError("other"), ["x"])
    assert m.registry.get_sample_value("llmco2_dead_letter_total", {"reason": "predict"}) == 30
    assert m.registry.get_sample_value("llmco2_dead_letter_total", {"reason": "finish"}) == 1
    assert len([r for r in caplog.records if "dead letter (" in r.getMessage()]) == 2  # one per distinct error
    cur = [json.loads(x) for x in dl.path.read_text().splitlines()]
    old = [json.loads(x) for x in (tmp_path / "carbon.jsonl.dead-letter.1").read_text().splitlines()]
    assert dl.path.stat().st_size <= 2000 and cur[-1]["reason"] == "finish"
    assert cur[0]["error"] == "RuntimeError: same failure" and cur[0]["steps"] == 2
    assert [e["events"]["n"] for e in old + cur if e["reason"] == "predict"] == list(range(30 - len(old + cur) + 1, 30))
