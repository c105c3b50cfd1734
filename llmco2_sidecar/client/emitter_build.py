"""The emitter's queued events as wire messages: the event kinds, which of them a record awaits, and one
columnar ``EngineMessage`` per drain (runs on the emitter's sender thread, never the engine's)."""

from __future__ import annotations

from typing import Any

from .._proto import events_pb2 as pb

_STEP, _DONE, _BATCH, _DEFERRED = 0, 1, 2, 3


def awaited(items: list) -> bool:
    """Does a record wait on one of these events (a finish, an abort, a static batch)?"""
    for it in items:
        if it[0] == _DONE or it[0] == _BATCH:
            return True
    return False


def build_message(items: list, client_id_of=None) -> tuple[pb.EngineMessage, int]:
    """One ``EngineMessage`` of queued events (columnar steps, finishes, static batches) and their count.
    Raises TypeError / ValueError / OverflowError for an event the wire cannot carry."""
    msg = pb.EngineMessage()
    ev = msg.events
    step_id, start, end, count = [], [], [], []
    rids, new, ctx, prm, phases = [], [], [], [], []
    any_phase = False
    for it in items:
        kind = it[0]
        if kind == _DEFERRED:
            _, sid, s0, s1, read, source = it
            try:
                r, n, c, p = read(source)
            except Exception as exc:  # a reader that broke its promise: drop the step, not the stream
                raise ValueError(f"reading step {sid}'s columns failed: {exc!r}") from exc
            it = (_STEP, sid, s0, s1, r, n, c, p, None)
            kind = _STEP
        if kind == _STEP:
            _, sid, s0, s1, r, n, c, p, ph = it
            step_id.append(int(sid))
            start.append(float(s0))
            end.append(float(s1))
            count.append(len(r))
            rids.extend(r)
            new.extend(_ints(n))
            ctx.extend(_ints(c))
            prm.extend(_ints(p))
            if ph is not None:
                if not any_phase:
                    phases = [0] * (len(rids) - len(r))
                    any_phase = True
                phases.extend(_ints(ph))
            elif any_phase:
                phases.extend([0] * len(r))
        elif kind == _DONE:
            _, rid, out_tok, aborted, t, p, client = it
            if not client and client_id_of is not None:
                try:
                    client = client_id_of(rid) or ""
                except Exception:  # a bad mapping loses the client id, never the finish
                    client = ""
            ev.done.add(request_id=rid, output_tokens=int(out_tok), aborted=bool(aborted), time_s=float(t),
                        prompt_tokens=int(p), client_request_id=str(client))
        else:
            _, bid, s0, s1, r, p, o = it
            ev.static_batches.add(batch_id=int(bid), start_s=float(s0), end_s=float(s1), request_id=list(r),
                                  prompt_tokens=_ints(p), output_tokens=_ints(o))
    if step_id:
        st = ev.steps
        st.step_id.extend(step_id)
        st.start_s.extend(start)
        st.end_s.extend(end)
        st.slice_count.extend(count)
        st.request_id.extend(rids)
        st.new_tokens.extend(new)
        st.context_tokens.extend(ctx)
        st.prompt_tokens.extend(prm)
        if any_phase:
            st.phase.extend(phases)
    return msg, len(items)


def _ints(seq: Any) -> list[int]:
    tolist = getattr(seq, "tolist", None)
    if tolist is not None:  # numpy arrays
        return tolist()
    return seq if isinstance(seq, list) else list(seq)
