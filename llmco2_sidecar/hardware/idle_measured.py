"""The project's own idle readings: from a profiling run's provenance line to rows of ``idle_readings.csv``.

``llmco2 profile`` measures idle power twice (:mod:`~..profile.idle_state`): bare, before its CUDA
context exists (``idle_bare_w``, ``idle_bare_state``), and with the context up (``idle_w``,
``idle_ctx_state``). :func:`readings_from_measurement` turns those into :class:`~.idle.IdleReading`
rows whose ``source_url`` is the measurement file's path in the repository
(``data/measurements/<file>.csv``); :func:`~.idle.idle_from_readings` lets such rows replace the public
readings of that GPU and context (our own window, state and process list are known; a pasted
nvidia-smi table's are not).

A reading is refused, with the field named, when the GPU was not idle (utilisation above 0 %), when
another process held the GPU during the bare window, or when the state is unknown.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .idle import OWN_PREFIX, IdleReading


def read_provenance(path: str | Path) -> dict[str, str]:
    """The ``key=value`` items of a measurement CSV's ``# provenance:`` line."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("# provenance:"):
                items = line[len("# provenance:"):].strip().split("; ")
                return dict(item.split("=", 1) for item in items if "=" in item)
            if not line.startswith("#"):
                break
    raise InputError(f"{path}", "no '# provenance:' line before the header", "a file written by llmco2 profile")


def readings_from_measurement(path: str | Path) -> list[IdleReading]:
    """The bare and with-context idle readings of one profiling run (bare only where it was measured)."""
    from ..profile.idle_state import GPUState
    from .catalog import load_catalog

    path = Path(path)
    prov = read_provenance(path)
    where = f"{path.name} provenance"
    if prov.get("meter", "").startswith(("fake", "null")):
        raise InputError(f"{where}.meter", f"{prov.get('meter')!r} is not a measurement", "a run with the nvml meter")
    try:
        gpu = load_catalog().resolve_gpu_id(prov.get("gpu", ""))
    except InputError:
        raise InputError(f"{where}.gpu", f"{prov.get('gpu')!r} is not a catalog GPU",
                         "add it to hardware/catalog.toml first") from None
    source = OWN_PREFIX + path.name
    date = prov.get("date", "")[:10]
    idle_s = prov.get("idle_s", "?")
    host = f"host {prov.get('host', '?')}, driver {prov.get('driver', '?')}"
    out = []
    for context, key, state_key in (("none", "idle_bare_w", "idle_bare_state"), ("cuda", "idle_w", "idle_ctx_state")):
        value = prov.get(key, "n/a")
        if value == "n/a":
            if context == "cuda":
                raise InputError(f"{where}.{key}", "missing", "a run of llmco2 profile with the nvml meter")
            continue
        state = GPUState.parse(prov.get(state_key, ""))
        if state.util_pct is None:
            raise InputError(f"{where}.{state_key}", "GPU utilisation unknown: not a usable idle reading", "util 0%")
        if state.util_pct > 0:
            raise InputError(f"{where}.{state_key}", f"utilisation {state.util_pct:g} %: the GPU was not idle", "util 0%")
        if context == "none" and state.processes != 0:
            raise InputError(f"{where}.{state_key}",
                             f"{'unknown' if state.processes is None else state.processes} compute processes on the GPU "
                             "during the bare window: not bare idle", "0 processes")
        how = ("before the harness created its CUDA context, no compute process on the GPU" if context == "none"
               else "with the harness's CUDA context up and no work")
        out.append(IdleReading(
            gpu=gpu, watts=float(value), context=context, perf_state=state.perf_state or "",
            util_pct=state.util_pct, memory_used_mib=state.memory_used_mib, power_cap_w=state.power_cap_w,
            source_url=source, date=date,
            note=f"own measurement (llmco2 profile): NVML over {idle_s} s {how}; {host}"))
    return out
