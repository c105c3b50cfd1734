"""Every rejected item is counted by its offending field (``Ingested.rejected_by_field``, the
``llmco2_ingest_rejections_total`` metric), while the Ack lists the first 16 only."""

from __future__ import annotations

from sidecar_testkit import identity

from llmco2_sidecar._proto import events_pb2 as pb
from llmco2_sidecar.service import ingest as ing
from llmco2_sidecar.service.metrics import SidecarMetrics


def _steps(ids: list[int], slices: int = 2, t0: float = 0.0) -> pb.EventBatch:
    ev = pb.EventBatch(seq=1)
    c = ev.steps
    for k, sid in enumerate(ids):
        c.step_id.append(sid)
        c.start_s.append(t0 + k)
        c.end_s.append(t0 + k + 0.5)
        c.slice_count.append(slices)
        for j in range(slices):
            c.request_id.append(f"r{j}")
            c.new_tokens.append(1)
            c.context_tokens.append(100 + k)
            c.prompt_tokens.append(100)
    return ev


def _counter(metrics: SidecarMetrics, field: str) -> float:
    return metrics.registry.get_sample_value("llmco2_ingest_rejections_total", {"field": field}) or 0.0


def test_more_rejected_steps_than_the_ack_lists_are_all_counted():
    stream = ing.open_stream(identity("e").identity, {})
    assert ing.ingest(stream, _steps(list(range(1, 41)))).ack.steps_accepted == 40
    res = ing.ingest(stream, _steps(list(range(1, 41))))  # the same 40 step ids again: duplicates
    assert res.ack.steps_rejected == 40
    assert len(res.ack.rejections) == ing.MAX_LISTED_REJECTIONS
    assert res.rejected_by_field == {"steps.step_id": 40}
    m = SidecarMetrics()
    m.observe_ack(res.ack, res.rejected_by_field)
    assert _counter(m, "steps.step_id") == 40


def test_a_message_rejected_whole_counts_each_of_its_steps():
    stream = ing.open_stream(identity("e").identity, {})
    ev = _steps(list(range(1, 11)))
    del ev.steps.end_s[-1]  # columns of different lengths: all 10 steps rejected, one listed rejection
    res = ing.ingest(stream, ev)
    assert res.ack.steps_rejected == 10 and len(res.ack.rejections) == 1
    assert res.rejected_by_field == {"steps.slice_count": 10}


def test_mixed_reasons_and_a_clean_message():
    stream = ing.open_stream(identity("e").identity, {})
    ev = _steps(list(range(1, 31)))
    for k in range(20, 30):  # ten steps with a token count of 0 (one slice each)
        ev.steps.new_tokens[2 * k] = 0
    res = ing.ingest(stream, ev)
    assert res.ack.steps_accepted == 20 and res.rejected_by_field == {"steps.new_tokens": 10}
    clean = ing.ingest(stream, _steps([100], t0=100.0))
    assert clean.rejected_by_field is None and clean.ack.steps_accepted == 1
