"""Grid carbon intensity as a time series: one reading per period (hourly CSV files, API history).

CSV layout (``llmco2 ... --grid csv:PATH``): one row per period, ``timestamp,g_per_kwh``, an
optional header row naming those two columns, ``#`` comments and blank lines ignored. The timestamp
is ISO 8601 (``2026-12-06T10:00:00Z``, ``2026-12-06 10:00``, an offset ``+01:00``; no offset means
UTC) or unix seconds. Rows must be in strictly increasing time; each value holds from its timestamp
to the next row's, the last one for the series' typical spacing (the median gap: one hour for an
hourly file). ``g_per_kwh`` is gCO2e per kWh, 0 to 2000. A bad row raises :class:`ValueError`
(an :class:`~llmco2_sidecar.errors.InputError`) naming the file, the line and the field.
"""

from __future__ import annotations

import bisect
import csv
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone

from ...errors import InputError

KINDS = ("location", "marginal")
MAX_G_PER_KWH = 2000.0


@dataclass(frozen=True)
class IntensityReading:
    """One grid carbon-intensity figure and where it came from."""

    g_per_kwh: float
    kind: str  # "location" | "marginal"
    source: str  # e.g. "static:world (ember-2023, 2023)", "csv:grid.csv", "electricitymaps:DE"
    ts: float  # unix seconds of the reading (start of the period it covers)


def parse_timestamp(text: str) -> float:
    """Unix seconds of an ISO 8601 timestamp (no offset: UTC) or of a number of unix seconds."""
    s = text.strip()
    if not s:
        raise ValueError("empty timestamp")
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"{s!r} is not a time")
        return value
    iso = s[:-1] + "+00:00" if s[-1] in "zZ" else s
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"{s!r} is neither ISO 8601 nor unix seconds") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def check_g_per_kwh(value: float, field: str = "g_per_kwh") -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= MAX_G_PER_KWH):
        raise InputError(field, f"{value!r} gCO2e/kWh is out of range", f"0 to {MAX_G_PER_KWH:g}")
    return float(value)


class IntensitySeries:
    """Readings in strictly increasing time; :meth:`at` finds the one covering an instant."""

    def __init__(self, readings: list[IntensityReading], step_s: float | None = None):
        if not readings:
            raise InputError("series", "holds no readings")
        ts = [r.ts for r in readings]
        for i in range(1, len(ts)):
            if not ts[i] > ts[i - 1]:
                raise InputError("series", f"reading {i + 1} ({ts[i]}) is not after the one before ({ts[i - 1]})")
        self.readings = list(readings)
        self._ts = ts
        gaps = sorted(b - a for a, b in zip(ts, ts[1:]))
        self.step_s = float(step_s if step_s is not None else (gaps[len(gaps) // 2] if gaps else 3600.0))

    @property
    def start_s(self) -> float:
        return self._ts[0]

    @property
    def end_s(self) -> float:
        """End of the last reading's period (its start + the series' typical spacing)."""
        return self._ts[-1] + self.step_s

    def __len__(self) -> int:
        return len(self.readings)

    def covers(self, unix_s: float) -> bool:
        return self.start_s <= unix_s < self.end_s

    def at(self, unix_s: float, clamp: bool = False) -> IntensityReading:
        """The reading whose period holds ``unix_s``. Outside the series: :class:`ValueError`, or
        with ``clamp`` the first (before) or last (after) reading."""
        if not self.covers(unix_s):
            if not clamp:
                raise InputError("time", f"{_iso(unix_s)} is outside the series "
                                         f"({_iso(self.start_s)} to {_iso(self.end_s)})")
            return self.readings[0] if unix_s < self.start_s else self.readings[-1]
        return self.readings[bisect.bisect_right(self._ts, unix_s) - 1]

    def mean_g_per_kwh(self) -> float:
        """Arithmetic mean over the readings (for an hourly series: the mean over its hours)."""
        return math.fsum(r.g_per_kwh for r in self.readings) / len(self.readings)

    @classmethod
    def from_csv(cls, path: str | os.PathLike, kind: str = "location", source: str | None = None) -> "IntensitySeries":
        """Read a ``timestamp,g_per_kwh`` file (see the module docstring)."""
        if kind not in KINDS:
            raise InputError("kind", f"unknown kind {kind!r}", ", ".join(KINDS))
        name = os.fspath(path)
        src = source or f"csv:{os.path.basename(name)}"
        try:
            fh = open(name, newline="", encoding="utf-8")
        except OSError as exc:
            raise InputError("grid", f"cannot read {name}: {exc.strerror}") from None
        readings: list[IntensityReading] = []
        with fh:
            for lineno, row in enumerate(csv.reader(fh), 1):
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                cells = [c.strip() for c in row]
                if not readings and cells[0].lower() in ("timestamp", "time", "datetime"):
                    if len(cells) < 2 or cells[1].lower() != "g_per_kwh":
                        raise InputError(f"{name} line {lineno}", "the header must be 'timestamp,g_per_kwh'")
                    continue
                if len(cells) != 2:
                    raise InputError(f"{name} line {lineno}", f"expected 2 fields (timestamp,g_per_kwh), got {len(cells)}")
                try:
                    ts = parse_timestamp(cells[0])
                except ValueError as exc:
                    raise InputError(f"{name} line {lineno}: timestamp", str(exc)) from None
                try:
                    value = float(cells[1])
                except ValueError:
                    raise InputError(f"{name} line {lineno}: g_per_kwh", f"{cells[1]!r} is not a number") from None
                check_g_per_kwh(value, f"{name} line {lineno}: g_per_kwh")
                if readings and not ts > readings[-1].ts:
                    raise InputError(f"{name} line {lineno}: timestamp",
                                     f"{cells[0]} is not after the row before ({_iso(readings[-1].ts)})")
                readings.append(IntensityReading(value, kind, src, ts))
        if not readings:
            raise InputError("grid", f"{name} holds no rows (expected timestamp,g_per_kwh lines)")
        return cls(readings)


def _iso(unix_s: float) -> str:
    try:
        return datetime.fromtimestamp(unix_s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return repr(unix_s)
