"""OS names for the project's threads, so that ``top -H``, ``ps -L`` and /proc show them.

Python names its threads for itself only: the kernel sees every one as ``python``. A sidecar's CPU by
thread (``benchmarks/grpc_floor.py``), an operator's ``top -H`` on an engine with the emitter inside it,
or a profile of a busy pod then cannot tell the pipeline from the disk worker. Each long-lived thread
calls :func:`name_os_thread` with its Python name when it starts (Linux: ``prctl(PR_SET_NAME)``, 15
bytes; elsewhere nothing). It never raises.
"""

from __future__ import annotations

import sys

_PR_SET_NAME = 15
_prctl = None


def name_os_thread(name: str) -> bool:
    """Give the calling thread ``name`` (first 15 bytes) in the OS; True where it took."""
    global _prctl
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _prctl is None:
            import ctypes

            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        return _prctl(_PR_SET_NAME, name.encode("utf-8", "replace")[:15], 0, 0, 0) == 0
    except Exception:  # no libc prctl (another libc, a sandbox): the Python name still holds
        return False
