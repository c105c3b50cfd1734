"""The per-step hook: vLLM v1 scheduler steps to the llmco2 emitter, in the EngineCore process.

One :class:`StepHook` per scheduler instance. The scheduler's methods call it (see
:mod:`llmco2_vllm.patch`):

* ``schedule()``: the clock is read at entry (the step's start); after vLLM built the
  ``SchedulerOutput`` the hook keeps a reference to it and remembers the prompt length of the
  requests that are new in it. The step's per-request columns -- request ids, tokens scheduled
  (``num_scheduled_tokens``), tokens already in the KV cache before the step
  (``NewRequestData.num_computed_tokens`` and ``CachedRequestData.num_computed_tokens``, snapshots
  taken before vLLM advances its counters) and prompt lengths -- are read from that snapshot later,
  on the emitter's thread, so the engine's thread pays O(new requests), not O(batch);
* ``update_from_output()``: at entry (the model step has finished) the step's end is read and the
  step is queued for the emitter (handed over in groups, see ``flush_s``); steps are emitted in the order vLLM finishes them (FIFO, also
  with async scheduling and the pipeline-parallel batch queue), with the start clamped to the
  previous step's end so that overlapping (asynchronously scheduled) steps tile the time line;
* ``_free_request()``: every way a request leaves the scheduler (stop, length, abort, error)
  goes through it; the hook emits a finish or abort event for requests it saw in a step. A finish
  of a request that is in a step scheduled but not yet emitted is held back until that step is
  emitted, so the sidecar always sees a request's last step before its end.

The hook never raises into vLLM: its callers catch everything, count it and log the first one.
Engine-thread cost per step: three clock reads, a dict insert and pop, two deque appends
(``benchmarks/hook_overhead.py`` measures it).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import time
from typing import Any, Callable

log = logging.getLogger("vllm.llmco2")

_MAX_PENDING = 64  # scheduled-but-not-updated steps kept (vLLM has at most a few in flight)
_FORGET_AFTER = 10_000  # finished requests whose prompt length is still remembered
_MAX_OUTBOX = 256  # events held before they are handed to the emitter
_STEP, _DONE = "step", "done"
_EAGER_BACKLOG = 1_000  # emitter backlog (events) beyond which columns are read on the engine thread


class StepHook:
    """Turns scheduler calls into emitter events (see the module docstring).

    Args:
        emitter: an object with ``emit_step`` and ``emit_done`` (the sidecar client's ``Emitter``).
        clock: the engine clock; it must be the emitter's clock (``time.monotonic`` by default).
        dump_path: optional JSON-lines file receiving, per emitted step, the engine's own
            ``num_scheduled_tokens`` (a debugging and test aid; off by default).
        flush_s: steps are handed to the emitter in groups, in order: when the oldest held step
            is ``flush_s`` old (checked at each step), or every 256 events; a finish goes at once,
            with the steps held before it (the API server holds the response until the sidecar
            has the request's record; finishes come once per request, not per step). Each
            hand-over may wake the emitter's thread; waking it once per step costs a CPU-bound
            engine far more than the hook itself (benchmarks/hook_overhead.py).
    """

    def __init__(self, emitter: Any, clock: Callable[[], float] = time.monotonic, dump_path: str | None = None,
                 flush_s: float = 0.05):
        self.emitter = emitter
        self.flush_s = flush_s
        self._outbox: list[tuple] = []
        self.clock = clock
        self._pending: dict[int, tuple] = {}
        self._prompt: dict[str, int] = {}
        self._held_done: dict[int, list[tuple]] = {}  # id(SchedulerOutput) -> finishes waiting for that step
        self._forget: collections.deque[str] = collections.deque()
        self._aborted: dict[Any, bool] = {}  # request status -> aborted (see on_free)
        self._step_id = 0
        self._last_end = -math.inf
        self.errors = 0
        self.steps_emitted = 0
        self.done_emitted = 0
        self._dump = open(dump_path, "a", buffering=1) if dump_path else None  # noqa: SIM115

    # ---- called by the patched scheduler ---------------------------------------------------------
    def after_schedule(self, scheduler: Any, so: Any, t0: float) -> None:
        """Note the step vLLM just scheduled (``so``, a SchedulerOutput).

        Only the new requests' prompt lengths are read here (a few per step); the per-request
        columns are read from ``so`` (a snapshot vLLM does not change afterwards) on the emitter's
        thread, when it builds the message (:meth:`read_columns`, through the emitter's
        ``emit_step_deferred``).
        """
        nst = so.num_scheduled_tokens
        if not nst:
            return
        prompt = self._prompt
        new_reqs = so.scheduled_new_reqs
        for nr in new_reqs:
            rid = nr.req_id
            if rid not in prompt:
                prompt[rid] = _prompt_len(nr, scheduler)
        cached = so.scheduled_cached_reqs
        n_cached = len(cached) if isinstance(cached, list) else len(cached.req_ids)
        step: Any = so  # its columns are read on the emitter's thread (read_columns)
        if len(new_reqs) + n_cached != len(nst):  # a request in neither list: take the scheduler's view now
            rids, ctx = _from_requests(scheduler, nst)
            step = (rids, [nst[r] for r in rids], ctx, [prompt.get(r) or _remember(prompt, scheduler, r) for r in rids])
        pending = self._pending
        if len(pending) >= _MAX_PENDING:  # updates that never came: forget them, release their finishes
            pending.clear()
            held, self._held_done = self._held_done, {}
            for dones in held.values():
                for d in dones:
                    self._queue_done(d)
        pending[id(so)] = (t0, step, nst)

    def before_update(self, so: Any) -> None:
        """The model step of ``so`` has finished: emit it, then any finish held back for it."""
        p = self._pending.pop(id(so), None)
        if p is None:
            return
        t1 = self.clock()
        t0, step, _ = p
        if t0 < self._last_end:
            t0 = self._last_end
        if t1 < t0:
            t1 = t0
        self._last_end = t1
        self._step_id += 1
        out = self._outbox
        out.append((_STEP, t1, (self._step_id, t0, t1, step)))
        if len(out) >= _MAX_OUTBOX or t1 - out[0][1] >= self.flush_s:
            self.flush()
        if self._dump is not None:
            self._dump.write(json.dumps({"step_id": self._step_id, "num_scheduled_tokens": dict(so.num_scheduled_tokens),
                                         "total_num_scheduled_tokens": so.total_num_scheduled_tokens}) + "\n")
        if self._held_done:
            for d in self._held_done.pop(id(so), ()):
                self._queue_done(d)

    def on_free(self, request: Any) -> None:
        """``request`` leaves the scheduler (finished or aborted)."""
        rid = request.request_id
        prompt = self._prompt.get(rid)
        if prompt is None:  # never scheduled (aborted while waiting): the sidecar never saw it
            return
        # forget the prompt length later: steps still queued for the emitter's thread may need it
        forget = self._forget
        forget.append(rid)
        if len(forget) > _FORGET_AFTER:
            self._prompt.pop(forget.popleft(), None)
        status = getattr(request, "status", None)
        try:
            aborted = self._aborted[status]
        except (KeyError, TypeError):
            aborted = self._aborted_status(status)
        done = (rid, int(request.num_output_tokens), aborted, self.clock(), prompt)
        if self._pending:  # the last scheduled-but-not-emitted step carrying the request (async scheduling)
            last = None
            for key, entry in self._pending.items():
                if rid in entry[2]:
                    last = key
            if last is not None:
                self._held_done.setdefault(last, []).append(done)
                return
        self._queue_done(done)

    def _aborted_status(self, status: Any) -> bool:
        """Whether a request status (vLLM's ``RequestStatus``) means aborted; remembered per status."""
        aborted = "ABORT" in str(getattr(status, "name", status)).upper()
        try:
            self._aborted[status] = aborted
        except TypeError:  # unhashable: not remembered
            pass
        return aborted

    def flush(self) -> None:
        """Hand the steps and ends held in the outbox to the emitter, in order."""
        out, self._outbox = self._outbox, []
        em = self.emitter
        # while the emitter is backed up (sidecar away), read the columns now instead of keeping
        # whole SchedulerOutputs alive in its buffer
        eager = len(getattr(em, "_q", ())) > _EAGER_BACKLOG
        for kind, _, args in out:
            if kind is _STEP:
                step_id, t0, t1, step = args
                if type(step) is tuple:  # columns already read (see after_schedule)
                    em.emit_step(step_id, t0, t1, *step)
                elif eager:
                    em.emit_step(step_id, t0, t1, *self.read_columns(step))
                else:
                    em.emit_step_deferred(step_id, t0, t1, self.read_columns, step)
                self.steps_emitted += 1
            else:
                rid, output_tokens, aborted, t, prompt = args
                em.emit_done(rid, output_tokens=output_tokens, aborted=aborted, time_s=t, prompt_tokens=prompt)
                self.done_emitted += 1

    def read_columns(self, so: Any) -> tuple[list, list, list, list]:
        """A step's per-request columns, read from its SchedulerOutput (on the emitter's thread).

        Request ids, tokens scheduled (``num_scheduled_tokens``), tokens in the KV cache before the
        step (``NewRequestData.num_computed_tokens`` / ``CachedRequestData.num_computed_tokens``:
        snapshots taken before vLLM advanced its counters) and prompt lengths (remembered by the
        hook). Never raises: a step it cannot read becomes empty (the sidecar rejects it and the
        emitter counts it).
        """
        try:
            nst = so.num_scheduled_tokens
            rids: list[str] = []
            ctx: list[int] = []
            for nr in so.scheduled_new_reqs:
                rids.append(nr.req_id)
                ctx.append(nr.num_computed_tokens)
            cached = so.scheduled_cached_reqs
            if isinstance(cached, list):  # vLLM < 0.10: one CachedRequestData per request
                for c in cached:
                    rids.append(c.req_id)
                    ctx.append(c.num_computed_tokens)
            else:
                rids += cached.req_ids
                ctx += cached.num_computed_tokens
            new = list(map(nst.__getitem__, rids))
            prm = list(map(self._prompt.get, rids))
            if None in prm:  # requests already running when the hook started
                prm = [p or 0 for p in prm]
            return rids, new, ctx, prm
        except Exception as exc:
            self.failed("reading a SchedulerOutput", exc)
            return [], [], [], []

    def _queue_done(self, done: tuple) -> None:
        """Hand a finish, and the steps held before it, to the emitter at once (see ``flush_s``)."""
        if self._outbox:
            self._outbox.append((_DONE, done[3], done))
            self.flush()
            return
        rid, output_tokens, aborted, t, prompt = done
        self.emitter.emit_done(rid, output_tokens=output_tokens, aborted=aborted, time_s=t, prompt_tokens=prompt)
        self.done_emitted += 1

    # ---- failure handling ------------------------------------------------------------------------
    def failed(self, where: str, exc: BaseException) -> None:
        """Count a failure inside the hook; log the first one (and every 1000th) with its traceback."""
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            log.warning("llmco2: hook error in %s (%d so far; vLLM is not affected): %r", where, self.errors, exc,
                        exc_info=exc if self.errors == 1 else None)

    def close(self, timeout_s: float = 2.0) -> None:
        self.flush()
        if self._dump is not None:
            self._dump.close()
            self._dump = None
        close = getattr(self.emitter, "close", None)
        if close is not None:
            close(timeout_s=timeout_s)


def _prompt_len(new_req: Any, scheduler: Any) -> int:
    ids = getattr(new_req, "prompt_token_ids", None)
    if ids is not None:
        return len(ids)
    req = getattr(scheduler, "requests", {}).get(new_req.req_id)
    return int(getattr(req, "num_prompt_tokens", 0) or 0)


def _remember(prompt: dict, scheduler: Any, rid: str) -> int:
    req = scheduler.requests.get(rid)
    n = int(getattr(req, "num_prompt_tokens", 0) or 0)
    prompt[rid] = n
    return n


def _from_requests(scheduler: Any, nst: dict) -> tuple[list[str], list[int]]:
    """Composition from ``scheduler.requests`` (its counters were advanced by ``schedule()``)."""
    rids = list(nst)
    reqs = scheduler.requests
    return rids, [max(0, int(reqs[r].num_computed_tokens) - int(nst[r])) for r in rids]
