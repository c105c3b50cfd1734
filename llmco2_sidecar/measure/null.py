"""The null meter: for machines with neither NVML nor RAPL. It has no domains and reads nothing, so
callers can always hold a list of meters."""

from __future__ import annotations

import time
from typing import Callable

from .base import EnergyMeter, MeterReading


class NullMeter(EnergyMeter):
    """A meter with no domains; ``read()`` returns an empty reading stamped with the current time."""

    name = "null"

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock

    def domains(self) -> list[str]:
        return []

    def read(self) -> MeterReading:
        return MeterReading(timestamp_s=self._clock(), energy_j={})

    def close(self) -> None:
        pass
