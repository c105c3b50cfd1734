"""The soak's engines: each a process of its own with the real Emitter, a Sarathi-style continuous
batcher over the Azure conversation trace's lengths, paced on the engine clock (see soak.py)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
from soak_records import PREFIX

MODEL, GPU = "meta-llama/Llama-2-7b-hf", "A100-SXM4-80GB"
MAX_CONTEXT = 4096
CHUNK = 512


# ---- the engines (one process each) ---------------------------------------------------------------
def trace_lengths() -> list[tuple[int, int]]:
    from llmco2_sidecar.sim.trace import load_azure_conv

    reqs, _ = load_azure_conv()
    return [(r.prompt_tokens, r.output_tokens) for r in reqs if r.prompt_tokens + r.output_tokens <= MAX_CONTEXT]


def engine_main(index: int, address: str, rate: float, seqs: int, t_start: float, t_stop: float, out: str,
                progress) -> None:
    """One engine: continuous batching at ``rate`` steps/s until ``t_stop`` (monotonic), then flush."""
    from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo

    lengths = trace_lengths()
    rng = random.Random(1000 + index)
    name = f"{PREFIX}{index}"
    em = Emitter(EngineInfo(engine_name="soak", model_name=MODEL, gpu=GPU, instance_id=name),
                 EmitterConfig(target=address))
    running: list[list] = []  # [rid, prompt, output, processed, generated]
    n_req = 0
    step_id = 0
    done_n: list[int] = []
    done_t: list[float] = []
    dt = 1.0 / rate
    t_next = t_start
    while time.monotonic() < t_start:
        time.sleep(0.001)
    while True:
        now = time.monotonic()
        if now >= t_stop:
            break
        while t_next <= now:
            budget = CHUNK
            rids, new, ctx, prm = [], [], [], []
            for r in running:  # decodes first, then running prefills' next chunk
                if budget <= 0:
                    break
                left = r[1] - r[3]
                n = 1 if left <= 0 else min(left, budget)
                rids.append(r[0])
                new.append(n)
                ctx.append(r[3])
                prm.append(r[1])
                budget -= n
            while len(running) < seqs and budget > 0:  # admissions
                n_req += 1
                p, o = lengths[rng.randrange(len(lengths))]
                r = [f"{name}-{n_req}", p, o, 0, 0]
                running.append(r)
                n = min(p, budget)
                rids.append(r[0])
                new.append(n)
                ctx.append(0)
                prm.append(p)
                budget -= n
            step_id += 1
            t0, t1 = t_next, t_next + dt * 0.97
            em.emit_step(step_id, t0, t1, rids, new, ctx, prm)
            scheduled = dict(zip(rids, new))
            keep = []
            for r in running:
                n = scheduled.get(r[0], 0)
                r[3] += n
                if n and r[3] >= r[1]:  # the prefill is complete or this was a decode: one token out
                    r[4] += 1
                if r[4] >= r[2]:
                    em.emit_done(r[0], output_tokens=r[2], time_s=t1, prompt_tokens=r[1])
                    done_n.append(int(r[0].rsplit("-", 1)[1]))
                    done_t.append(time.monotonic())
                else:
                    keep.append(r)
            running = keep
            t_next += dt
            progress[0] += 1
            if step_id % 64 == 0:
                progress[1] = len(done_n)
        time.sleep(max(0.0, min(0.004, t_next - time.monotonic())))
    progress[1] = len(done_n)
    flushed = em.flush(180.0)
    st = em.stats()
    em.close(5.0)
    np.savez(out, done_n=np.array(done_n, dtype=np.int64), done_t=np.array(done_t, dtype=np.float64))
    Path(out + ".json").write_text(json.dumps({
        "engine": name, "cpu_s": round(time.process_time(), 1), "steps": step_id, "finished": len(done_n), "still_running": len(running),
        "flushed": flushed, "emitted": st.emitted, "dropped": st.dropped, "steps_accepted": st.steps_accepted,
        "steps_rejected": st.steps_rejected, "done_accepted": st.done_accepted, "done_rejected": st.done_rejected,
        "connects": st.connects, "connection_errors": st.connection_errors, "last_error": st.last_error,
        "rejection_reasons": st.rejection_reasons}))
