"""The sidecar's slow disk work on a thread of its own: fsyncs and journal checkpoints.

An ``fsync`` waits for the disk (2-3 ms on a quiet disk, tens of milliseconds with a second of
records to flush) and a checkpoint serialises the sidecar's state (hundreds of kilobytes of JSON).
Done where they were asked for, they stalled the event loop (the journal's interval fsync) or the
pipeline (the checkpoint: a 39 ms stall of the pipeline measured by benchmarks/sidecar.py's paced
5,000 steps/s run, a p99 record-latency spike). Here they run in the order they were submitted, on
one thread, while the loop keeps reading engine messages and the pipeline keeps writing records.

What they work on is handed over, not shared: a file to fsync is a duplicate of its descriptor
(``os.dup``, made by the owner at submit time), so the owner may roll, rotate or close its own
descriptor meanwhile; the checkpoint's state is a snapshot taken on the pipeline thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Callable

from ..threadnames import name_os_thread

log = logging.getLogger("llmco2.server")

_STOP = object()


class DiskWorker:
    """Runs submitted callables in submission order on one daemon thread."""

    def __init__(self, name: str = "llmco2-disk"):
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on the worker (after everything submitted before). After :meth:`close`
        it runs at once, on the caller's thread."""
        if self._closed:
            fn(*args)
            return
        with self._idle:
            self._pending += 1
        self._q.put((fn, args))

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until everything submitted so far has run. True when nothing is pending."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout_s)

    def close(self, timeout_s: float = 60.0) -> bool:
        """Finish what is pending and stop the thread; later submissions run on the caller's thread."""
        if self._closed:
            return True
        self._closed = True
        self._q.put(_STOP)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        name_os_thread(self._thread.name)
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # the submitter's own error handling failed: never stop the worker
                log.exception("disk worker: %s failed", getattr(fn, "__qualname__", fn))
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()


def fsync_and_close(fd: int) -> None:
    """fsync a descriptor handed over (an ``os.dup``) and close it; raises the fsync's OSError."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
