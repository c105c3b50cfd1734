"""The vLLM plugin's parts without vLLM: the scheduler patch and
hook (driven by a small scheduler with vLLM v1's ``schedule``/``update_from_output``/``_free_request``
contract and ``SchedulerOutput`` field names), against a real sidecar on loopback.

The switch and settings: test_vllm_switch.py; the real vLLM server is exercised by test_vllm_e2e.py; which vLLM is hooked, by test_vllm_compat.py.
"""

from __future__ import annotations

import os
import json
import time
from collections import deque
from types import SimpleNamespace

import pytest

from llmco2_sidecar.config import SidecarConfig
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread
from llmco2_vllm.hook import StepHook
from llmco2_vllm.patch import patch_scheduler
from llmco2_vllm.settings import Settings


# ---- a scheduler with vLLM v1's contract ----------------------------------------------------------------
class Status:
    RUNNING = SimpleNamespace(name="RUNNING")
    LENGTH = SimpleNamespace(name="FINISHED_LENGTH_CAPPED")
    ABORTED = SimpleNamespace(name="FINISHED_ABORTED")


class Request:
    def __init__(self, rid: str, prompt: int, max_tokens: int):
        self.request_id = rid
        self.prompt_token_ids = list(range(prompt))
        self.num_prompt_tokens = prompt
        self.num_computed_tokens = 0
        self.num_output_tokens = 0
        self.max_tokens = max_tokens
        self.status = Status.RUNNING

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens


class MiniScheduler:
    """vLLM v1's scheduling order in miniature: running requests first (a decode or their next prefill
    chunk), then waiting ones, within ``budget`` tokens; ``num_computed_tokens`` advances inside
    ``schedule()``, outputs land in ``update_from_output``, every finish goes through ``_free_request``."""

    def __init__(self, vllm_config, budget: int = 32):
        self.vllm_config = vllm_config
        self.budget = budget
        self.requests: dict[str, Request] = {}
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.seen: set[str] = set()
        self.scheduled_log: list[dict] = []
        self.context_log: list[dict] = []  # tokens in the KV cache before each step, per request

    def add_request(self, r: Request) -> None:
        self.requests[r.request_id] = r
        self.waiting.append(r)

    def schedule(self):
        budget, nst, new, cached_ids, cached_ctx = self.budget, {}, [], [], []
        for r in self.running:
            if budget == 0:
                break
            n = min(r.num_tokens - r.num_computed_tokens, budget)
            if n <= 0:  # its last token is still being computed (async scheduling)
                continue
            nst[r.request_id] = n
            cached_ids.append(r.request_id)
            cached_ctx.append(r.num_computed_tokens)
            budget -= n
        while self.waiting and budget > 0:
            r = self.waiting.popleft()
            self.running.append(r)
            n = min(r.num_tokens - r.num_computed_tokens, budget)
            nst[r.request_id] = n
            new.append(SimpleNamespace(req_id=r.request_id, prompt_token_ids=r.prompt_token_ids,
                                       num_computed_tokens=r.num_computed_tokens))
            budget -= n
        so = SimpleNamespace(scheduled_new_reqs=new,
                             scheduled_cached_reqs=SimpleNamespace(req_ids=cached_ids, num_computed_tokens=cached_ctx),
                             num_scheduled_tokens=nst, total_num_scheduled_tokens=sum(nst.values()))
        if nst:
            self.scheduled_log.append(dict(nst))
            self.context_log.append({rid: self.requests[rid].num_computed_tokens for rid in nst})
        for rid, n in nst.items():
            self.requests[rid].num_computed_tokens += n
        return so

    def update_from_output(self, so, model_output=None):
        for rid, n in so.num_scheduled_tokens.items():
            r = self.requests.get(rid)
            if r is None or r.status is not Status.RUNNING:
                continue
            if r.num_computed_tokens >= r.num_tokens:  # prefill complete or decode: one new token
                r.num_output_tokens += 1
                if r.num_output_tokens >= r.max_tokens:
                    r.status = Status.LENGTH
                    self.running.remove(r)
                    self._free_request(r)
        return {}

    def finish_requests(self, rid: str) -> None:
        r = self.requests.get(rid)
        if r is None:
            return
        r.status = Status.ABORTED
        if r in self.running:
            self.running.remove(r)
        if r in self.waiting:
            self.waiting.remove(r)
        self._free_request(r)

    def _free_request(self, request, delay_free_blocks: bool = False):
        del self.requests[request.request_id]

    def shutdown(self) -> None:
        pass


def _vllm_config():
    hf = SimpleNamespace(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, head_dim=128, vocab_size=32000,
                         tie_word_embeddings=False)
    return SimpleNamespace(
        model_config=SimpleNamespace(hf_text_config=hf, dtype="bfloat16", served_model_name=["llama-7b"], model="x"),
        parallel_config=SimpleNamespace(tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1,
                                        data_parallel_rank=0),
        cache_config=SimpleNamespace(cache_dtype="auto"))


@pytest.fixture
def sidecar(tmp_path):
    sc = SidecarThread(SidecarConfig(port=0, log=str(tmp_path / "carbon.jsonl"), predictor="roofline",
                                     log_steps=True)).start()
    yield sc
    sc.stop()


def _records(path, kind, n, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        recs = read_records(path, types=(kind,))
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.05)


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_patched_scheduler_sends_what_it_scheduled(sidecar, tmp_path, async_scheduling):
    class Sched(MiniScheduler):
        pass

    dump = tmp_path / "dump.jsonl"
    settings = Settings(target=sidecar.address, gpu="A100-SXM4-80GB", step_dump=str(dump))
    assert patch_scheduler(settings, Sched) and patch_scheduler(settings, Sched)  # twice is a no-op
    s = Sched(_vllm_config())
    hook = s._llmco2_hook
    assert isinstance(hook, StepHook)
    sent = []
    emit_step = hook.emitter.emit_step

    def spy(step_id, t0, t1, rids, new, ctx, prompt, phases=None):
        sent.append((step_id, t0, t1, dict(zip(rids, ctx)), dict(zip(rids, new)), dict(zip(rids, prompt))))
        order.append(("step", step_id, set(sent[-1][3])))
        return emit_step(step_id, t0, t1, rids, new, ctx, prompt, phases)

    hook.emitter.emit_step = spy
    emit_deferred = hook.emitter.emit_step_deferred

    def spy_deferred(step_id, t0, t1, read, source):  # what the emitter's thread will read later
        rids, new, ctx, prompt = read(source)
        sent.append((step_id, t0, t1, dict(zip(rids, ctx)), dict(zip(rids, new)), dict(zip(rids, prompt))))
        order.append(("step", step_id, set(sent[-1][3])))
        return emit_deferred(step_id, t0, t1, read, source)

    hook.emitter.emit_step_deferred = spy_deferred
    order = []  # ("step", step_id, rids) and ("done", rid) in the order the emitter got them
    emit_done = hook.emitter.emit_done

    def spy_done(rid, **kw):
        order.append(("done", rid))
        return emit_done(rid, **kw)

    hook.emitter.emit_done = spy_done
    sizes = [(70, 4), (5, 6), (40, 3), (12, 5), (90, 2)]
    for i, (p, o) in enumerate(sizes):
        s.add_request(Request(f"cmpl-r{i}-0-abcd{i:04d}", p, o))
    s.add_request(Request("cmpl-never-0-00000000", 10, 3))
    s.finish_requests("cmpl-never-0-00000000")  # aborted while waiting: never scheduled, never reported
    pending: deque = deque()
    steps = 0
    while s.requests:
        so = s.schedule()
        if async_scheduling:  # vLLM's async scheduling: the next step is scheduled before this one's update
            pending.append(so)
            if len(pending) < 2 and s.waiting:
                continue
            so = pending.popleft()
        s.update_from_output(so)
        steps += 1
        if steps == 2:
            s.finish_requests("cmpl-r0-0-abcd0000")  # abort mid-prefill/decode
    while pending:
        s.update_from_output(pending.popleft())
    s.shutdown()  # closes the emitter after flushing

    assert hook.errors == 0
    scheduled = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [d["num_scheduled_tokens"] for d in scheduled] == s.scheduled_log
    recs = {r["request_id"]: r for r in _records(tmp_path / "carbon.jsonl", "request", len(sizes))}
    assert set(recs) == {f"cmpl-r{i}-0-abcd{i:04d}" for i in range(len(sizes))}
    assert recs["cmpl-r0-0-abcd0000"]["aborted"] is True
    for i, (p, o) in enumerate(sizes[1:], start=1):
        rec = recs[f"cmpl-r{i}-0-abcd{i:04d}"]
        assert (rec["prompt_tokens"], rec["output_tokens"], rec["aborted"]) == (p, o, False)
    assert [c for _, _, _, c, _, _ in sent] == s.context_log
    assert [n for _, _, _, _, n, _ in sent] == s.scheduled_log
    prompts = {f"cmpl-r{i}-0-abcd{i:04d}": p for i, (p, _) in enumerate(sizes)}
    assert all(pr == {r: prompts[r] for r in pr} for *_, pr in sent)
    assert [x[0] for x in sent] == list(range(1, len(sent) + 1))
    assert all(t0 <= t1 for _, t0, t1, *_ in sent)
    assert all(sent[i][1] >= sent[i - 1][2] for i in range(1, len(sent)))  # steps tile the time line
    # each end comes right after the request's last step (not held until the engine idles)
    for i, ev in enumerate(order):
        if ev[0] == "done":
            last = max(j for j, e in enumerate(order) if e[0] == "step" and ev[1] in e[2])
            assert last < i and all(e[0] == "done" for e in order[last + 1:i]), (ev, order[last:i + 1])
    st = hook.emitter.stats()
    assert (st.flagged, st.done_rejected, st.steps_rejected, st.dropped) == (0, 0, 0, 0)
    step_recs = _records(tmp_path / "carbon.jsonl", "step", len(s.scheduled_log))
    assert [r["tokens"] for r in sorted(step_recs, key=lambda r: r["step_id"])] == [
        sum(d.values()) for d in s.scheduled_log]
    assert max(max(d.values()) for d in s.scheduled_log) == 32 and len(s.scheduled_log) > 5


def test_hook_failures_never_reach_the_scheduler(sidecar):
    broken = SimpleNamespace(num_scheduled_tokens={"x": 1}, scheduled_new_reqs=None, scheduled_cached_reqs=None,
                             total_num_scheduled_tokens=1)

    class Sched(MiniScheduler):
        def schedule(self):  # a SchedulerOutput the hook cannot read
            return broken

    patch_scheduler(Settings(target=sidecar.address, gpu="A100"), Sched)
    s = Sched(_vllm_config())
    assert s.schedule() is broken and s.schedule() is broken
    assert s._llmco2_hook.errors == 2
    assert s.update_from_output(broken) == {}  # nothing pending for it: ignored
    s.shutdown()


def test_unknown_gpu_runs_unhooked(monkeypatch):
    class Sched(MiniScheduler):
        pass

    monkeypatch.setattr("llmco2_vllm.engine.nvml_gpu_name", lambda: "")
    patch_scheduler(Settings(target="127.0.0.1:1"), Sched)
    s = Sched(_vllm_config())
    assert s._llmco2_hook is None
    s.add_request(Request("cmpl-a-0-00000000", 8, 2))
    while s.requests:
        s.update_from_output(s.schedule())


def test_the_hook_holds_steps_and_its_emitter_adds_no_second_hold():
    """LLMCO2_FLUSH_MS bounds a step's wait: the hook holds steps alone that long, its emitter sends
    what it is handed (the emitter's own default hold, for other engines, is off here)."""
    from llmco2_vllm.engine import make_hook

    hook = make_hook(SimpleNamespace(vllm_config=_vllm_config()),
                     Settings(target="127.0.0.1:1", gpu="A100", flush_ms=80.0))
    try:
        assert hook.flush_s == pytest.approx(0.08)
        assert hook.emitter.config.steps_hold_s == 0.0
    finally:
        hook.emitter.close(0.1)


@pytest.mark.slow
def test_auto_starts_a_sidecar_and_stops_it(tmp_path, monkeypatch):
    import grpc

    from llmco2_vllm import autostart

    monkeypatch.chdir(tmp_path)
    env = {"LLMCO2_SIDECAR": "auto", "LLMCO2_LOG": str(tmp_path / "auto.jsonl")}
    monkeypatch.setenv("LLMCO2_LOG", env["LLMCO2_LOG"])
    address = autostart.resolve_target(env)
    assert address.startswith("unix:") and env["LLMCO2_SIDECAR"] == address  # children inherit the address
    proc = autostart._children[-1]
    try:
        channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(channel).result(timeout=90)
        channel.close()
        assert proc.poll() is None
        # a terminal's Ctrl-C (SIGINT to vLLM's process group) does not reach it; it stays in the
        # server's session (the scheduler's autogroup counts it with the engine)
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
        assert os.getsid(proc.pid) == os.getsid(0)
    finally:
        autostart.stop_sidecars()
    assert proc.poll() is not None and not autostart._children
    assert not os.path.exists(address[len("unix:"):])
    assert autostart.resolve_target({"LLMCO2_SIDECAR": "127.0.0.1:5"}) == "127.0.0.1:5"


def test_columns_are_read_on_the_engine_thread_while_the_emitter_is_backed_up():
    class Backlogged:
        def __init__(self, backlog):
            self._q = [None] * backlog
            self.steps = []  # columns read by the hook
            self.deferred = []  # (read, SchedulerOutput): read later, on the emitter's thread

        def emit_step(self, step_id, t0, t1, rids, new, ctx, prompt, phases=None):
            self.steps.append((rids, new, ctx, prompt))
            return True

        def emit_step_deferred(self, step_id, t0, t1, read, source):
            self.deferred.append((read, source))
            return True

        def emit_done(self, *a, **k):
            return True

    for backlog, lazy in ((0, True), (5000, False)):
        sched = MiniScheduler(_vllm_config())
        em = Backlogged(backlog)
        hook = StepHook(em, flush_s=0.0)
        rid = f"cmpl-{backlog}-0-00000000"
        sched.add_request(Request(rid, 40, 2))
        so = sched.schedule()
        hook.after_schedule(sched, so, 0.0)
        hook.before_update(so)
        sched.update_from_output(so)  # vLLM advances its counters: the snapshot in `so` does not change
        if lazy:  # the SchedulerOutput itself is queued; its columns come out as scheduled
            assert em.steps == [] and em.deferred[0][1] is so
            read, source = em.deferred[0]
            assert read(source) == ([rid], [32], [0], [40])
        else:  # backed up: read now, no SchedulerOutput kept alive in the buffer
            assert em.deferred == [] and em.steps == [([rid], [32], [0], [40])]
    assert hook.read_columns(SimpleNamespace(num_scheduled_tokens=None)) == ([], [], [], [])  # never raises
    assert hook.errors == 1


def test_a_finish_is_handed_over_at_once_with_the_steps_before_it():
    """Responses wait for their request's record: a finish must not wait for the step flush interval."""

    class Recorder:
        def __init__(self):
            self.events = []

        def emit_step(self, step_id, *args):
            self.events.append(("step", step_id))
            return True

        def emit_step_deferred(self, step_id, *args):
            return self.emit_step(step_id)

        def emit_done(self, rid, **kwargs):
            self.events.append(("done", rid))
            return True

    sched = MiniScheduler(_vllm_config(), budget=64)
    em = Recorder()
    hook = StepHook(em, clock=time.monotonic, flush_s=3600.0)  # steps alone would wait an hour
    sched.add_request(Request("cmpl-short-0-00000000", 8, 1))
    sched.add_request(Request("cmpl-long-0-00000000", 8, 50))
    for _ in range(2):  # step 1: both prefill and the short one finishes; step 2: a decode
        so = sched.schedule()
        hook.after_schedule(sched, so, time.monotonic())
        hook.before_update(so)
        for rid in list(so.num_scheduled_tokens):
            r = sched.requests.get(rid)
            if r is not None and r.num_computed_tokens >= r.num_tokens and r.num_output_tokens + 1 >= r.max_tokens:
                hook.on_free(r)  # what the patched _free_request does
        sched.update_from_output(so)
    # the finish went out at once, after its step (another request still runs); the later decode step is held
    assert em.events == [("step", 1), ("done", "cmpl-short-0-00000000")]
    hook.flush()
    assert em.events == [("step", 1), ("done", "cmpl-short-0-00000000"), ("step", 2)]


def test_a_finish_says_aborted_from_the_request_status_whatever_its_type():
    class Recorder:
        def __init__(self):
            self.done = {}

        def emit_step_deferred(self, *a):
            return True

        def emit_done(self, rid, aborted=False, **kw):
            self.done[rid] = aborted
            return True

    statuses = {"a": Status.ABORTED, "b": Status.LENGTH, "c": "FINISHED_ABORTED", "d": ["FINISHED_ABORTED"],
                "e": None, "f": Status.ABORTED}
    sched = MiniScheduler(_vllm_config(), budget=1000)
    em = Recorder()
    hook = StepHook(em, flush_s=0.0)
    for rid in statuses:
        sched.add_request(Request(rid, 4, 1))
    so = sched.schedule()
    hook.after_schedule(sched, so, 0.0)
    hook.before_update(so)
    for rid, status in statuses.items():
        r = sched.requests[rid]
        r.status = status
        hook.on_free(r)
    assert em.done == {"a": True, "b": False, "c": True, "d": True, "e": False, "f": True}
    assert hook.errors == 0 and ["FINISHED_ABORTED"] not in list(hook._aborted)  # an unhashable one is not kept
