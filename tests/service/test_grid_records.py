"""A sidecar with a live --grid source: every record carries the intensity it used, its kind,
source and time; a failing API is kept stale, then replaced by the static region (log, metrics)."""

from __future__ import annotations

import copy
import socket
import time
import urllib.request

import grpc
from grid_fakes import UK_NATIONAL, WT_FORECAST, FakeApi, fresh, fresh_ts
from sidecar_testkit import identity, make_config, steps_message

from llmco2_sidecar._proto import sidecar_pb2 as spb
from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.energy.grid.sources import static_reading
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_request(stub, rid: str, instance: str) -> None:
    msgs = [identity(instance_id=instance),
            steps_message(1, [(1, 0.0, 0.05, [(rid, 100, 0, 100)]), (2, 0.06, 0.07, [(rid, 1, 100, 100)])],
                          done=[(rid, 2)])]
    list(stub.StreamEvents(iter(msgs)))


def test_records_carry_live_intensity_then_fallback(tmp_path):
    api = FakeApi()
    now = fresh_ts()
    api.set("/intensity", 200, fresh(UK_NATIONAL))
    port = _free_port()
    cfg = make_config(tmp_path, grid="ukci", grid_url=api.url, grid_ttl_s=0.1, grid_stale_s=0.5, metrics_port=port)
    try:
        with SidecarThread(cfg) as sc:
            channel = grpc.insecure_channel(sc.address)
            stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
            _one_request(stub, "r-live", "e1")
            sc.flush()
            api.set("/intensity", 503, {"error": {"code": "503", "message": "maintenance"}})
            deadline = time.monotonic() + 10
            while sc.core.grid.state != "fallback" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sc.core.grid.state == "fallback"
            _one_request(stub, "r-fallback", "e2")
            sc.flush()
            reply = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="r-live"))
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            channel.close()
    finally:
        api.close()
    recs = {r["request_id"]: r for r in read_records(cfg.log)}
    live, fb = recs["r-live"], recs["r-fallback"]
    assert live["carbon_intensity_g_per_kwh"] == 182.0
    assert (live["carbon_intensity_kind"], live["carbon_intensity_source"]) == ("location", "ukci:national (forecast)")
    assert live["carbon_intensity_ts"] in (now, now + 3600)  # the hour may turn
    e = live["energy_j"]["total"]
    assert live["carbon_g"]["operational"] == e * live["pue"] / 3.6e6 * 182.0
    world = static_reading(None)
    assert fb["carbon_intensity_g_per_kwh"] == world.g_per_kwh
    assert fb["carbon_intensity_source"].startswith(world.source + " (fallback: ukci failing since")
    assert reply.records[0].carbon_intensity_g_per_kwh == 182.0
    assert "llmco2_grid_fallback 1.0" in text
    assert "llmco2_grid_polls_total{outcome=\"error\"}" in text
    # SCI per request and per 1,000 output tokens
    sci = live["sci"]
    assert sci["g_per_request"] == live["carbon_g"]["total"]
    assert sci["g_per_1k_output_tokens"] == live["carbon_g"]["total"] * 1000 / 2


def test_marginal_source_marks_records_marginal(tmp_path, monkeypatch):
    api = FakeApi()
    api.set("/v3/forecast", 200, fresh(WT_FORECAST))
    monkeypatch.setenv("WATTTIME_USER", "alice")
    monkeypatch.setenv("WATTTIME_PASSWORD", "s3cret")
    cfg = make_config(tmp_path, grid="watttime:CAISO_NORTH", grid_url=api.url)
    try:
        with SidecarThread(cfg) as sc:
            channel = grpc.insecure_channel(sc.address)
            _one_request(sidecar_pb2_grpc.CarbonSidecarStub(channel), "m-1", "e1")
            sc.flush()
            channel.close()
    finally:
        api.close()
    rec = read_records(cfg.log)[0]
    assert rec["carbon_intensity_kind"] == "marginal"
    assert abs(rec["carbon_intensity_g_per_kwh"] - 912.0 * 0.45359237) < 1e-9
