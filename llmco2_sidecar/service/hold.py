"""Held messages: the steps-only messages of a stream, journaled and ingested together (event loop only).

At low step rates every engine step is a message of its own, and each message's journal append,
validation and hand-over to the pipeline ran on a wake-up of its own with the CPU's caches cold:
about 270 us a message on the project's VM, against about 50 us for the same work on the message
right after (perf3's in-process timing, 2026-12-07). For an emitter that takes cumulative acks (its
acks come once per ``--ack-interval-ms`` anyway, :mod:`.acks`) the server holds a message that
carries steps only (no finish, no abort, no static batch: no record waits on it) for up to
``--ingest-hold-ms`` (never longer than the ack interval) and ingests the held ones in one go:

* when a message that a record waits on arrives (the held ones first, then it: message order is
  kept, and the finish's record has every step of its request);
* when a message arrives and the oldest held one has waited ``hold_s`` (the loop is awake then
  anyway), or ``MAX_HELD`` are held;
* by a timer at ``TIMER_FACTOR x hold_s`` when the stream went quiet;
* before the stream ends, or before an error ends it.

What is acknowledged does not change: a held message is journaled and validated before its Ack is
merged (a message is never acknowledged before it is in the journal), and a held message that the
stream's end or a lost connection leaves behind is not acknowledged, so the emitter sends it again.
Only the accounting of steps alone waits: up to ``hold_s`` longer before the pipeline's own
``--step-wait-ms``.
"""

from __future__ import annotations

import asyncio
from typing import Callable

MAX_HELD = 32  # as many as one cumulative Ack covers (acks.MAX_MESSAGES_PER_ACK)
TIMER_FACTOR = 1.5


class HeldMessages:
    """The held messages of one stream and the timer that ingests them when the stream goes quiet.

    ``on_due(items, first_at)`` (a plain function, run from the timer) ingests what the timer takes; it
    returns the items it could not ingest (a disk that cannot be written), which are held again
    until the next message or the stream's end (no timer then: they are retried by the handler)."""

    def __init__(self, hold_s: float, on_due: Callable[[list, float], list]):
        self.hold_s = float(hold_s)
        self.items: list = []
        self.first_at = 0.0  # loop time of the oldest held message
        self._on_due = on_due
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self.items)

    def keep(self, item) -> bool:
        """Hold ``item``; False when the held messages (``item`` last) are due now: take them."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self.items:
            self.first_at = now
        self.items.append(item)
        if len(self.items) >= MAX_HELD or now - self.first_at >= self.hold_s:
            return False
        if self._timer is None:
            self._timer = loop.call_later(self.hold_s * TIMER_FACTOR, self._due)
        return True

    def take(self) -> list:
        """Every held message, oldest first (the holder is empty afterwards)."""
        self._cancel_timer()
        items, self.items = self.items, []
        return items

    def _due(self) -> None:
        self._timer = None
        if self.items:
            first_at = self.first_at
            left = self._on_due(self.take(), first_at)
            if left:  # held again, in front of what came meanwhile (nothing can: this runs on the loop)
                self.items[:0] = left
                self.first_at = first_at

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """The stream is over: stop the timer (what is still held was not acknowledged)."""
        self._cancel_timer()
        self.items = []
