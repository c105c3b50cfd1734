"""Energy meters: NVML (GPUs), RAPL (CPU package and DRAM), null; and windows aligned to step
timestamps (:class:`MeterSampler`).

``open_meters("nvml,rapl")`` builds the meters named in a comma-separated spec. Every meter reports
cumulative energy per domain (``"gpu0"``, ``"package-0"``, ``"dram-0"``) since it was opened.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import InputError
from .base import EnergyMeter, MeterReading
from .errors import (MeterError, MeterReadError, MeterUnavailable, NVMLPermissionError, NVMLReadError,
                     NVMLUnavailable, RAPLPermissionError, RAPLReadError, RAPLUnavailable)
from .null import NullMeter
from .sampler import MeterSampler, Window

METER_NAMES = ("nvml", "rapl", "null")

__all__ = [
    "EnergyMeter", "MeterReading", "MeterSampler", "Window", "NullMeter", "open_meter", "open_meters",
    "parse_meter_spec", "METER_NAMES", "MeterError", "MeterUnavailable", "MeterReadError", "NVMLUnavailable",
    "NVMLPermissionError", "NVMLReadError", "RAPLUnavailable", "RAPLPermissionError", "RAPLReadError",
]


def parse_meter_spec(spec: str, field: str = "meters") -> list[str]:
    """``"nvml, rapl"`` -> ``["nvml", "rapl"]``; unknown or repeated names raise :class:`InputError`."""
    names = [p.strip().lower() for p in str(spec or "").split(",") if p.strip()]
    if not names:
        raise InputError(field, "no meter named", ",".join(METER_NAMES))
    for n in names:
        if n not in METER_NAMES:
            raise InputError(field, f"unknown meter {n!r}", ",".join(METER_NAMES))
    if len(set(names)) != len(names):
        raise InputError(field, f"meter named twice in {spec!r}", ",".join(METER_NAMES))
    return names


def open_meter(name: str, rapl_root: str | os.PathLike | None = None, nvml: Any = None) -> EnergyMeter:
    """Open one meter by name. Raises :class:`MeterUnavailable` (with the reason) when it cannot run here."""
    name = parse_meter_spec(name, "meter")[0]
    if name == "nvml":
        from .nvml import NvmlMeter

        return NvmlMeter(nvml=nvml)
    if name == "rapl":
        from .rapl import RaplMeter

        return RaplMeter(root=rapl_root)
    return NullMeter()


def open_meters(spec: str, rapl_root: str | os.PathLike | None = None, nvml: Any = None,
                skip_unavailable: bool = False, reasons: dict[str, str] | None = None) -> list[EnergyMeter]:
    """Open the meters named in ``spec`` (e.g. ``"nvml,rapl"``).

    Unknown names raise :class:`InputError`. A meter that cannot run here raises its
    :class:`MeterUnavailable` unless ``skip_unavailable``; then it is left out and its reason stored in
    ``reasons[name]`` when a dict is given.
    """
    meters: list[EnergyMeter] = []
    try:
        for name in parse_meter_spec(spec):
            try:
                meters.append(open_meter(name, rapl_root=rapl_root, nvml=nvml))
            except MeterUnavailable as exc:
                if not skip_unavailable:
                    raise
                if reasons is not None:
                    reasons[name] = str(exc)
    except BaseException:
        for m in meters:
            m.close()
        raise
    return meters
