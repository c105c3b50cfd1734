"""Embodied carbon is charged by GPU time held, as SCI's time reserved: a request holds its steps and
the idle gaps it waited through; a gap no request ran through is the window records' unattributed
GPU time, and a summary's SCI includes its embodied carbon. Real gRPC on loopback, a real sidecar."""

from __future__ import annotations

import grpc
import pytest
from sidecar_testkit import identity, make_config, steps_message

from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.energy.sci import summary_sci
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread

N_GPUS = 2


def test_gpu_time_held_covers_steps_and_gaps(tmp_path):
    cfg = make_config(tmp_path, window_s=1000.0)  # one window for everything
    # request a: steps 1-2, a 3 s gap it waits through (attributed), step 3; then an idle engine for
    # 5 s (a gap before a step of a new request only: unattributed), request b: steps 4-5
    steps = [(1, 0.0, 0.5, [("a", 100, 0, 100)]),
             (2, 0.5, 1.0, [("a", 1, 100, 100)]),
             (3, 4.0, 4.5, [("a", 1, 101, 100)]),
             (4, 9.5, 10.0, [("b", 50, 0, 50)]),
             (5, 10.0, 10.5, [("b", 1, 50, 50)])]
    with SidecarThread(cfg) as sc:
        channel = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        msgs = [identity(tp=N_GPUS), steps_message(1, steps[:3], done=[("a", 3)]),
                steps_message(2, steps[3:], done=[("b", 2)])]
        list(stub.StreamEvents(iter(msgs)))
        sc.flush()
        channel.close()
    reqs = {r["request_id"]: r for r in read_records(cfg.log)}
    (win,) = read_records(cfg.log, ("window",))
    # a: 1.5 s of steps + the 3 s gap it waited through; b: 1 s of steps (the 5 s before it: nobody's)
    assert reqs["a"]["gpu_s"] == pytest.approx((1.5 + 3.0) * N_GPUS)
    assert reqs["b"]["gpu_s"] == pytest.approx(1.0 * N_GPUS)
    assert win["gpu_s"]["unattributed"] == pytest.approx(5.0 * N_GPUS)
    assert win["gpu_s"]["total"] == pytest.approx(10.5 * N_GPUS)  # the engine's whole span, first step to last
    assert sum(r["gpu_s"] for r in reqs.values()) + win["gpu_s"]["unattributed"] == pytest.approx(win["gpu_s"]["total"])
    rate = reqs["a"]["carbon_g"]["embodied"] / reqs["a"]["gpu_s"]
    assert win["carbon_g"]["embodied"] == pytest.approx(rate * win["gpu_s"]["total"])
    # the summary adds the embodied carbon of the unattributed GPU time (and its idle energy's carbon)
    s = summary_sci(reqs.values(), [win])
    idle_op = win["carbon_g"]["operational"] * win["energy_j"]["unattributed"] / win["energy_j"]["total"]
    assert s["idle_carbon_g"] == pytest.approx(idle_op + rate * 5.0 * N_GPUS)
