"""The meter contract: every energy meter (NVML, RAPL, null) reports cumulative energy per domain.

Implementations live in sibling modules; :func:`open_meters` in ``measure/__init__`` builds them
from a spec such as ``"nvml,rapl"``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MeterReading:
    """Cumulative energy since the meter was opened, per domain, at ``timestamp_s`` (time.time()).

    Domains: ``"gpu0"``, ``"gpu1"`` ... for NVML; ``"package-0"``, ``"dram-0"`` ... for RAPL.
    """

    timestamp_s: float
    energy_j: dict[str, float] = field(default_factory=dict)


class EnergyMeter(abc.ABC):
    """A source of cumulative energy readings. Counter wraps and resets are handled inside."""

    name: str = "abstract"  # "nvml", "rapl", "null"

    @abc.abstractmethod
    def domains(self) -> list[str]:
        """The domain names this meter reports."""

    @abc.abstractmethod
    def read(self) -> MeterReading:
        """Cumulative energy per domain since the meter was opened, in J."""

    def close(self) -> None:  # pragma: no cover - default no-op
        """Release handles (NVML shutdown, open files)."""
