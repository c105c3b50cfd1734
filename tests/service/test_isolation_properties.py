"""Property: over random interleavings of good and bad engines on one sidecar (real gRPC), every
acknowledged finish gets exactly one record; a good engine's are all predicted; a bad engine loses
exactly its poisoned messages (error records), nothing else (issue 13 item 4)."""

from __future__ import annotations

import itertools

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from isolation_kit import NAN_PROMPT, POISON_PROMPT, Engine, PoisonPredictor
from sidecar_testkit import Stream, identity, make_config

from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.service.server import SidecarThread

pytestmark = pytest.mark.timeout(300)
_names = itertools.count()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("prop"), micro_batch_ms=5.0, step_wait_ms=50.0, log_windows=False)
    sc = SidecarThread(cfg, predictor=PoisonPredictor("raise")).start()
    channel = grpc.insecure_channel(sc.address)
    yield sc, sidecar_pb2_grpc.CarbonSidecarStub(channel)
    channel.close()
    sc.stop()


engine_kinds = st.lists(st.sampled_from(["good", "bad", "refused"]), min_size=2, max_size=4)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=engine_kinds, data=st.data())
def test_random_interleavings_of_good_and_bad_engines(shared, kinds, data):
    sc, stub = shared
    engines, expected_error = [], set()
    for kind in kinds:
        name = f"e{next(_names)}"
        if kind == "refused":  # an identity the pipeline cannot run: refused up front
            with pytest.raises(grpc.RpcError) as info:
                Stream(stub).send(identity(name, tp=3, gpu_count=3))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            continue
        engines.append((kind, Engine(stub, name, per_message=2)))
    if not engines:
        return
    order = data.draw(st.lists(st.integers(0, len(engines) - 1), min_size=1, max_size=25), label="order")
    for i in order:
        kind, eng = engines[i]
        poison = kind == "bad" and data.draw(st.sampled_from([None, POISON_PROMPT, NAN_PROMPT]), label="poison")
        if poison:
            msg = eng.message(prompt=lambda k, p=poison: p if k == 0 else 64 + k)
            expected_error.update(d.request_id for d in msg.events.done)
        else:
            msg = eng.message()
        ack = eng.send(msg)
        assert ack.done_accepted == 2 and ack.steps_accepted == 4
    for _, eng in engines:
        eng.close()
    sc.flush()
    ledger = sc.core.ledger
    for kind, eng in engines:
        for rid in eng.acked_done:
            rec = ledger.get_finished(rid)
            assert rec is not None, rid
            assert rec["source"] == ("error" if rid in expected_error else "predicted"), (rid, rec.get("error"))
