"""Ingest: validate engine messages and turn them into columnar, accepted-only batches.

Runs on the server's event loop, so it is vectorised (numpy over the columnar step fields) and
never calls the predictor. Per engine stream it keeps the state that validation needs: the last
accepted step id and end time, the requests it has seen and not yet finished.

Outcomes:

* a bad identity (first message) raises :class:`InputError` naming the field; the server ends that
  stream with ``INVALID_ARGUMENT``;
* a bad step, done event or static batch is **rejected** (listed in the Ack with its field and
  reason) and the rest of the message is accepted;
* a step whose continuing request was never seen (the engine started before the sidecar, or
  events were dropped) is accepted and **flagged**.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .._proto import events_pb2 as pb
from ..errors import InputError
from ..predictor.api import Deployment
from ..workload import Parallelism

# Absurd sizes: far above any real engine, low enough to keep the pipeline safe.
MAX_SLICES_PER_STEP = 65_536
MAX_NEW_TOKENS = 1 << 20
MAX_CONTEXT_TOKENS = 1 << 24
MAX_STEP_DURATION_S = 3600.0
MAX_STEPS_PER_MESSAGE = 100_000
MAX_BATCH_REQUESTS = 65_536
CLOCK_TOLERANCE_S = 1e-3
MAX_REQUEST_ID_LEN = 512
MAX_LISTED_REJECTIONS = 16

PHASE_NEW, PHASE_CHUNK, PHASE_DECODE = 1, 2, 3


@dataclass
class StreamState:
    """What the sidecar knows about one engine (keyed by its ``instance_id``)."""

    stream_id: str
    identity: pb.EngineIdentity
    deployment: Deployment
    model_label: str
    gpu_label: str
    clock_offset_s: float  # wall = engine clock + offset
    last_step_id: int = -1
    last_end_s: float = -math.inf
    last_batch_id: int = -1
    live: set = field(default_factory=set)
    recently_done: "OrderedDict[str, None]" = field(default_factory=OrderedDict)

    def forget_done(self, limit: int = 100_000) -> None:
        while len(self.recently_done) > limit:
            self.recently_done.popitem(last=False)


@dataclass
class AcceptedSteps:
    """Accepted steps of one message, columnar (S steps, R slices)."""

    step_id: np.ndarray  # int64 [S]
    start_s: np.ndarray  # float64 [S] engine clock
    end_s: np.ndarray  # float64 [S]
    slice_count: np.ndarray  # int64 [S]
    request_id: list  # str [R]
    phase: np.ndarray  # int8 [R] 1 new prefill, 2 chunk, 3 decode
    new_tokens: np.ndarray  # int64 [R]
    context_tokens: np.ndarray  # int64 [R]
    prompt_tokens: np.ndarray  # int64 [R]

    @property
    def n_steps(self) -> int:
        return int(self.step_id.shape[0])


@dataclass(frozen=True)
class DoneEvent:
    request_id: str
    aborted: bool
    output_tokens: int
    prompt_tokens: int
    time_s: float  # engine clock; 0 = unknown


@dataclass(frozen=True)
class StaticBatchEvent:
    batch_id: int
    start_s: float
    end_s: float
    request_id: tuple
    prompt_tokens: tuple
    output_tokens: tuple


@dataclass
class Ingested:
    """One message after validation: what the pipeline must process, and the Ack to send."""

    stream: StreamState
    steps: AcceptedSteps | None
    done: list
    batches: list
    ack: pb.Ack


def deployment_from_identity(ident: pb.EngineIdentity, hardware: str | None = None) -> tuple[Deployment, str, str]:
    """Resolve the identity's model and GPU. Raises :class:`InputError` naming the field."""
    from ..hardware.catalog import load_gpu

    tp, pp, dp, ep = ident.tp or 1, ident.pp or 1, ident.dp or 1, ident.ep or 1
    for name, value in (("identity.tp", tp), ("identity.pp", pp), ("identity.dp", dp), ("identity.ep", ep)):
        if value > 4096:
            raise InputError(name, f"absurd value {value}", "1..4096")
    if ident.gpu_count and ident.gpu_count != tp * pp:
        raise InputError("identity.gpu_count", f"{ident.gpu_count} GPUs but tp*pp = {tp * pp}", "0 or tp*pp")
    if not ident.gpu:
        raise InputError("identity.gpu", "missing: the GPU type of the replica", "a GPU catalog id or alias")
    try:
        gpu = load_gpu(ident.gpu, hardware) if hardware else load_gpu(ident.gpu)
    except InputError as exc:
        raise InputError("identity.gpu", str(exc).split(": ", 1)[-1]) from None
    if ident.HasField("architecture") and ident.architecture.hidden_size:
        from ..models.identity import spec_from_architecture

        model = spec_from_architecture(ident.architecture, name=ident.model_name or ident.architecture.model_type or "model")
    elif ident.model_name:
        from ..models.catalog import load_model

        try:
            model = load_model(ident.model_name)
        except InputError as exc:
            raise InputError("identity.model_name", str(exc).split(": ", 1)[-1], exc.allowed) from None
    else:
        raise InputError("identity.model_name", "missing: send a model name or the architecture fields")
    try:
        par = Parallelism(tp=int(tp), pp=int(pp), dp=int(dp), ep=int(ep))
    except InputError as exc:
        raise InputError("identity." + exc.field, str(exc).split(": ", 1)[-1]) from None
    dep = Deployment(model=model, gpu=gpu, parallel=par)
    from ..graph.builder import check_deployment

    try:  # a split the kernel graph cannot cost (tp not dividing the heads or the experts' width, ...)
        check_deployment(dep)
    except InputError as exc:
        raise InputError("identity." + exc.field, str(exc).split(": ", 1)[-1], exc.allowed) from None
    return dep, ident.model_name or model.name, gpu.gpu_id


def open_stream(ident: pb.EngineIdentity, streams: dict, hardware: str | None = None) -> StreamState:
    """Validate an identity and return the (new or resumed) stream state."""
    if not ident.engine_name:
        raise InputError("identity.engine_name", "missing", "e.g. 'vllm'")
    if len(ident.instance_id) > 256:
        raise InputError("identity.instance_id", "longer than 256 characters")
    for name in ("engine_clock_at_open_s", "wall_clock_at_open_s"):
        if not math.isfinite(getattr(ident, name)):
            raise InputError(f"identity.{name}", "not a finite number")
    dep, model_label, gpu_label = deployment_from_identity(ident, hardware)
    offset = (ident.wall_clock_at_open_s - ident.engine_clock_at_open_s) if ident.wall_clock_at_open_s else 0.0
    key = ident.instance_id or f"anon-{len(streams)}"
    state = streams.get(key)
    if state is not None and state.deployment == dep:
        state.identity = ident
        state.clock_offset_s = offset
        return state
    state = StreamState(stream_id=key, identity=ident, deployment=dep, model_label=model_label,
                        gpu_label=gpu_label, clock_offset_s=offset)
    streams[key] = state
    return state


class _Rejections:
    def __init__(self, ack: pb.Ack):
        self.ack = ack

    def add(self, kind: int, id_: int, request_id: str, field_: str, reason: str) -> None:
        if len(self.ack.rejections) < MAX_LISTED_REJECTIONS:
            self.ack.rejections.add(kind=kind, id=max(0, int(id_)), request_id=request_id[:MAX_REQUEST_ID_LEN],
                                    field=field_, reason=reason)


def ingest(stream: StreamState, batch: pb.EventBatch) -> Ingested:
    """Validate one EventBatch against the stream's state; update the state for what is accepted."""
    ack = pb.Ack(seq=batch.seq, stream_id=stream.stream_id)
    rej = _Rejections(ack)
    steps = _ingest_steps(stream, batch.steps, ack, rej) if len(batch.steps.step_id) or len(batch.steps.request_id) else None
    batches = [b for b in (_ingest_static(stream, sb, ack, rej) for sb in batch.static_batches) if b is not None]
    done = [d for d in (_ingest_done(stream, d, ack, rej) for d in batch.done) if d is not None]
    return Ingested(stream=stream, steps=steps, done=done, batches=batches, ack=ack)


def _reject_all_steps(st: pb.StepColumns, ack: pb.Ack, rej: _Rejections, field_: str, reason: str) -> None:
    ack.steps_rejected += max(len(st.step_id), 1)
    rej.add(pb.Rejection.KIND_STEP, st.step_id[0] if len(st.step_id) else 0, "", field_, reason)


def _ingest_steps(stream: StreamState, st: pb.StepColumns, ack: pb.Ack, rej: _Rejections) -> AcceptedSteps | None:
    S = len(st.step_id)
    if not (len(st.start_s) == len(st.end_s) == len(st.slice_count) == S):
        _reject_all_steps(st, ack, rej, "steps.slice_count", "step_id, start_s, end_s and slice_count differ in length")
        return None
    if S > MAX_STEPS_PER_MESSAGE:
        _reject_all_steps(st, ack, rej, "steps.step_id", f"more than {MAX_STEPS_PER_MESSAGE} steps in one message")
        return None
    count = np.array(st.slice_count, dtype=np.int64)
    R = int(count.sum())
    rids = list(st.request_id)
    n_phase = len(st.phase)
    if not (len(rids) == len(st.new_tokens) == len(st.context_tokens) == len(st.prompt_tokens) == R) or n_phase not in (0, R):
        _reject_all_steps(st, ack, rej, "steps.request_id",
                          f"slice columns must each have sum(slice_count) = {R} entries")
        return None
    sid = np.array(st.step_id, dtype=np.uint64)
    if S and sid.max() > np.uint64(1 << 62):
        bad_ids = sid > np.uint64(1 << 62)
        sid = np.where(bad_ids, 0, sid)
    sid = sid.astype(np.int64)
    start = np.array(st.start_s, dtype=np.float64)
    end = np.array(st.end_s, dtype=np.float64)
    new = np.array(st.new_tokens, dtype=np.int64)
    ctx = np.array(st.context_tokens, dtype=np.int64)
    prm = np.array(st.prompt_tokens, dtype=np.int64)
    phase = np.array(st.phase, dtype=np.int64) if n_phase else np.zeros(R, dtype=np.int64)

    reason = np.zeros(S, dtype=np.int8)  # 0 ok, else an index into REASONS
    step_of = np.repeat(np.arange(S), count) if R else np.zeros(0, dtype=np.int64)

    def mark(mask: np.ndarray, code: int) -> None:
        reason[(reason == 0) & mask] = code

    if R:
        slice_checks = (
            (new < 1, 1), (new > MAX_NEW_TOKENS, 2), (ctx > MAX_CONTEXT_TOKENS, 3), (prm > MAX_CONTEXT_TOKENS, 4),
            ((phase < 0) | (phase > 3), 5),
        )
        for mask, code in slice_checks:
            if mask.any():
                mark(np.bincount(step_of[mask], minlength=S) > 0, code)
        empties = [i for i, r in enumerate(rids) if not r or len(r) > MAX_REQUEST_ID_LEN] if not all(rids) or max(map(len, rids)) > MAX_REQUEST_ID_LEN else []
        if empties:
            mark(np.bincount(step_of[empties], minlength=S) > 0, 6)
    mark(count < 1, 7)
    mark(count > MAX_SLICES_PER_STEP, 8)
    mark(~(np.isfinite(start) & np.isfinite(end)), 9)
    mark(end < start, 10)
    with np.errstate(invalid="ignore"):  # inf - inf: already flagged (9); NaN compares False
        mark(end - start > MAX_STEP_DURATION_S, 11)
    prev_id = np.maximum.accumulate(np.concatenate(([stream.last_step_id], sid)))[:-1]
    mark(sid <= prev_id, 12)
    ok_end = np.where(reason == 0, end, -np.inf)
    prev_end = np.maximum.accumulate(np.concatenate(([stream.last_end_s], ok_end)))[:-1]
    mark(end < prev_end - CLOCK_TOLERANCE_S, 13)

    ok = reason == 0
    n_ok = int(ok.sum())
    ack.steps_accepted += n_ok
    ack.steps_rejected += S - n_ok
    if n_ok < S:
        for i in np.flatnonzero(~ok)[:MAX_LISTED_REJECTIONS]:
            field_, text = _STEP_REASONS[int(reason[i])]
            rej.add(pb.Rejection.KIND_STEP, int(sid[i]), "", field_, text)
    if n_ok == 0:
        return None
    if n_ok < S:
        slice_ok = ok[step_of]
        sid, start, end, count = sid[ok], start[ok], end[ok], count[ok]
        new, ctx, prm, phase = new[slice_ok], ctx[slice_ok], prm[slice_ok], phase[slice_ok]
        rids = [r for r, k in zip(rids, slice_ok.tolist()) if k]
    # derive unspecified phases from the token counts
    unspecified = phase == 0
    if unspecified.any():
        derived = np.where(ctx == 0, PHASE_NEW, np.where(ctx < prm, PHASE_CHUNK, PHASE_DECODE))
        phase = np.where(unspecified, derived, phase)
    # continuing requests never seen before are accepted and flagged
    live = stream.live
    unseen = set(rids).difference(live)
    if unseen:
        index = rids.index  # a C-level scan per new id: few new ids per message, many slices
        ack.flagged += sum(1 for r in unseen if ctx[index(r)] > 0)
        if len(live) > 1_000_000:  # an engine that never reports finishes
            live.clear()
        live.update(unseen)
        done = stream.recently_done
        for r in unseen:  # an id used again after its finish is a new request
            done.pop(r, None)
    stream.last_step_id = int(sid[-1])
    stream.last_end_s = float(max(stream.last_end_s, end.max()))
    return AcceptedSteps(step_id=sid, start_s=start, end_s=end, slice_count=count, request_id=rids,
                         phase=phase.astype(np.int8), new_tokens=new, context_tokens=ctx, prompt_tokens=prm)


_STEP_REASONS = {
    1: ("steps.new_tokens", "a request slice computes at least one token"),
    2: ("steps.new_tokens", f"absurd: more than {MAX_NEW_TOKENS} tokens in one step"),
    3: ("steps.context_tokens", f"absurd: more than {MAX_CONTEXT_TOKENS} tokens of context"),
    4: ("steps.prompt_tokens", f"absurd: more than {MAX_CONTEXT_TOKENS} prompt tokens"),
    5: ("steps.phase", "unknown phase code (allowed 0..3)"),
    6: ("steps.request_id", f"empty or longer than {MAX_REQUEST_ID_LEN} characters"),
    7: ("steps.slice_count", "a step has at least one request slice"),
    8: ("steps.slice_count", f"absurd: more than {MAX_SLICES_PER_STEP} request slices"),
    9: ("steps.start_s", "start_s and end_s must be finite"),
    10: ("steps.end_s", "the step ends before it starts"),
    11: ("steps.end_s", f"absurd: a step longer than {MAX_STEP_DURATION_S:.0f} s"),
    12: ("steps.step_id", "duplicate or decreasing step id"),
    13: ("steps.end_s", "time went backwards: the step ends before the previous step's end"),
}


def _ingest_done(stream: StreamState, d: pb.RequestDone, ack: pb.Ack, rej: _Rejections) -> DoneEvent | None:
    rid = d.request_id
    problem = None
    if not rid or len(rid) > MAX_REQUEST_ID_LEN:
        problem = ("done.request_id", "empty or too long")
    elif d.output_tokens > MAX_CONTEXT_TOKENS or d.prompt_tokens > MAX_CONTEXT_TOKENS:
        problem = ("done.output_tokens", "absurd token count")
    elif not math.isfinite(d.time_s):
        problem = ("done.time_s", "not a finite number")
    elif rid in stream.recently_done:
        problem = ("done.request_id", "duplicate: the request already finished")
    elif rid not in stream.live:
        problem = ("done.request_id", "unknown request id: no step of this stream carried it")
    if problem:
        ack.done_rejected += 1
        rej.add(pb.Rejection.KIND_DONE, 0, rid, *problem)
        return None
    stream.live.discard(rid)
    stream.recently_done[rid] = None
    stream.forget_done()
    ack.done_accepted += 1
    return DoneEvent(rid, bool(d.aborted), int(d.output_tokens), int(d.prompt_tokens), float(d.time_s))


def _ingest_static(stream: StreamState, b: pb.StaticBatch, ack: pb.Ack, rej: _Rejections) -> StaticBatchEvent | None:
    n = len(b.request_id)
    problem = None
    if n == 0:
        problem = ("static_batches.request_id", "a batch has at least one request")
    elif not (len(b.prompt_tokens) == len(b.output_tokens) == n):
        problem = ("static_batches.prompt_tokens", "request_id, prompt_tokens and output_tokens differ in length")
    elif n > MAX_BATCH_REQUESTS:
        problem = ("static_batches.request_id", f"absurd: more than {MAX_BATCH_REQUESTS} requests")
    elif min(b.prompt_tokens) < 1 or max(b.prompt_tokens) > MAX_CONTEXT_TOKENS:
        problem = ("static_batches.prompt_tokens", f"each request needs 1..{MAX_CONTEXT_TOKENS} prompt tokens")
    elif min(b.output_tokens) < 1 or max(b.output_tokens) > MAX_CONTEXT_TOKENS:
        problem = ("static_batches.output_tokens", f"each request generates 1..{MAX_CONTEXT_TOKENS} tokens")
    elif not (math.isfinite(b.start_s) and math.isfinite(b.end_s)) or b.end_s < b.start_s:
        problem = ("static_batches.end_s", "the batch must end after it starts (finite times)")
    elif b.end_s - b.start_s > 24 * MAX_STEP_DURATION_S:
        problem = ("static_batches.end_s", "absurd batch duration")
    elif int(b.batch_id) <= stream.last_batch_id:
        problem = ("static_batches.batch_id", "duplicate or decreasing batch id")
    elif any(not r or len(r) > MAX_REQUEST_ID_LEN for r in b.request_id):
        problem = ("static_batches.request_id", "empty or too long")
    elif len(set(b.request_id)) != n:
        problem = ("static_batches.request_id", "a request appears twice in the batch")
    if problem:
        ack.batches_rejected += 1
        rej.add(pb.Rejection.KIND_STATIC_BATCH, int(b.batch_id), "", *problem)
        return None
    stream.last_batch_id = int(b.batch_id)
    for r in b.request_id:
        stream.recently_done[r] = None
    stream.forget_done()
    ack.batches_accepted += 1
    return StaticBatchEvent(int(b.batch_id), float(b.start_s), float(b.end_s), tuple(b.request_id),
                            tuple(int(x) for x in b.prompt_tokens), tuple(int(x) for x in b.output_tokens))
