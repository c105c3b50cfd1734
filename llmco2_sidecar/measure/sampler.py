"""Measurement windows aligned to step timestamps.

:class:`MeterSampler` reads every meter periodically (default 10 Hz) on a daemon thread and keeps a
bounded ring of cumulative readings per meter. :meth:`MeterSampler.window` then gives the energy
between two arbitrary timestamps (for example the start of one engine step and the end of a later
one) by linear interpolation of the cumulative readings that bracket each timestamp. A timestamp newer
than the last reading triggers one fresh reading, so a window that ends "now" needs no wait.

A failing meter never stops the sampler: the error is counted in :attr:`MeterSampler.errors` and the
sample skipped (the interpolation spans the gap).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from .base import EnergyMeter, MeterReading
from ..threadnames import name_os_thread


# domains whose energy is already inside another domain's (not added by Window.total_j)
CONTAINED_DOMAIN_PREFIXES = ("core-", "uncore-", "psys-")


@dataclass(frozen=True)
class Window:
    """Measured energy between ``start_s`` and ``end_s`` (time.time() seconds), per domain in J.

    ``complete`` is False when the ring did not cover the whole window (readings older than the ring
    were evicted, or ``end_s`` lies in the future); the energy then covers only
    ``[covered_start_s, covered_end_s]``.
    """

    start_s: float
    end_s: float
    energy_j: dict[str, float]
    covered_start_s: float
    covered_end_s: float
    complete: bool
    meters: tuple[str, ...] = field(default=())

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def total_j(self) -> float:
        """Sum over domains, leaving out those contained in another (RAPL core/uncore are part of
        their package; psys covers the whole platform)."""
        return sum(v for d, v in self.energy_j.items() if not d.startswith(CONTAINED_DOMAIN_PREFIXES))


class _Ring:
    def __init__(self, maxlen: int):
        self.times: deque[float] = deque(maxlen=maxlen)
        self.readings: deque[MeterReading] = deque(maxlen=maxlen)

    def append(self, reading: MeterReading) -> None:
        if self.times and reading.timestamp_s < self.times[-1]:
            return  # never let a clock step backwards break the ordering bisect relies on
        self.times.append(reading.timestamp_s)
        self.readings.append(reading)

    def value_at(self, t: float) -> tuple[dict[str, float], float]:
        """Cumulative energy interpolated at ``t``, clamped to the covered range; returns (energy, t used)."""
        times, readings = self.times, self.readings
        if t <= times[0]:
            return dict(readings[0].energy_j), times[0]
        if t >= times[-1]:
            return dict(readings[-1].energy_j), times[-1]
        i = bisect.bisect_right(times, t)  # times[i-1] <= t < times[i]
        t_a, t_b = times[i - 1], times[i]
        a, b = readings[i - 1].energy_j, readings[i].energy_j
        w = (t - t_a) / (t_b - t_a) if t_b > t_a else 1.0
        return {d: a.get(d, 0.0) + (b.get(d, 0.0) - a.get(d, 0.0)) * w for d in b}, t


class MeterSampler:
    """Periodic reader of several meters with windowed energy queries.

    Args:
        meters: the meters to read (their domain names must be distinct).
        hz: sampling rate.
        capacity: readings kept per meter (default 10 minutes at ``hz``).
        start: start the thread now (tests may pass False and call :meth:`sample_now`).
    """

    def __init__(self, meters: Sequence[EnergyMeter], hz: float = 10.0, capacity: int | None = None, start: bool = True):
        if hz <= 0:
            raise ValueError("hz must be > 0")
        self.meters = list(meters)
        self.period_s = 1.0 / hz
        maxlen = capacity or max(int(600 * hz), 16)
        self._rings = [_Ring(maxlen) for _ in self.meters]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: dict[str, int] = {m.name: 0 for m in self.meters}
        self.last_error: dict[str, str] = {}
        self.samples = 0
        self.sample_now()
        if start:
            self.start()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llmco2-meter-sampler", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        name_os_thread("llmco2-meter")
        next_t = time.monotonic() + self.period_s
        while not self._stop.wait(max(next_t - time.monotonic(), 0.0)):
            self.sample_now()
            next_t += self.period_s
            now = time.monotonic()
            if next_t < now:  # fell behind (suspended, overloaded): skip missed ticks
                next_t = now + self.period_s

    def _sample_meter(self, k: int) -> None:
        meter = self.meters[k]
        try:
            reading = meter.read()
        except Exception as exc:  # never let a meter failure stop sampling
            with self._lock:
                self.errors[meter.name] = self.errors.get(meter.name, 0) + 1
                self.last_error[meter.name] = str(exc)
            return
        with self._lock:
            self._rings[k].append(reading)

    def sample_now(self) -> None:
        """Read every meter once and append the readings to the rings."""
        for k in range(len(self.meters)):
            self._sample_meter(k)
        self.samples += 1

    def latest(self) -> dict[str, float]:
        """The latest cumulative energy per domain (J since each meter was opened)."""
        out: dict[str, float] = {}
        with self._lock:
            for ring in self._rings:
                if ring.readings:
                    out.update(ring.readings[-1].energy_j)
        return out

    def reading_times(self, meter_name: str) -> list[float]:
        """The timestamps of the readings of meter ``meter_name`` still held (oldest first)."""
        with self._lock:
            for meter, ring in zip(self.meters, self._rings):
                if meter.name == meter_name:
                    return list(ring.times)
        raise KeyError(meter_name)

    def window(self, start_s: float, end_s: float) -> Window:
        """Energy per domain between two timestamps, interpolated from the rings."""
        if end_s < start_s:
            raise ValueError(f"window end {end_s} is before its start {start_s}")
        for k in range(len(self.meters)):
            with self._lock:
                stale = not self._rings[k].times or self._rings[k].times[-1] < end_s
            if stale:
                self._sample_meter(k)
        energy: dict[str, float] = {}
        cov_start, cov_end, complete = start_s, end_s, True
        names = []
        with self._lock:
            for meter, ring in zip(self.meters, self._rings):
                if not ring.times:
                    complete = False
                    continue
                names.append(meter.name)
                e0, u0 = ring.value_at(start_s)
                e1, u1 = ring.value_at(end_s)
                if u0 != start_s or u1 != end_s:
                    complete = False
                    cov_start, cov_end = max(cov_start, u0), min(cov_end, u1)
                for d, v in e1.items():
                    energy[d] = max(v - e0.get(d, 0.0), 0.0)
        return Window(start_s, end_s, energy, cov_start, cov_end, complete, tuple(names))

    def energy_between(self, start_s: float, end_s: float) -> dict[str, float]:
        """``window(start_s, end_s).energy_j``: measured J per domain between two step timestamps."""
        return self.window(start_s, end_s).energy_j

    def close(self, close_meters: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if close_meters:
            for m in self.meters:
                try:
                    m.close()
                except Exception:
                    pass

    def __enter__(self) -> "MeterSampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
