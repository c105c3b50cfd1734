"""The project's threads carry their names into the OS (top -H, ps -L, /proc/PID/task/TID/comm)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from llmco2_sidecar.threadnames import name_os_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_NAME) is Linux's")


def os_names() -> set[str]:
    return {Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task")}


def test_a_thread_named_in_the_os_and_cut_to_15_bytes():
    seen = []

    def run():
        assert name_os_thread("llmco2-a-very-long-thread-name")
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == ["llmco2-a-very-l"]


def test_the_sidecars_threads_are_named(sidecar):
    """A real sidecar (gRPC on loopback): its pipeline and disk worker show by name."""
    names = os_names()
    assert "llmco2-pipeline" in names
    assert any(n.startswith("llmco2-disk") for n in names), names


def test_the_emitter_thread_is_named_in_the_engines_process(sidecar):
    from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo

    em = Emitter(EngineInfo(engine_name="t", model_name="meta-llama/Llama-2-7b-hf", gpu="A100-SXM4-80GB"),
                 EmitterConfig(target=sidecar.address))
    try:
        em.emit_step(1, 0.0, 0.01, ["r"], [4], [0], [4])
        assert em.flush(5.0)  # the thread has connected and sent
        assert "llmco2-emitter" in os_names()
    finally:
        em.close(2.0)
