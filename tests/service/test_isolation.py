"""Issue 13: one bad engine must never cost another engine its records (real gRPC on loopback)."""

from __future__ import annotations

import json

import grpc
import pytest
from isolation_kit import POISON_PROMPT, Engine, PoisonPredictor, Stream
from sidecar_testkit import identity, make_config

from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread

pytestmark = pytest.mark.timeout(120)


def _sidecar(tmp_path, predictor=None, **kw):
    return SidecarThread(make_config(tmp_path, **kw), predictor=predictor).start()


def _records(sc):
    sc.flush()
    return {r["request_id"]: r for r in read_records(sc.config.log)}


def _dead_letters(sc):
    path = sc.core.dead_letter.path
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_identity_with_tp_not_dividing_heads_is_refused_and_the_healthy_engine_keeps_every_record(tmp_path):
    """The reported case: engine B's TP (3) does not divide Llama-2-7B's 32 heads. It used to be
    acknowledged, journaled, and then fail every micro-batch it shared with engine A."""
    sc = _sidecar(tmp_path, micro_batch_ms=20.0)
    try:
        stub = sidecar_pb2_grpc.CarbonSidecarStub(grpc.insecure_channel(sc.address))
        good = Engine(stub, "good")
        with pytest.raises(grpc.RpcError) as info:
            Stream(stub).send(identity("bad", tp=3, gpu_count=3))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("identity.tp"), info.value.details()
        for _ in range(20):
            good.send(good.message())
        good.close()
        recs = _records(sc)
        assert sorted(recs) == sorted(good.acked_done) and len(recs) == 60
        assert all(r["source"] == "predicted" for r in recs.values())
    finally:
        sc.stop()


@pytest.mark.parametrize("mode", ["raise", "nan"])
def test_predictor_failure_on_one_engine_costs_only_its_culprit_messages(tmp_path, mode):
    """Two engines of ONE deployment (their steps share a predictor call); engine B sends a step the
    predictor fails on (an exception, or NaN energy) every third message. Engine A keeps every
    record; B loses only the poisoned messages' requests, which still get a record saying why, and
    whose events land in the dead-letter file."""
    sc = _sidecar(tmp_path, predictor=PoisonPredictor(mode), micro_batch_ms=20.0, step_wait_ms=20.0)
    try:
        stub = sidecar_pb2_grpc.CarbonSidecarStub(grpc.insecure_channel(sc.address))
        a, b = Engine(stub, "a"), Engine(stub, "b")
        poisoned: list[str] = []
        for m in range(30):
            a.send(a.message())
            if m % 3 == 1:
                msg = b.message(prompt=lambda k: POISON_PROMPT if k == 1 else 64 + k)
                poisoned.extend(d.request_id for d in msg.events.done)
            else:
                msg = b.message()
            b.send(msg)
        a.close()
        b.close()
        recs = _records(sc)
        assert sorted(r for r in recs if r.startswith("a-")) == sorted(a.acked_done)
        assert all(recs[r]["source"] == "predicted" for r in a.acked_done)
        assert sorted(r for r in recs if r.startswith("b-")) == sorted(b.acked_done)  # none missing
        bad = {r for r in b.acked_done if recs[r]["source"] == "error"}
        assert bad == set(poisoned)  # at most the culprit messages
        assert all("predict" in recs[r]["error"] for r in bad)
        dl = _dead_letters(sc)
        assert dl and all(d["engine"] == "b" and d["error"] for d in dl)
        assert sum(d["steps"] for d in dl) == 10 * 2 * 3
        text = sc.core.metrics.registry.get_sample_value("llmco2_dead_letter_total", {"reason": "predict"})
        assert text == len(dl)
    finally:
        sc.stop()
