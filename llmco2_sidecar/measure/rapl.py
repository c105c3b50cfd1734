"""RAPL CPU/DRAM energy meter over the Linux powercap tree.

Zones: ``<root>/intel-rapl:N`` (a package, ``name`` = ``package-N``; ``psys`` on some machines) and
its subzones ``intel-rapl:N:M`` whose ``name`` is ``dram``, ``core`` or ``uncore`` (reported as
``dram-N`` etc.). ``core`` and ``uncore`` are parts of their package (do not add them to it);
``dram`` is separate. Each zone's ``energy_uj`` is a counter in µJ that wraps to zero after
``max_energy_range_uj``; a reading lower than the previous one is a wrap and adds the range. Reads
must come often enough that a counter cannot wrap twice between them (minutes at full load; the
sampler reads at 10 Hz).

Since Linux 5.10 (CVE-2020-8694, "Platypus") ``energy_uj`` is readable by root only; opening the
meter then raises :class:`RAPLPermissionError` with the fix. ``root`` is configurable
(``--rapl-root``) so operators can point at another tree and tests at a fake one.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .base import EnergyMeter, MeterReading
from .errors import RAPLPermissionError, RAPLReadError, RAPLUnavailable

DEFAULT_ROOT = "/sys/class/powercap"
SUBZONE_NAMES = ("dram", "core", "uncore")
_ZONE_RE = re.compile(r"^intel-rapl:(\d+)$")
_SUBZONE_RE = re.compile(r"^intel-rapl:(\d+):(\d+)$")

PERMISSION_FIX = (
    "RAPL energy counters are readable by root only since Linux 5.10 (CVE-2020-8694). Fix: run as root, "
    "or grant read access until reboot with `sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj "
    "/sys/class/powercap/intel-rapl:*:*/energy_uj`, or permanently with a udev rule, e.g. in "
    "/etc/udev/rules.d/90-rapl.rules: ACTION==\"add\", SUBSYSTEM==\"powercap\", KERNEL==\"intel-rapl:*\", "
    "RUN+=\"/bin/chmod o+r /sys%p/energy_uj\" (or a group you belong to with chgrp + g+r)"
)


@dataclass
class _Zone:
    domain: str
    energy_path: str
    max_range_uj: int
    last_raw_uj: int = 0
    energy_uj: int = 0
    wraps: int = 0


def _read_text(path: str) -> str:
    with open(path, "rb", buffering=0) as fh:
        return fh.read(64).decode("ascii", "replace").strip()


def _read_int(path: str, retries: int = 3) -> int:
    """Read an integer file; a torn read (empty or non-numeric text) is retried a few times."""
    last = ""
    for _ in range(retries):
        last = _read_text(path)
        try:
            return int(last)
        except ValueError:
            continue
    raise RAPLReadError(f"RAPL {path}: expected an integer, got {last!r}")


def discover_zones(root: str | os.PathLike) -> list[tuple[str, str, str]]:
    """``(domain, zone dir, name)`` for every package zone and dram/core/uncore subzone under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise RAPLUnavailable(f"RAPL: powercap root {root} does not exist (no intel_rapl driver, or not Linux)")
    found: list[tuple[tuple[int, int], str, str, str]] = []
    for entry in sorted(os.listdir(root)):
        zone = _ZONE_RE.match(entry)
        sub = _SUBZONE_RE.match(entry)
        if not (zone or sub):
            continue
        path = root / entry
        try:
            name = _read_text(str(path / "name"))
        except OSError:
            continue
        if zone:
            pkg = int(zone.group(1))
            domain = name if re.search(r"-\d+$", name) else f"{name}-{pkg}"
            found.append(((pkg, -1), domain, str(path), name))
        elif name in SUBZONE_NAMES:
            pkg, idx = int(sub.group(1)), int(sub.group(2))
            found.append(((pkg, idx), f"{name}-{pkg}", str(path), name))
    found.sort()
    seen: set[str] = set()
    out = []
    for _, domain, path, name in found:
        if domain in seen:  # two subzones with the same name in one package: keep both, distinctly
            domain = f"{domain}.{Path(path).name.rsplit(':', 1)[-1]}"
        seen.add(domain)
        out.append((domain, path, name))
    return out


class RaplMeter(EnergyMeter):
    """Cumulative CPU package / DRAM energy per RAPL domain since open, in J.

    Args:
        root: the powercap directory (default ``/sys/class/powercap``).
        clock: time source for reading timestamps (default ``time.time``).
    """

    name = "rapl"

    def __init__(self, root: str | os.PathLike | None = None, clock: Callable[[], float] = time.time):
        self.root = str(root or DEFAULT_ROOT)
        self._clock = clock
        self._lock = threading.Lock()
        zones = discover_zones(self.root)
        if not zones:
            raise RAPLUnavailable(f"RAPL: no intel-rapl zone under {self.root}")
        self._zones: list[_Zone] = []
        for domain, path, _ in zones:
            energy_path = os.path.join(path, "energy_uj")
            try:
                max_range = _read_int(os.path.join(path, "max_energy_range_uj"))
                raw = _read_int(energy_path)
            except PermissionError as exc:
                raise RAPLPermissionError(f"RAPL: cannot read {exc.filename or energy_path}: permission denied. "
                                          + PERMISSION_FIX) from exc
            except (OSError, RAPLReadError) as exc:
                raise RAPLUnavailable(f"RAPL: cannot read zone {path}: {exc}") from exc
            if max_range <= 0:
                raise RAPLUnavailable(f"RAPL: {path}/max_energy_range_uj is {max_range}, expected > 0")
            self._zones.append(_Zone(domain, energy_path, max_range, last_raw_uj=raw))

    def domains(self) -> list[str]:
        return [z.domain for z in self._zones]

    @property
    def wraps(self) -> dict[str, int]:
        """Counter wraparounds seen per domain since open."""
        return {z.domain: z.wraps for z in self._zones}

    def read(self) -> MeterReading:
        with self._lock:
            now = self._clock()
            for z in self._zones:
                try:
                    raw = _read_int(z.energy_path)
                except PermissionError as exc:
                    raise RAPLPermissionError(f"RAPL: cannot read {z.energy_path}: permission denied. " + PERMISSION_FIX) from exc
                except OSError as exc:
                    raise RAPLReadError(f"RAPL: cannot read {z.energy_path}: {exc}") from exc
                delta = raw - z.last_raw_uj
                if delta < 0:  # wrapped past max_energy_range_uj back to zero
                    delta += z.max_range_uj
                    z.wraps += 1
                z.energy_uj += delta
                z.last_raw_uj = raw
            return MeterReading(timestamp_s=now, energy_j={z.domain: z.energy_uj / 1e6 for z in self._zones})
