"""A stand-in for the ``pynvml`` module that replays recorded readings (no GPU needed).

Tests, the benchmark and ``llmco2 profile --smoke`` pass :class:`FakeNVML` to
:class:`~llmco2_sidecar.measure.nvml.NvmlMeter` in place of ``pynvml``: it has the same function names
and raises pynvml's own exception classes. Each GPU is a :class:`RecordedGPU` whose energy counter
(mJ) and power (mW) are time series of ``(t, value)`` pairs: a call at time ``t`` returns the latest
recorded value at or before ``t`` (NVML counters are step functions that advance every few ms).
``None`` means the call raises ``NVMLError_NotSupported`` (for example a GPU without the counter). A
series may instead be a callable ``t -> value`` for live synthetic readings.

A recording is a JSON object ``{"driver": "...", "gpus": [{"name": ..., "energy_mj": [[t, mJ], ...] |
null, "power_mw": [[t, mW], ...] | null, "errors": [[function, t_from, t_to, "NotSupported"|...]]}]}``;
see :func:`FakeNVML.from_recording`.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Sequence, Union

try:  # use pynvml's own exception classes so error mapping is exercised faithfully
    import pynvml as _pynvml
except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
    _pynvml = None

Series = Union[Sequence[Sequence[float]], Callable[[float], float], None]

_ERROR_CODES = {
    "NotSupported": "NVML_ERROR_NOT_SUPPORTED",
    "NoPermission": "NVML_ERROR_NO_PERMISSION",
    "GpuIsLost": "NVML_ERROR_GPU_IS_LOST",
    "Unknown": "NVML_ERROR_UNKNOWN",
    "Timeout": "NVML_ERROR_TIMEOUT",
    "LibraryNotFound": "NVML_ERROR_LIBRARY_NOT_FOUND",
    "DriverNotLoaded": "NVML_ERROR_DRIVER_NOT_LOADED",
    "Uninitialized": "NVML_ERROR_UNINITIALIZED",
}


def nvml_error(kind: str) -> Exception:
    """An exception instance as pynvml raises it, e.g. ``nvml_error("NotSupported")``."""
    if kind not in _ERROR_CODES:
        raise ValueError(f"unknown NVML error kind {kind!r}; known: {', '.join(_ERROR_CODES)}")
    if _pynvml is None:  # pragma: no cover
        return RuntimeError(f"NVMLError_{kind}")
    return _pynvml.NVMLError(getattr(_pynvml, _ERROR_CODES[kind]))


@dataclass
class RecordedGPU:
    name: str = "NVIDIA H100 80GB HBM3"
    energy_mj: Series = None
    power_mw: Series = None
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    # (function name, t_from, t_to, error kind): the call raises that error while t_from <= t < t_to
    errors: list[tuple[str, float, float, str]] = field(default_factory=list)
    # the state queries (profile/idle_state.py); None: the call raises NotSupported
    perf_state: int | None = 0
    util_pct: int | None = 0
    memory_used_bytes: int | None = 0
    memory_total_bytes: int = 80 * 2**30
    power_limit_mw: int | None = 700_000
    process_pids: list[int] | None = field(default_factory=list)


class _Replay:
    def __init__(self, series: Series):
        self.fn = series if callable(series) else None
        pts = sorted((float(t), float(v)) for t, v in series) if series is not None and not callable(series) else []
        self.times = [t for t, _ in pts]
        self.values = [v for _, v in pts]

    def at(self, t: float) -> float:
        if self.fn is not None:
            return float(self.fn(t))
        i = bisect.bisect_right(self.times, t) - 1
        return self.values[max(i, 0)]


class FakeNVML:
    """The pynvml functions NvmlMeter and the profiler use, answered from recorded series.

    Args:
        gpus: one :class:`RecordedGPU` per device.
        clock: the time at which readings are looked up (default ``time.time``; tests pass a
            controllable clock, and should pass the same one to ``NvmlMeter``).
        driver: what ``nvmlSystemGetDriverVersion`` returns.
        init_error: error kind that ``nvmlInit`` raises (e.g. ``"DriverNotLoaded"``).
    """

    def __init__(self, gpus: Sequence[RecordedGPU], clock: Callable[[], float] = time.time,
                 driver: str = "550.54.15", init_error: str | None = None):
        self.gpus = list(gpus)
        self.clock = clock
        self.driver = driver
        self.init_error = init_error
        self.initialised = 0
        self.calls: dict[str, int] = {}
        self._energy = [_Replay(g.energy_mj) for g in self.gpus]
        self._power = [_Replay(g.power_mw) for g in self.gpus]
        if _pynvml is not None:  # expose the exception classes under pynvml's names
            for name in dir(_pynvml):
                if name.startswith("NVMLError"):
                    setattr(self, name, getattr(_pynvml, name))

    @classmethod
    def from_recording(cls, path_or_dict: str | os.PathLike | dict, clock: Callable[[], float] = time.time,
                       time_offset_s: float = 0.0) -> "FakeNVML":
        """Build from a recording (JSON path or dict); ``time_offset_s`` is added to every timestamp."""
        data = path_or_dict if isinstance(path_or_dict, dict) else json.loads(open(path_or_dict).read())

        def shift(series: Any) -> Any:
            return None if series is None else [(t + time_offset_s, v) for t, v in series]

        gpus = [RecordedGPU(name=g.get("name", "GPU"), energy_mj=shift(g.get("energy_mj")), power_mw=shift(g.get("power_mw")),
                            uuid=g.get("uuid", f"GPU-{i:08d}"),
                            errors=[(e[0], e[1] + time_offset_s, e[2] + time_offset_s, e[3]) for e in g.get("errors", [])])
                for i, g in enumerate(data["gpus"])]
        return cls(gpus, clock=clock, driver=data.get("driver", "550.54.15"), init_error=data.get("init_error"))

    # ---- helpers ------------------------------------------------------------------------------
    def _count(self, fn: str) -> None:
        self.calls[fn] = self.calls.get(fn, 0) + 1

    def _check(self, fn: str, index: int) -> float:
        self._count(fn)
        if not self.initialised:
            raise nvml_error("Uninitialized")
        t = self.clock()
        for name, t0, t1, kind in self.gpus[index].errors:
            if name == fn and t0 <= t < t1:
                raise nvml_error(kind)
        return t

    # ---- the pynvml surface -------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self._count("nvmlInit")
        if self.init_error:
            raise nvml_error(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._count("nvmlShutdown")
        if not self.initialised:
            raise nvml_error("Uninitialized")
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._count("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._count("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise nvml_error("Unknown")
        return index

    def nvmlDeviceGetName(self, handle: int) -> str:
        self._count("nvmlDeviceGetName")
        return self.gpus[handle].name

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        self._count("nvmlDeviceGetUUID")
        return self.gpus[handle].uuid

    def nvmlSystemGetDriverVersion(self) -> str:
        self._count("nvmlSystemGetDriverVersion")
        return self.driver

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        t = self._check("nvmlDeviceGetTotalEnergyConsumption", handle)
        if self.gpus[handle].energy_mj is None:
            raise nvml_error("NotSupported")
        return int(self._energy[handle].at(t))

    NVML_TEMPERATURE_GPU = 0  # pynvml's sensor constant

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        """Degrees C: 30 at idle plus 0.2 per watt the GPU draws at this moment (a plausible shape)."""
        t = self._check("nvmlDeviceGetTemperature", handle)
        if sensor != self.NVML_TEMPERATURE_GPU:
            raise nvml_error("InvalidArgument")
        watts = self._power[handle].at(t) / 1000.0 if self.gpus[handle].power_mw is not None else 0.0
        return int(round(30 + 0.2 * watts))

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        t = self._check("nvmlDeviceGetPowerUsage", handle)
        if self.gpus[handle].power_mw is None:
            raise nvml_error("NotSupported")
        return int(self._power[handle].at(t))

    # ---- state queries (profile/idle_state.py): the RecordedGPU's fields; None raises NotSupported ----
    def _state(self, fn: str, handle: int, attr: str) -> Any:
        self._check(fn, handle)
        value = getattr(self.gpus[handle], attr)
        if value is None:
            raise nvml_error("NotSupported")
        return value

    def nvmlDeviceGetPerformanceState(self, handle: int) -> int:
        return int(self._state("nvmlDeviceGetPerformanceState", handle, "perf_state"))

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=int(self._state("nvmlDeviceGetUtilizationRates", handle, "util_pct")), memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        used = int(self._state("nvmlDeviceGetMemoryInfo", handle, "memory_used_bytes"))
        total = self.gpus[handle].memory_total_bytes
        return SimpleNamespace(total=total, used=used, free=total - used)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return int(self._state("nvmlDeviceGetEnforcedPowerLimit", handle, "power_limit_mw"))

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list:
        pids = self._state("nvmlDeviceGetComputeRunningProcesses", handle, "process_pids")
        return [SimpleNamespace(pid=p, usedGpuMemory=512 * 2**20) for p in pids]


def constant_power_gpu(watts: float, start_s: float | None = None, counter: bool = True,
                       name: str = "FAKE GPU (constant power, not a measurement)") -> RecordedGPU:
    """A live synthetic GPU drawing ``watts`` from ``start_s`` on (for smoke runs and benchmarks)."""
    t0 = time.time() if start_s is None else start_s
    energy = (lambda t: max(t - t0, 0.0) * watts * 1000.0) if counter else None
    return RecordedGPU(name=name, energy_mj=energy, power_mw=lambda t: watts * 1000.0)
