"""The BLAS thread team behind NumPy, kept to the predictor's intra-op thread count.

The fused inference forward (:mod:`.fused`) runs its matrix products through NumPy's BLAS (OpenBLAS
in the NumPy wheels), whose team defaults to one thread per core and is set at import time, not by
``torch.set_num_threads``. Seen on the shared 2-core machine (2026-12-06, ad-hoc timing): with the
default team, one ``[14, 14] x [14, 12288]`` product of a 128-step call took 8 ms instead of 0.1 ms
while the other core was busy. The sidecar (``predictor_threads``), ``llmco2 replay`` and the
what-if workers set torch's intra-op threads; :func:`match_torch_threads` gives NumPy's BLAS the
same count (through threadpoolctl), once per change.
"""

from __future__ import annotations

import sys

_applied: list = [None]  # the thread count last given to the BLAS libraries


def match_torch_threads() -> None:
    """Give NumPy's BLAS libraries torch's intra-op thread count when it changed since the last call
    (cheap when it did not). Without torch loaded or threadpoolctl installed, nothing happens."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    n = torch.get_num_threads()
    if _applied[0] == n:
        return
    _applied[0] = n
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency; an environment without it keeps NumPy's default
        return
    threadpool_limits(limits=n, user_api="blas")
