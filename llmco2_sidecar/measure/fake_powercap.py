"""A faithful fake of the Linux powercap RAPL tree in a directory, for tests and benchmarks.

Layout as on a real machine: ``intel-rapl:N/{name, energy_uj, max_energy_range_uj, enabled}`` and
subzones ``intel-rapl:N:M/...``; values are decimal text with a trailing newline. Counter updates are
written atomically (temp file + rename), as sysfs never shows a torn value. :class:`PowercapWriter`
advances the counters at given powers on a thread, wrapping at ``max_energy_range_uj`` like hardware.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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

    ``total_uj[dirname]`` accumulates the energy written (true, unwrapped), for assertions.
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

    def start(self) -> "PowercapWriter":
        self._last = time.time()
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
        self.updates += 1

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._tick()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._tick()  # account for the tail since the last tick

    def __enter__(self) -> "PowercapWriter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
