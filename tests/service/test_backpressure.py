"""Backpressure (``--max-pending-steps``): a sidecar whose predictor falls behind stops reading engine
messages, and the pipeline wakes the waiting streams once the backlog is down to half the limit (no
polling); nothing accepted is lost. A real sidecar on loopback, the real emitter."""

from __future__ import annotations

import threading
import time

import pytest
from sidecar_testkit import GPU, MODEL, make_config, until

from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo
from llmco2_sidecar.predictor.roofline import RooflinePredictor
from llmco2_sidecar.service import core as core_mod
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread

pytestmark = pytest.mark.timeout(120)


class GatedPredictor(RooflinePredictor):
    """The roofline predictor, held at a gate: the pipeline stalls until the test opens it."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()

    def predict_steps(self, dep, steps):
        if threading.current_thread().name == "llmco2-pipeline":  # not the identity check's trial step
            self.gate.wait(60)
        return super().predict_steps(dep, steps)


@pytest.mark.parametrize("streams", [1, 3])
def test_a_stalled_pipeline_stops_the_streams_and_its_progress_wakes_them(tmp_path, monkeypatch, streams):
    # only the pipeline's wake-up can resume the streams within this test's time: the safety re-check
    # comes after 60 s
    monkeypatch.setattr(core_mod, "ROOM_RECHECK_S", 60.0)
    pred = GatedPredictor()
    sc = SidecarThread(make_config(tmp_path, max_pending_steps=8, micro_batch_steps=4), predictor=pred).start()
    ems = []
    try:
        pipe = sc.core.pipeline
        for e in range(streams):
            em = Emitter(EngineInfo(engine_name="test", model_name=MODEL, gpu=GPU, instance_id=f"bp-{e}"),
                         EmitterConfig(target=sc.address, steps_hold_s=0.0, min_send_interval_s=0.0))
            ems.append(em)
            step = 0
            for r in range(12):  # 12 requests of 3 steps each, one finish after each
                rid = f"bp-{e}-r{r}"
                t = r * 0.1
                step += 1
                em.emit_step(step, t, t + 0.02, [rid], [16], [0], [16])
                for k in (1, 2):
                    step += 1
                    em.emit_step(step, t + 0.02 * k + 0.01, t + 0.02 * k + 0.02, [rid], [1], [15 + k], [16])
                em.emit_done(rid, output_tokens=3)
                time.sleep(0.002)  # one message per request at most
        # the backlog passed the limit and a stream is waiting for room
        assert until(lambda: pipe.room_at is not None), (pipe.pending_steps, pipe.room_at)
        held = sum(em.stats().steps_accepted for em in ems)
        assert held < streams * 36  # not everything was read: the streams stopped
        pred.gate.set()
        for em in ems:
            assert em.flush(30), em.stats()
        assert sum(em.stats().steps_accepted for em in ems) == streams * 36
        sc.flush()
        recs = read_records(sc.config.log)
        assert sorted(r["request_id"] for r in recs) == sorted(f"bp-{e}-r{r}" for e in range(streams) for r in range(12))
        assert all(r["steps"] == 3 for r in recs)
    finally:
        pred.gate.set()
        for em in ems:
            em.close(2)
        sc.stop()
