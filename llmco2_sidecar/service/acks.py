"""Cumulative acks: one Ack for the messages of up to ``--ack-interval-ms``, for emitters that say
they take them (``EngineIdentity.cumulative_acks``; this project's emitter does).

Each gRPC write costs the sidecar a round trip through gRPC's threads and the event loop; at low
step rates (one step per message) that is a large part of the sidecar's cost per message. An
emitter keeps every message until it is acknowledged, so an ack may come later without any risk:
what matters is that it is only sent for messages already in the journal (they are: an Ack is
merged here after :meth:`~.core.SidecarCore.handle_events` returned it) and that it does come:
with the first message ``interval_s`` after the oldest one pending, else by a timer at 1.5 x
``interval_s``; the stream's end, or an error that ends it, sends it first. The merged Ack
carries the last message's ``seq`` as ``seq`` and ``acked_through_seq`` and the sums of the
counts; the rejections of all of them (up to 16, as for one message).
"""

from __future__ import annotations

import asyncio

from .._proto import events_pb2 as pb
from .ingest import MAX_LISTED_REJECTIONS

MAX_MESSAGES_PER_ACK = 32  # beyond, ack at once (an emitter's window of unacknowledged messages is 64)
TIMER_FACTOR = 1.5  # a stream that went quiet gets its last ack 1.5 x the interval after its oldest message

_COUNTS = ("steps_accepted", "steps_rejected", "done_accepted", "done_rejected", "batches_accepted",
           "batches_rejected", "flagged")


def merge_ack(into: pb.Ack, ack: pb.Ack) -> None:
    """Fold ``ack`` (a later message's) into ``into``."""
    into.seq = ack.seq
    into.acked_through_seq = ack.seq
    for name in _COUNTS:
        n = getattr(ack, name)
        if n:
            setattr(into, name, getattr(into, name) + n)
    if ack.rejections:
        room = MAX_LISTED_REJECTIONS - len(into.rejections)
        if room > 0:
            into.rejections.extend(ack.rejections[:room])


class AckBatcher:
    """The pending cumulative Ack of one stream and the timer that sends it (event loop only)."""

    def __init__(self, write, interval_s: float):
        self._write_fn = write  # the stream's ``context.write``
        self.interval_s = float(interval_s)
        self.pending: pb.Ack | None = None
        self.pending_messages = 0
        self._timer: asyncio.TimerHandle | None = None
        self._first_at = 0.0  # loop time of the oldest message pending
        self._writing: asyncio.Future | None = None
        self.sent = 0
        self.failed: BaseException | None = None

    def add(self, ack: pb.Ack, since: float | None = None, decide: bool = True) -> None:
        """Hold a message's Ack (the message is journaled); it goes out with the first message that
        arrives ``interval_s`` after the oldest one it holds (the loop is awake then anyway), or by a
        timer at 1.5 x ``interval_s`` when no message comes (a timer is a wake-up of its own).
        ``since``: the loop time the message arrived, when it was held before it was journaled
        (:mod:`.hold`; default now). ``decide=False``: only merge (more come at once: the caller
        calls :meth:`decide` after the last)."""
        if self.pending is None:
            ack.acked_through_seq = ack.seq
            self.pending = ack
            self._first_at = asyncio.get_running_loop().time() if since is None else since
        else:
            merge_ack(self.pending, ack)
        self.pending_messages += 1
        if decide:
            self.decide()

    def decide(self) -> None:
        """Send the pending Ack now if it is due, else make sure a timer will."""
        if self.pending is None:
            return
        loop = asyncio.get_running_loop()
        if self._writing is not None:
            return  # the write in flight sends what is pending when it completes
        if self.pending_messages >= MAX_MESSAGES_PER_ACK or loop.time() - self._first_at >= self.interval_s:
            self._send()
        elif self._timer is None:
            self._timer = loop.call_later(self.interval_s * TIMER_FACTOR, self._send)

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pending is None or self._writing is not None or self.failed is not None:
            return
        ack, self.pending, self.pending_messages = self.pending, None, 0
        self._writing = asyncio.ensure_future(self._write(ack))

    async def _write(self, ack: pb.Ack) -> None:
        try:
            await self._write_fn(ack)
            self.sent += 1
        except Exception as exc:  # the call ended (the emitter went away): it sends the messages again
            self.failed = exc
        finally:
            self._writing = None
        if self.pending is not None and self.failed is None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s * TIMER_FACTOR, self._send)

    async def flush(self) -> None:
        """Send what is pending now (before the stream ends, or before an error ends it)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            try:
                await asyncio.shield(self._writing)
            except Exception:
                pass
            if self._timer is not None:  # set by the write that completed
                self._timer.cancel()
                self._timer = None
        if self.pending is not None and self.failed is None:
            ack, self.pending, self.pending_messages = self.pending, None, 0
            try:
                await self._write_fn(ack)
                self.sent += 1
            except Exception as exc:
                self.failed = exc

    def close(self) -> None:
        """Stop the timer (the stream is over; what was not sent is sent again by the emitter)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            self._writing.cancel()
