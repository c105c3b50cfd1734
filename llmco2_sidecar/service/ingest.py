"""Ingest: validate engine messages and turn them into columnar, accepted-only batches.

Runs on the server's event loop, so it is vectorised (numpy over the columnar step fields) and
never calls the predictor. Per engine stream it keeps the state that validation needs: the last
accepted step id and end time, the requests it has seen and not yet finished.

Outcomes:

* a bad identity (first message) raises :class:`InputError` naming the field; the server ends that
  stream with ``INVALID_ARGUMENT``; that includes anything the prediction pipeline would refuse
  about the deployment (:mod:`.admission` runs the pipeline's own construction for it);
* a bad step, done event or static batch is **rejected** (listed in the Ack with its field and
  reason) and the rest of the message is accepted;
* a step whose continuing request was never seen (the engine started before the sidecar, or
  events were dropped) is accepted and **flagged**.
"""

from __future__ import annotations

import math

import numpy as np

from .._proto import events_pb2 as pb
from .identity import deployment_from_identity, open_stream  # noqa: F401  (re-exported: the identity's checks)
from .ingest_types import (  # noqa: F401  (re-exported: the records ingest hands on)
    PHASE_CHUNK,
    PHASE_DECODE,
    PHASE_NEW,
    AcceptedSteps,
    DoneEvent,
    Ingested,
    StaticBatchEvent,
    StreamState,
)

# Absurd sizes: far above any real engine, low enough to keep the pipeline safe.
MAX_SLICES_PER_STEP = 65_536
MAX_NEW_TOKENS = 1 << 20
MAX_CONTEXT_TOKENS = 1 << 24
MAX_STEP_DURATION_S = 3600.0
MAX_STEPS_PER_MESSAGE = 100_000
MAX_BATCH_REQUESTS = 65_536
MAX_BATCH_SLOTS = 1 << 24  # requests x longest output of a static batch: the pipeline's arrays for it
CLOCK_TOLERANCE_S = 1e-3
MAX_REQUEST_ID_LEN = 512
MAX_LISTED_REJECTIONS = 16
FAST_PATH_MAX_SLICES = 64  # a one-step message up to this many slices is validated without numpy



class _Rejections:
    """A message's rejections: the first MAX_LISTED_REJECTIONS listed in its Ack (for the engine's
    log), every rejected item counted by offending field (``counts``: the metric)."""

    def __init__(self, ack: pb.Ack):
        self.ack = ack
        self.counts: dict[str, int] | None = None

    def add(self, kind: int, id_: int, request_id: str, field_: str, reason: str, items: int = 1) -> None:
        """One rejection listed (room permitting), counting ``items`` rejected items (a whole message's
        steps are one listed rejection)."""
        self.tally(field_, items)
        if len(self.ack.rejections) < MAX_LISTED_REJECTIONS:
            self.ack.rejections.add(kind=kind, id=max(0, int(id_)), request_id=request_id[:MAX_REQUEST_ID_LEN],
                                    field=field_, reason=reason)

    def tally(self, field_: str, items: int) -> None:
        """Count ``items`` rejected items of ``field_`` without listing them."""
        if self.counts is None:
            self.counts = {}
        self.counts[field_] = self.counts.get(field_, 0) + int(items)


def ingest(stream: StreamState, batch: pb.EventBatch) -> Ingested:
    """Validate one EventBatch against the stream's state; update the state for what is accepted."""
    ack = pb.Ack(seq=batch.seq, stream_id=stream.stream_id)
    rej = _Rejections(ack)
    stream.version += 1
    st = batch.steps
    steps = _ingest_steps(stream, st, ack, rej) if len(st.step_id) or len(st.request_id) else None
    batches = [b for b in (_ingest_static(stream, sb, ack, rej) for sb in batch.static_batches) if b is not None] \
        if len(batch.static_batches) else []
    done = [d for d in (_ingest_done(stream, d, ack, rej) for d in batch.done) if d is not None] \
        if len(batch.done) else []
    return Ingested(stream=stream, steps=steps, done=done, batches=batches, ack=ack, rejected_by_field=rej.counts)


def _reject_all_steps(st: pb.StepColumns, ack: pb.Ack, rej: _Rejections, field_: str, reason: str) -> None:
    n = max(len(st.step_id), 1)
    ack.steps_rejected += n
    rej.add(pb.Rejection.KIND_STEP, st.step_id[0] if len(st.step_id) else 0, "", field_, reason, items=n)


def _note_new_requests(stream, ack, rids: list, ctx, first: dict | None = None) -> None:
    """Track the stream's live requests (both validation paths): continuing requests never seen before
    are accepted and flagged; an id used again after its finish is a new request. ``first``: each
    distinct id's first index in ``rids`` (:func:`_first_index`) when the caller has it."""
    live = stream.live
    if first is None:
        unseen = set(rids).difference(live)
        if not unseen:
            return
        index = rids.index  # a C-level scan per new id: few slices here (one step)
    else:
        unseen = first.keys() - live
        if not unseen:
            return
        index = first.__getitem__
    ack.flagged += sum(1 for r in unseen if ctx[index(r)] > 0)
    if len(live) > 1_000_000:  # an engine that never reports finishes
        live.clear()
    live.update(unseen)
    done = stream.recently_done
    for r in unseen:
        done.pop(r, None)


def _first_index(rids: list) -> dict:
    """Each distinct id of ``rids`` -> the index of its first slice (one C-level pass: the later
    insertions of an id, made first in reversed order, are overwritten by the earlier ones)."""
    n = len(rids)
    return dict(zip(reversed(rids), range(n - 1, -1, -1)))


def _ingest_steps(stream: StreamState, st: pb.StepColumns, ack: pb.Ack, rej: _Rejections) -> AcceptedSteps | None:
    S = len(st.step_id)
    if not (len(st.start_s) == len(st.end_s) == len(st.slice_count) == S):
        _reject_all_steps(st, ack, rej, "steps.slice_count", "step_id, start_s, end_s and slice_count differ in length")
        return None
    if S > MAX_STEPS_PER_MESSAGE:
        _reject_all_steps(st, ack, rej, "steps.step_id", f"more than {MAX_STEPS_PER_MESSAGE} steps in one message")
        return None
    R = int(st.slice_count[0]) if S == 1 else int(sum(st.slice_count))
    rids = list(st.request_id)
    n_phase = len(st.phase)
    if not (len(rids) == len(st.new_tokens) == len(st.context_tokens) == len(st.prompt_tokens) == R) or n_phase not in (0, R):
        _reject_all_steps(st, ack, rej, "steps.request_id",
                          f"slice columns must each have sum(slice_count) = {R} entries")
        return None
    if S == 1 and R <= FAST_PATH_MAX_SLICES:
        return _ingest_one_step(stream, st, rids, R, n_phase, ack, rej)
    count = np.array(st.slice_count, dtype=np.int64)
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

    uniq = None  # the distinct request ids (when there are slices)
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
        # the checks on the distinct ids (a request appears in many steps of a message)
        uniq = _first_index(rids)
        empties = [i for i, r in enumerate(rids) if not r or len(r) > MAX_REQUEST_ID_LEN] \
            if not all(uniq) or max(map(len, uniq)) > MAX_REQUEST_ID_LEN else []
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
        bad = np.flatnonzero(~ok)
        for i in bad[:MAX_LISTED_REJECTIONS]:
            field_, text = _STEP_REASONS[int(reason[i])]
            rej.add(pb.Rejection.KIND_STEP, int(sid[i]), "", field_, text)
        if len(bad) > MAX_LISTED_REJECTIONS:  # the rest counted, not listed
            for code, n in zip(*np.unique(reason[bad[MAX_LISTED_REJECTIONS:]], return_counts=True)):
                rej.tally(_STEP_REASONS[int(code)][0], int(n))
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
    _note_new_requests(stream, ack, rids, ctx, uniq if n_ok == S else None)
    stream.last_step_id = int(sid[-1])
    stream.last_end_s = float(max(stream.last_end_s, end.max()))
    return AcceptedSteps(step_id=sid, start_s=start, end_s=end, slice_count=count, request_id=rids,
                         phase=phase.astype(np.int8), new_tokens=new, context_tokens=ctx, prompt_tokens=prm,
                         distinct=uniq.keys() if n_ok == S else None)


def _one_step_reason(stream: StreamState, st: pb.StepColumns, rids: list, R: int, sid: int, new: list, ctx: list,
                     prm: list) -> int:
    """The rejection code of a message's only step (0: accepted): the first of the columnar checks
    of :func:`_ingest_steps` that fails, in the same order (``new``, ``ctx``, ``prm``: its columns
    as lists, read from the message once)."""
    if R:
        if min(new) < 1:
            return 1
        if max(new) > MAX_NEW_TOKENS:
            return 2
        if max(ctx) > MAX_CONTEXT_TOKENS:
            return 3
        if max(prm) > MAX_CONTEXT_TOKENS:
            return 4
        if len(st.phase) and (min(st.phase) < 0 or max(st.phase) > 3):
            return 5
        if not all(rids) or max(map(len, rids)) > MAX_REQUEST_ID_LEN:
            return 6
    if R < 1:
        return 7
    if R > MAX_SLICES_PER_STEP:
        return 8
    start, end = st.start_s[0], st.end_s[0]
    if not (math.isfinite(start) and math.isfinite(end)):
        return 9
    if end < start:
        return 10
    if end - start > MAX_STEP_DURATION_S:
        return 11
    if sid <= stream.last_step_id:
        return 12
    if end < stream.last_end_s - CLOCK_TOLERANCE_S:
        return 13
    return 0


def _ingest_one_step(stream: StreamState, st: pb.StepColumns, rids: list, R: int, n_phase: int, ack: pb.Ack,
                     rej: _Rejections) -> AcceptedSteps | None:
    """:func:`_ingest_steps` for a message of one step (the common case at low step rates): the same
    checks, outcome and stream updates, in plain Python (no numpy until the accepted columns)."""
    sid = int(st.step_id[0])
    if sid > 1 << 62:
        sid = 0
    new, ctx, prm = list(st.new_tokens), list(st.context_tokens), list(st.prompt_tokens)
    code = _one_step_reason(stream, st, rids, R, sid, new, ctx, prm)
    if code:
        ack.steps_rejected += 1
        field_, text = _STEP_REASONS[code]
        rej.add(pb.Rejection.KIND_STEP, sid, "", field_, text)
        return None
    ack.steps_accepted += 1
    if n_phase:
        phase = [p if p else (PHASE_NEW if c == 0 else PHASE_CHUNK if c < q else PHASE_DECODE)
                 for p, c, q in zip(st.phase, ctx, prm)]
    else:
        phase = [PHASE_NEW if c == 0 else PHASE_CHUNK if c < q else PHASE_DECODE for c, q in zip(ctx, prm)]
    _note_new_requests(stream, ack, rids, ctx)
    end = st.end_s[0]
    stream.last_step_id = sid
    stream.last_end_s = float(max(stream.last_end_s, end))
    # four array constructions, not eight (each costs microseconds on a cold cache, once a message):
    # the columns are rows (contiguous views) of one array per dtype
    cols = np.array((new, ctx, prm), np.int64)
    ints = np.array((sid, R), np.int64)
    times = np.array((st.start_s[0], end), np.float64)
    return AcceptedSteps(step_id=ints[0:1], start_s=times[0:1], end_s=times[1:2], slice_count=ints[1:2],
                         request_id=rids, phase=np.array(phase, np.int8), new_tokens=cols[0],
                         context_tokens=cols[1], prompt_tokens=cols[2])


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
    client = d.client_request_id if len(d.client_request_id) <= MAX_REQUEST_ID_LEN else ""  # too long: dropped
    return DoneEvent(rid, bool(d.aborted), int(d.output_tokens), int(d.prompt_tokens), float(d.time_s), client)


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
    elif n * max(b.output_tokens) > MAX_BATCH_SLOTS:
        problem = ("static_batches.output_tokens", f"absurd: requests x longest output above {MAX_BATCH_SLOTS}")
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
