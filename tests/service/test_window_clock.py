"""Window records when the engine's clock is not wall time (a replayed trace, a simulator): an open
window must not be closed under a busy engine just because its timestamps lie in the past."""

from __future__ import annotations

import asyncio
from collections import Counter

from sidecar_testkit import identity, make_config, steps_message

from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarCore


def test_one_window_record_per_window_with_a_past_engine_clock(tmp_path):
    core = SidecarCore(make_config(tmp_path, log_windows=True, window_s=5.0))
    loop = asyncio.new_event_loop()
    core.start(loop)
    # the identity maps engine time 0 to 2023-11-14: every window is long "over" in wall time
    stream = core.open_stream(identity("replay").identity)
    sid = 0
    for seq in range(1, 7):  # six messages, all inside the window [0 s, 5 s) of engine time
        steps = []
        for _ in range(5):
            sid += 1
            t = sid * 0.1
            steps.append((sid, t, t + 0.05, [("r1", 1 if sid > 1 else 200, 0 if sid == 1 else 199 + sid, 200)]))
        core.handle_events(stream, steps_message(seq, steps).events)
        core.pipeline.barrier()
        core.pipeline._housekeeping()  # what the sidecar's timer runs between messages
    core.handle_events(stream, steps_message(7, [(sid + 1, 6.0, 6.05, [("r1", 1, 230, 200)])], done=[("r1", 32)]).events)
    core.pipeline.barrier()
    core.pipeline.stop()
    core.carbon_log.close()
    core.journal.close()
    loop.close()
    windows = read_records(core.config.log, ("window",))
    counts = Counter(w["window_start"] for w in windows)
    assert counts and max(counts.values()) == 1, counts
    first = min(windows, key=lambda w: w["window_start"])
    assert first["steps"] == 30
