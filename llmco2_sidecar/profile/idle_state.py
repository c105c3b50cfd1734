"""Idle power as the harness measures it: bare (before this process creates a CUDA context) and
with a context (the engine's state between steps), each with the GPU's state at the time.

The catalog's two idle figures (``idle_w``, ``idle_ctx_w``; :mod:`~..hardware.idle`) differ by the
CUDA-context step (26-66 W in Vadari, arXiv 2605.23918), as much as the spread between public
readings, so a reading is only usable with its context known. The harness therefore measures bare
idle first, through NVML alone: no torch CUDA call has run yet, so no context of ours exists, and
NVML lists the compute processes of anybody else (a reading with another process on the GPU is kept
but says so, and ``hardware.idle --add-measured`` refuses it as bare idle). Then the runner creates
the context and measures again (``runner.measure_idle``).

Each reading goes into the measurement file's provenance line (``idle_bare_w``, ``idle_bare_state``,
``idle_ctx_state``; see data/measurements/README.md), from where ``python -m
llmco2_sidecar.hardware.idle --add-measured FILE`` turns it into rows of ``idle_readings.csv``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

#: Seconds to wait before a bare-idle window: a GPU that just ran work takes a moment to clock down.
SETTLE_S = 2.0


@dataclass(frozen=True)
class GPUState:
    """What NVML says of a GPU at one moment (None: NVML could not tell).

    Attributes:
        perf_state: performance state, ``P0`` (highest) to ``P12``.
        util_pct: GPU utilisation over NVML's last sample period, in %.
        memory_used_mib: device memory in use, in MiB.
        power_cap_w: the enforced power limit, in W (identifies the SKU's setting).
        processes: compute processes holding a context on the GPU (ours included once it has one).
    """

    perf_state: str | None = None
    util_pct: float | None = None
    memory_used_mib: float | None = None
    power_cap_w: float | None = None
    processes: int | None = None

    def text(self) -> str:
        """One provenance value (no ``;``): ``P0/util 0%/mem 1 MiB/cap 700 W/0 processes``."""
        def part(value, fmt: str) -> str:
            return "?" if value is None else fmt.format(value)
        return "/".join((part(self.perf_state, "{}"), part(self.util_pct, "util {:g}%"), part(self.memory_used_mib, "mem {:g} MiB"),
                         part(self.power_cap_w, "cap {:g} W"), part(self.processes, "{} processes")))

    @classmethod
    def parse(cls, text: str) -> "GPUState":
        """The inverse of :meth:`text` (unknown parts stay None)."""
        parts = (text or "").split("/")
        out: dict[str, Any] = {}
        for p in parts:
            p = p.strip()
            if p.startswith("P") and p[1:].isdigit():
                out["perf_state"] = p
            elif p.startswith("util ") and p.endswith("%"):
                out["util_pct"] = float(p[5:-1])
            elif p.startswith("mem ") and p.endswith(" MiB"):
                out["memory_used_mib"] = float(p[4:-4])
            elif p.startswith("cap ") and p.endswith(" W"):
                out["power_cap_w"] = float(p[4:-2])
            elif p.endswith(" processes") and p.split()[0].isdigit():
                out["processes"] = int(p.split()[0])
        return cls(**out)


@dataclass(frozen=True)
class IdleMeasurement:
    """Average power of one GPU over a window with no work, and its state at the start."""

    watts: float
    seconds: float
    state: GPUState
    source: str  # "energy counter" or "power samples"


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # NVML: NotSupported, NoPermission, ... -> unknown
        return None


def gpu_state(nvml: Any, handle: Any) -> GPUState:
    """The GPU's state now; any query NVML refuses is left unknown (never raises)."""
    perf = _try(lambda: nvml.nvmlDeviceGetPerformanceState(handle))
    util = _try(lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    mem = _try(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    cap = _try(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    procs = _try(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    return GPUState(perf_state=None if perf is None else f"P{int(perf)}",
                    util_pct=None if util is None else float(util.gpu),
                    memory_used_mib=None if mem is None else round(mem.used / 2**20, 1),
                    power_cap_w=None if cap is None else cap / 1000.0,
                    processes=None if procs is None else len(procs))


def measure_bare_idle(nvml: Any, seconds: float, settle_s: float = SETTLE_S, poll_s: float = 0.05,
                      clock: Callable[[], float] = time.perf_counter,
                      sleep: Callable[[float], None] = time.sleep) -> dict[int, IdleMeasurement]:
    """Average power of every NVML device over ``seconds`` (after ``settle_s``), keyed by NVML index.

    Call it before this process makes any CUDA call. Uses the total-energy counter where the GPU has
    one (one difference over the window), else the mean of power samples every ``poll_s``. Raises what
    ``nvmlInit`` raises; a device NVML cannot read is left out."""
    nvml.nvmlInit()
    try:
        handles = {i: nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())}
        if settle_s > 0:
            sleep(settle_s)
        states = {i: gpu_state(nvml, h) for i, h in handles.items()}
        e0 = {i: _try(lambda h=h: nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for i, h in handles.items()}
        samples: dict[int, list[float]] = {i: [] for i in handles}
        t0 = clock()
        end = t0 + seconds
        while True:
            for i, h in handles.items():
                if e0[i] is None:
                    mw = _try(lambda h=h: nvml.nvmlDeviceGetPowerUsage(h))
                    if mw is not None:
                        samples[i].append(mw / 1000.0)
            if clock() >= end:
                break
            sleep(poll_s)
        t1 = clock()
        out = {}
        for i, h in handles.items():
            if e0[i] is not None:
                e1 = _try(lambda h=h: nvml.nvmlDeviceGetTotalEnergyConsumption(h))
                if e1 is not None and t1 > t0:
                    out[i] = IdleMeasurement((e1 - e0[i]) / 1000.0 / (t1 - t0), t1 - t0, states[i], "energy counter")
                    continue
            if samples[i]:
                out[i] = IdleMeasurement(sum(samples[i]) / len(samples[i]), t1 - t0, states[i], "power samples")
        return out
    finally:
        _try(nvml.nvmlShutdown)


WINDOW_UPDATES = 5  # a measured window spans at least this many updates of the energy counter


def measure_idle(dev: Any, seconds: float, poll_s: float = 0.002) -> tuple[float, float | None]:
    """Average power over ``seconds`` with the CUDA context up and no work (W), and the energy
    counter's update period (s; None when fewer than 4 updates were seen, e.g. the null meter).

    NVML's energy counter moves in steps (about every 100 ms on recent NVIDIA GPUs: ML.ENERGY,
    "Thermally Stable Profiling for Accurate GPU Energy Measurement"; Yang et al., arXiv:2312.02741),
    so the counter is polled every ``poll_s`` here and the median time between its changes kept: a
    window of one step would be off by up to a whole step.
    """
    dev.sync()
    time.sleep(min(1.0, seconds / 2))  # settle after context creation
    e0, t0 = dev.read_j(), time.perf_counter()
    end, last, changes = t0 + seconds, e0, []
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        value = dev.read_j()
        if value != last:
            changes.append(now)
            last = value
        time.sleep(poll_s)
    e1, t1 = dev.read_j(), time.perf_counter()
    period = statistics.median(b - a for a, b in zip(changes, changes[1:])) if len(changes) >= 4 else None
    return ((e1 - e0) / (t1 - t0) if t1 > t0 else 0.0), period


def effective_min_window(min_window_s: float, counter_period_s: float | None) -> float:
    """The planned shortest window, raised to ``WINDOW_UPDATES`` counter updates where the counter is coarser."""
    if counter_period_s is None:
        return min_window_s
    return max(min_window_s, WINDOW_UPDATES * counter_period_s)
