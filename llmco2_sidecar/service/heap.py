"""The sidecar's heap settings: freed memory is kept for the next micro-batch instead of going back
to the OS and being faulted in again, and the garbage collector's young generation is larger.

Every micro-batch allocates the same few dozen NumPy arrays (the concatenated columns, the
features, the fused forward's blocks, the attribution), from tens of kB to a few MB, and frees them
at its end. With glibc's defaults the top of the heap is trimmed after each batch (and arrays past
the adaptive mmap threshold are mapped and unmapped), so the next batch takes page faults and
zeroes fresh pages again: measured on benchmarks/sidecar.py's throughput workload (2026-12-07, this
2-core VM), 0.42 minor faults and 1.9-2.7 us of system CPU per step by default, 0.17 and 1.4-1.6 us
with the settings below, the peak resident set unchanged (516-520 MB against 519 MB).

:func:`keep_freed_memory` raises glibc's trim threshold (free heap top kept: at most
``TRIM_BYTES``) and fixes the mmap threshold (arrays below ``MMAP_BYTES`` come from the heap). A
no-op outside glibc (or when ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` are set: the
operator's choice wins).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import sys

log = logging.getLogger("llmco2.server")

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
TRIM_BYTES = 128 << 20
MMAP_BYTES = 32 << 20  # glibc's own ceiling for its adaptive threshold (64-bit)


def keep_freed_memory() -> bool:
    """Apply the settings (once per process is enough; repeating is harmless). True when applied."""
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_TRIM_THRESHOLD_" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES))
    if not ok:
        log.debug("mallopt refused the heap settings")
    return ok


#: the cyclic garbage collector's thresholds for the serving process (Python's default: 700, 10, 10).
#: A micro-batch makes and drops thousands of tracked objects (records and their dicts, accepted
#: messages, the ledger's entries) and each 700 set off a young collection that walks the survivors
#: again: measured with gc.callbacks over benchmarks/sidecar.py's throughput runs (1 + 8 streams,
#: 235,712 steps, 2026-12-07, this VM), 0.30-0.37 s in young and middle collections with the default
#: (~1.3 us a step, 3-4% of the sidecar's CPU), 0.04-0.05 s with these. The longest pause: 16-17 ms
#: against the default's 11-12 ms (middle generation) and 17-19 ms (full collections, unchanged).
GC_THRESHOLDS = (20_000, 20, 20)


def collect_less() -> None:
    """Set :data:`GC_THRESHOLDS` (process-wide; the serving process calls it once at start)."""
    gc.set_threshold(*GC_THRESHOLDS)
