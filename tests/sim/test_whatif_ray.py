"""``llmco2 whatif --ray``: the same per-configuration function as Ray tasks on a local Ray instance
(skipped where Ray is not installed; it is the optional ``ray`` extra)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmco2_sidecar.sim.replay import ReplaySetup
from llmco2_sidecar.sim.whatif import execute, plan

ray = pytest.importorskip("ray")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_tasks_equal_local_processes(tmp_path):
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.exponential(0.2, 40))
    t -= t[0]
    p = tmp_path / "t.csv"
    p.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(
        f"{a:.6f},{int(rng.integers(10, 500))},{int(rng.integers(1, 60))}\n" for a in t))
    base = ReplaySetup(trace=str(p), model="meta-llama/Llama-2-7b-hf", gpu="A100", predictor="roofline")
    tasks, _ = plan(base, [base.model], ["A100-SXM4-80GB", "H100"], [1], [32], ["fr"])
    local = execute(tasks, jobs=1)
    done = []
    remote = execute(tasks, ray_address="local", on_done=lambda: done.append(1))
    assert json.dumps(remote) == json.dumps(local) and len(done) == len(tasks)
