"""NVML GPU energy meter (``nvidia-ml-py``, imported as ``pynvml``).

Per GPU it prefers the total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the
driver was loaded, Volta and newer). Where that call raises ``NVMLError_NotSupported`` it falls back to
sampling ``nvmlDeviceGetPowerUsage`` (mW) on a background thread and integrating with the trapezoid
rule. A counter reading lower than the previous one means the counter restarted (driver reload, GPU
reset): the new reading is taken as the energy since the restart and the reset is counted.

The ``pynvml`` module is injectable (``NvmlMeter(nvml=...)``): tests and benchmarks pass
:class:`~llmco2_sidecar.measure.fake_nvml.FakeNVML`, which replays recorded readings through the same
function names. pynvml exceptions are mapped to the typed errors of :mod:`.errors`.

Granularity: the counter advances every few ms to tens of ms depending on the GPU, so windows shorter
than ~50 ms are noisy; measure windows, not single short steps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .base import EnergyMeter, MeterReading
from .errors import NVMLPermissionError, NVMLReadError, NVMLUnavailable
from ..threadnames import name_os_thread

# pynvml exception class names -> "cannot run here" (everything else on a read is a read error)
_UNAVAILABLE = ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded", "NVMLError_LibRmVersionMismatch",
                "NVMLError_Uninitialized", "NVMLError_FunctionNotFound", "NVMLError_GpuNotFound",
                "NVMLError_NotFound")


def _is(nvml: Any, exc: BaseException, class_name: str) -> bool:
    cls = getattr(nvml, class_name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def map_nvml_error(nvml: Any, exc: BaseException, during: str) -> Exception:
    """Translate a pynvml exception raised ``during`` an operation into a typed meter error."""
    text = f"NVML {during}: {exc}"
    if _is(nvml, exc, "NVMLError_NoPermission"):
        return NVMLPermissionError(text + " (run as a user allowed to query the GPU, or as root)")
    for name in _UNAVAILABLE:
        if _is(nvml, exc, name):
            return NVMLUnavailable(text)
    return NVMLReadError(text)


@dataclass
class _GPUState:
    index: int
    handle: Any
    name: str
    mode: str  # "counter" or "power"
    last_raw_mj: int = 0  # counter mode: last raw counter value
    energy_mj: float = 0.0  # energy since open (counter: mJ; power: integrated mJ)
    last_t: float = 0.0  # power mode: time of last power sample
    last_w: float = 0.0  # power mode: last power sample (W)
    resets: int = 0
    samples: int = 0


class NvmlMeter(EnergyMeter):
    """Cumulative GPU energy per device, domains ``"gpu0"``, ``"gpu1"``...

    Args:
        nvml: the ``pynvml`` module or an object with the same functions (default: import pynvml).
        gpu_indices: NVML device indices to meter (default: all).
        power_sample_hz: sampling rate of the power fallback thread.
        clock: time source for timestamps and integration (default ``time.time``).
        start_thread: start the power-sampling thread when a GPU needs it (tests pass False and call
            :meth:`sample_power` themselves).
    """

    name = "nvml"

    def __init__(self, nvml: Any = None, gpu_indices: Sequence[int] | None = None, power_sample_hz: float = 20.0,
                 clock: Callable[[], float] = time.time, start_thread: bool = True):
        if nvml is None:
            try:
                import pynvml as nvml  # type: ignore[no-redef]
            except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a dependency
                raise NVMLUnavailable(f"nvidia-ml-py is not installed ({exc}); pip install nvidia-ml-py") from exc
        if power_sample_hz <= 0:
            raise ValueError("power_sample_hz must be > 0")
        self._nvml = nvml
        self._clock = clock
        self._lock = threading.Lock()
        self._period_s = 1.0 / power_sample_hz
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        try:
            nvml.nvmlInit()
        except Exception as exc:  # pynvml raises NVMLError subclasses
            raise self._unavailable(exc, "init") from exc
        try:
            count = int(nvml.nvmlDeviceGetCount())
            indices = list(range(count)) if gpu_indices is None else list(gpu_indices)
            if not indices:
                raise NVMLUnavailable("NVML found no GPU")
            for i in indices:
                if not 0 <= i < count:
                    raise NVMLUnavailable(f"GPU index {i} out of range: NVML sees {count} GPU(s)")
            self._gpus = [self._open_gpu(i) for i in indices]
        except Exception:
            self._shutdown_quietly()
            raise
        self.driver_version = self._call(nvml.nvmlSystemGetDriverVersion, default="unknown")
        if any(g.mode == "power" for g in self._gpus) and start_thread:
            self._thread = threading.Thread(target=self._run_sampler, name="llmco2-nvml-power", daemon=True)
            self._thread.start()

    # ---- opening ------------------------------------------------------------------------------
    def _unavailable(self, exc: BaseException, during: str) -> Exception:
        err = map_nvml_error(self._nvml, exc, during)
        if isinstance(err, NVMLUnavailable):
            return err
        return NVMLUnavailable(str(err))

    @staticmethod
    def _call(fn: Callable, *args: Any, default: Any = None) -> Any:
        """An informational call (name, driver version): failures give ``default``."""
        try:
            value = fn(*args)
        except Exception:
            return default
        return value.decode() if isinstance(value, bytes) else value

    def _open_gpu(self, index: int) -> _GPUState:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            raise self._unavailable(exc, f"handle of GPU {index}") from exc
        name = self._call(nvml.nvmlDeviceGetName, handle, default=f"GPU {index}")
        try:
            raw = int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            return _GPUState(index, handle, name, "counter", last_raw_mj=raw)
        except Exception as exc:
            if not _is(nvml, exc, "NVMLError_NotSupported"):
                raise self._unavailable(exc, f"energy counter of GPU {index}") from exc
        try:
            watts = float(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000.0
        except Exception as exc:
            raise self._unavailable(exc, f"GPU {index} supports neither the energy counter nor power readings") from exc
        return _GPUState(index, handle, name, "power", last_t=self._clock(), last_w=watts, samples=1)

    # ---- reading ------------------------------------------------------------------------------
    @property
    def modes(self) -> dict[str, str]:
        """``{"gpu0": "counter" | "power"}``: how each GPU is metered."""
        return {f"gpu{g.index}": g.mode for g in self._gpus}

    @property
    def resets(self) -> dict[str, int]:
        """Counter restarts seen per GPU since open."""
        return {f"gpu{g.index}": g.resets for g in self._gpus}

    @property
    def gpu_names(self) -> dict[str, str]:
        return {f"gpu{g.index}": g.name for g in self._gpus}

    def domains(self) -> list[str]:
        return [f"gpu{g.index}" for g in self._gpus]

    def _sample_power_locked(self, g: _GPUState, now: float) -> None:
        try:
            watts = float(self._nvml.nvmlDeviceGetPowerUsage(g.handle)) / 1000.0
        except Exception as exc:
            raise map_nvml_error(self._nvml, exc, f"power of GPU {g.index}") from exc
        dt = now - g.last_t
        if dt > 0:
            g.energy_mj += (watts + g.last_w) / 2.0 * dt * 1000.0
            g.last_t = now
        g.last_w = watts
        g.samples += 1

    def sample_power(self) -> None:
        """Take one power sample of every power-mode GPU (the sampler thread calls this)."""
        with self._lock:
            now = self._clock()
            for g in self._gpus:
                if g.mode == "power":
                    self._sample_power_locked(g, now)

    def _read_counter_locked(self, g: _GPUState) -> None:
        try:
            raw = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(g.handle))
        except Exception as exc:
            raise map_nvml_error(self._nvml, exc, f"energy counter of GPU {g.index}") from exc
        if raw < g.last_raw_mj:  # the counter restarted from zero: count what it holds now
            g.resets += 1
            g.energy_mj += raw
        else:
            g.energy_mj += raw - g.last_raw_mj
        g.last_raw_mj = raw
        g.samples += 1

    def read(self) -> MeterReading:
        if self._closed:
            raise NVMLReadError("NVML meter is closed")
        with self._lock:
            now = self._clock()
            for g in self._gpus:
                if g.mode == "counter":
                    self._read_counter_locked(g)
                else:
                    self._sample_power_locked(g, now)
            return MeterReading(timestamp_s=now, energy_j={f"gpu{g.index}": g.energy_mj / 1000.0 for g in self._gpus})

    def _run_sampler(self) -> None:
        name_os_thread("llmco2-nvml")
        while not self._stop.wait(self._period_s):
            try:
                self.sample_power()
            except Exception:  # a failed sample is skipped; the next one integrates over the gap
                continue

    # ---- closing ------------------------------------------------------------------------------
    def _shutdown_quietly(self) -> None:
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._shutdown_quietly()
