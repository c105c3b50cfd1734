"""The pipeline's inbox: the event loop appends accepted messages, the pipeline thread takes them,
and the loop wakes the pipeline only when the pipeline needs to know.

A ``queue.SimpleQueue`` wakes a waiting consumer on every put: at low step rates (one step per
message) the pipeline thread then woke once per message only to go back to sleep until its
micro-batch deadline, a thread switch and a GIL hand-over per message on the sidecar's one core.
Here the consumer says what it waits for (:meth:`Inbox.wait`'s ``mode``) and a put wakes it only
for that:

* ``ANY``: the pipeline is idle; the first item wakes it (it then knows its micro-batch deadline);
* ``AWAITED``: it holds steps alone (nothing waits on their records); an item that a record waits
  on (a finish, an abort, a static batch) wakes it, so that it can close the micro-batch within
  ``micro_batch_ms``;
* ``FULL``: it holds a micro-batch that closes at its deadline anyway; only a full micro-batch
  (``room`` more steps arrived) wakes it early.

A control item (a barrier, stop) wakes the pipeline in every mode but ``NONE`` (busy: it looks at
the inbox again before it sleeps). Lost wake-ups cannot happen: the consumer publishes its mode
before it looks at the inbox a last time, and a producer appends before it reads the mode (both
under the GIL). A spurious wake-up (a signal left from a wait that already ended) only makes the
consumer look again.
"""

from __future__ import annotations

import collections
import threading

NONE, FULL, AWAITED, ANY = 0, 1, 2, 3


class Inbox:
    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()
        self._gate = threading.Lock()  # a binary semaphore: held while nobody signalled
        self._gate.acquire()
        self._mode = NONE
        self._in_steps = 0  # steps put so far (producer side only)
        self._wake_at_steps = 0  # FULL/AWAITED: wake once _in_steps reaches this
        self.wakeups = 0  # signals sent (tests, diagnostics)

    def __len__(self) -> int:
        return len(self._items)

    # ---- producer (the event loop thread) ------------------------------------------------------
    def put(self, item, steps: int = 0, awaited: bool = False) -> None:
        """Append an accepted message of ``steps`` steps (``awaited``: a record waits on it)."""
        self._items.append(item)
        self._in_steps += steps
        mode = self._mode
        if mode and (mode == ANY or (awaited and mode == AWAITED) or self._in_steps >= self._wake_at_steps):
            self._signal()

    def put_control(self, item) -> None:
        """Append a control item (a barrier, stop): it wakes the consumer unless it is busy."""
        self._items.append(item)
        if self._mode:
            self._signal()

    def _signal(self) -> None:
        self._mode = NONE
        self.wakeups += 1
        try:
            self._gate.release()
        except RuntimeError:  # already signalled
            pass

    # ---- consumer (the pipeline thread) --------------------------------------------------------
    def pop(self):
        """The oldest item, or None when the inbox is empty (never blocks)."""
        try:
            return self._items.popleft()
        except IndexError:
            return None

    def take(self, timeout_s: float):
        """The oldest item, waiting up to ``timeout_s`` for one (None when none came)."""
        item = self.pop()
        if item is None:
            self.wait(timeout_s, ANY)
            item = self.pop()
        return item

    def wait(self, timeout_s: float, mode: int, room: int = 0) -> None:
        """Sleep up to ``timeout_s`` unless (or until) an item of interest to ``mode`` arrives;
        ``room``: the steps that fill the consumer's micro-batch (FULL, AWAITED). Call it with the
        inbox emptied (:meth:`pop` gave None): it returns at once when something is there."""
        self._gate.acquire(blocking=False)  # drop a signal left from an earlier wait
        self._wake_at_steps = self._in_steps + max(int(room), 1)
        self._mode = mode
        if not self._items:  # the caller has just emptied it: an item here arrived before the mode was
            self._gate.acquire(timeout=max(timeout_s, 0.0))  # published, unseen by its producer
        self._mode = NONE
