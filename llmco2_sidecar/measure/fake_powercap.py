"""A faithful fake of the Linux powercap RAPL tree in a directory, for tests and benchmarks.

Layout as on a real machine: ``intel-rapl:N/{name, energy_uj, max_energy_range_uj, enabled}`` and
subzones ``intel-rapl:N:M/...``; values are decimal text with a trailing newline. Counter updates are
written atomically (temp file + rename), as sysfs never shows a torn value. :class:`PowercapWriter`
advances the counters at given powers on a thread, wrapping at ``max_energy_range_uj`` like hardware.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

# max_energy_range_uj of a Xeon package zone as commonly reported (2^32 * 61 µJ units)
XEON_PACKAGE_RANGE_UJ = 262143328850
XEON_DRAM_RANGE_UJ = 65712999613


@dataclass
class FakeZone:
    dirname: str  # "intel-rapl:0" or "intel-rapl:0:0"
    name: str  # "package-0", "dram", "core"...
    max_range_uj: int = XEON_PACKAGE_RANGE_UJ
    energy_uj: int = 0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class FakePowercap:
    """Create a powercap tree under ``root`` holding ``zones``."""

    def __init__(self, root: str | os.PathLike, zones: list[FakeZone]):
        self.root = Path(root)
        self.zones = {z.dirname: z for z in zones}
        self.root.mkdir(parents=True, exist_ok=True)
        for z in zones:
            d = self.root / z.dirname
            d.mkdir(parents=True, exist_ok=True)
            (d / "name").write_text(z.name + "\n")
            (d / "enabled").write_text("1\n")
            (d / "max_energy_range_uj").write_text(f"{z.max_range_uj}\n")
            (d / "energy_uj").write_text(f"{z.energy_uj}\n")
        # the real tree also holds non-RAPL entries that must be ignored
        (self.root / "intel-rapl").mkdir(exist_ok=True)
        (self.root / "dtpm").mkdir(exist_ok=True)

    @classmethod
    def two_socket(cls, root: str | os.PathLike, start_uj: int = 0) -> "FakePowercap":
        """Two packages, each with a core and a dram subzone (a typical dual-Xeon server)."""
        zones = []
        for pkg in (0, 1):
            zones.append(FakeZone(f"intel-rapl:{pkg}", f"package-{pkg}", XEON_PACKAGE_RANGE_UJ, start_uj))
            zones.append(FakeZone(f"intel-rapl:{pkg}:0", "core", XEON_PACKAGE_RANGE_UJ, start_uj))
            zones.append(FakeZone(f"intel-rapl:{pkg}:1", "dram", XEON_DRAM_RANGE_UJ, start_uj))
        return cls(root, zones)

    def set_energy(self, dirname: str, energy_uj: int) -> None:
        z = self.zones[dirname]
        if not 0 <= energy_uj <= z.max_range_uj:
            raise ValueError(f"{dirname}: energy_uj {energy_uj} outside [0, {z.max_range_uj}]")
        z.energy_uj = int(energy_uj)
        _write_atomic(self.root / dirname / "energy_uj", f"{z.energy_uj}\n")

    def add_energy(self, dirname: str, delta_uj: int) -> None:
        """Advance a counter by ``delta_uj``, wrapping past ``max_energy_range_uj`` to zero."""
        z = self.zones[dirname]
        self.set_energy(dirname, (z.energy_uj + int(delta_uj)) % z.max_range_uj)

    def chmod_energy(self, dirname: str, mode: int) -> None:
        os.chmod(self.root / dirname / "energy_uj", mode)


class PowercapWriter:
    """Advance the fake counters at ``watts[dirname]`` every ``period_s`` on a thread.

    ``total_uj[dirname]`` accumulates the energy written (true, unwrapped), for assertions;
    ``history`` holds one ``(t_begin, t_written, {dirname: total_uj})`` per tick (the tick's clock
    reading, the time its files were all written, the totals after it), so a test can bound what a
    reader could have seen at any time even when this thread runs late (:meth:`window_bounds_j`).
    """

    def __init__(self, tree: FakePowercap, watts: dict[str, float], period_s: float = 0.005):
        self.tree = tree
        self.watts = dict(watts)
        self.period_s = period_s
        self.total_uj = {d: 0 for d in watts}
        self.updates = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-powercap-writer", daemon=True)
        self._last = time.time()
        self.history: list[tuple[float, float, dict[str, int]]] = []

    def start(self) -> "PowercapWriter":
        self._last = time.time()
        self.history = [(self._last, self._last, dict(self.total_uj))]
        self._thread.start()
        return self

    def _tick(self) -> None:
        now = time.time()
        dt = now - self._last
        self._last = now
        for d, w in self.watts.items():
            delta = int(round(w * dt * 1e6))
            self.tree.add_energy(d, delta)
            self.total_uj[d] += delta
        self.history.append((now, time.time(), dict(self.total_uj)))
        self.updates += 1

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._tick()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._tick()  # account for the tail since the last tick

    def _total_j(self, t: float, written: bool, zones: Sequence[str] | None) -> float:
        """The summed totals (J) of the last tick that had begun (``written=False``) or had written
        all its files (``written=True``) by ``t``."""
        keys = [h[1 if written else 0] for h in self.history]
        i = bisect.bisect_right(keys, t) - 1
        if i < 0:
            return 0.0
        totals = self.history[i][2]
        return sum(totals[d] for d in (zones if zones is not None else totals)) / 1e6

    def written_at_most_j(self, start_s: float, end_s: float, zones: Sequence[str] | None = None) -> float:
        """The most energy (J, summed over ``zones``) any reader could see added between ``start_s``
        and ``end_s``: every tick begun by ``end_s`` less those written by ``start_s``."""
        return self._total_j(end_s, False, zones) - self._total_j(start_s, True, zones)

    def window_bounds_j(self, reading_times: Sequence[float], start_s: float, end_s: float,
                        zones: Sequence[str] | None = None) -> tuple[float, float]:
        """Bounds (J, summed over ``zones``, default all) on what a sampler that read the counters at
        ``reading_times`` (each timestamp taken before its files were read, the reads one after
        another) and interpolates linearly between readings can report for ``[start_s, end_s]``.

        A reading stamped ``r`` saw at least the ticks written by ``r`` and at most those begun by the
        next reading's stamp, so the value interpolated at ``t`` (between readings ``a <= t <= b``)
        lies between those bounds; the window's energy is the difference. Exact to the µJ whatever
        the scheduling of this thread or the sampler's: a reader that mis-measures falls outside.
        Call after :meth:`stop`.
        """
        times = sorted(reading_times)

        def edge(t: float) -> tuple[float, float]:
            a = max(bisect.bisect_right(times, t) - 1, 0)  # times[a] <= t (or the first reading)
            b = min(bisect.bisect_left(times, t), len(times) - 1)  # times[b] >= t (or the last)
            lo = self._total_j(times[a], True, zones)
            hi = self._total_j(times[b + 1], False, zones) if b + 1 < len(times) else self._total_j(float("inf"), False, zones)
            return lo, hi

        (s_lo, s_hi), (e_lo, e_hi) = edge(start_s), edge(end_s)
        return max(e_lo - s_hi, 0.0), e_hi - s_lo

    def __enter__(self) -> "PowercapWriter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
