"""A request the pipeline could not account is answered over real gRPC with ``source: "error"`` and
the reason in ``RequestCarbon.error`` (GetRequestCarbon and WatchFinished alike)."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from isolation_kit import POISON_PROMPT, Engine, PoisonPredictor
from sidecar_testkit import make_config

from llmco2_sidecar._proto import sidecar_pb2 as spb
from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread

pytestmark = pytest.mark.timeout(60)


def test_error_records_carry_their_reason_over_grpc(tmp_path):
    cfg = make_config(tmp_path)
    sc = SidecarThread(cfg, predictor=PoisonPredictor("raise")).start()
    try:
        channel = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        watched: list = []
        watch = stub.WatchFinished(spb.WatchRequest())

        def read_watch() -> None:
            try:
                for m in watch:
                    watched.append(m)
            except grpc.RpcError:  # cancelled at the end
                pass

        reader = threading.Thread(target=read_watch, daemon=True)
        reader.start()
        eng = Engine(stub, "b")
        eng.send(eng.message())  # the watch is in place once it has seen this message's records
        deadline = time.monotonic() + 10
        while not watched and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watched
        poisoned = eng.message(prompt=lambda k: POISON_PROMPT)
        bad = [d.request_id for d in poisoned.events.done]
        eng.send(poisoned)
        healthy = eng.message()
        good = [d.request_id for d in healthy.events.done]
        eng.send(healthy)
        sc.flush()
        for rid in bad:
            (rec,) = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id=rid, wait_s=5)).records
            assert rec.source == "error" and "injected predictor failure" in rec.error
            assert rec.state == spb.RequestCarbon.STATE_FINISHED and rec.energy_j.total == 0
        for rid in good:
            (rec,) = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id=rid, wait_s=5)).records
            assert rec.source == "predicted" and rec.error == "" and rec.energy_j.total > 0
        logged = {r["request_id"]: r for r in read_records(cfg.log)}
        assert all(logged[r]["error"] == stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id=r)).records[0].error
                   for r in bad)
        deadline = time.monotonic() + 10
        while not set(bad + good) <= {m.request_id for m in watched} and time.monotonic() < deadline:
            time.sleep(0.02)
        watch.cancel()
        reader.join(5)
        by_id = {m.request_id: m for m in watched}
        assert all(by_id[r].source == "error" and "injected predictor failure" in by_id[r].error for r in bad)
        assert all(by_id[r].source == "predicted" and by_id[r].error == "" for r in good)
        eng.close()
        channel.close()
    finally:
        sc.stop()
