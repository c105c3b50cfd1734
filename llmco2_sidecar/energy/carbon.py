"""Operational carbon: energy x PUE x grid carbon intensity (location-based, or marginal from a live
WattTime source: energy/grid; never market-based; SCI, ISO/IEC 21031:2024).

Defaults, stated: PUE 1.58 -- the industry average of the Uptime Institute Global Data Center Survey
2023 -- and the ``world`` carbon intensity of ``regions.toml`` (Ember 2023, 481 gCO2e/kWh). Every
region figure names its source and year in ``regions.toml``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

from ..errors import InputError

J_PER_KWH = 3.6e6
DEFAULT_PUE = 1.58
PUE_SOURCE = "Uptime Institute Global Data Center Survey 2023: industry average PUE 1.58"
REGIONS_FILE = Path(__file__).with_name("regions.toml")


@dataclass(frozen=True)
class Region:
    code: str
    g_per_kwh: float
    source: str
    year: int


@functools.lru_cache(maxsize=4)
def _regions(extra: str | None) -> tuple[dict[str, Region], str]:
    with open(REGIONS_FILE, "rb") as fh:
        data = tomllib.load(fh)
    if extra:
        try:
            with open(extra, "rb") as fh:
                more = tomllib.load(fh)
        except OSError as exc:
            raise InputError("regions", f"cannot read {extra}: {exc.strerror}") from None
        data.setdefault("region", {}).update(more.get("region", {}))
        data["default"] = more.get("default", data["default"])
    regions = {
        code.lower(): Region(code.lower(), float(t["g_per_kwh"]), str(t.get("source", "user")), int(t.get("year", 0)))
        for code, t in data["region"].items()
    }
    return regions, str(data["default"]).lower()


def regions() -> dict[str, Region]:
    return _regions(os.environ.get("LLMCO2_REGIONS"))[0]


DEFAULT_REGION = _regions(None)[1]


def region(code: str | None = None) -> Region:
    table, default = _regions(os.environ.get("LLMCO2_REGIONS"))
    key = (code or default).lower()
    if key not in table:
        raise InputError("region", f"unknown region {code!r}", ", ".join(sorted(table)))
    return table[key]


def carbon_intensity_g_per_kwh(code: str | None = None) -> float:
    return region(code).g_per_kwh


def check_pue(pue: float) -> float:
    if not (pue >= 1.0) or pue > 5.0:
        raise InputError("pue", f"{pue!r} is not a plausible PUE", "1.0 <= PUE <= 5.0")
    return float(pue)


def check_carbon_intensity(ci: float) -> float:
    if not (ci >= 0.0) or ci > 2000.0:
        raise InputError("carbon-intensity", f"{ci!r} gCO2e/kWh is out of range", "0 to 2000")
    return float(ci)


def operational_carbon_g(energy_j, pue: float, ci_g_per_kwh: float):
    """gCO2e of ``energy_j`` (IT energy, J; scalar or array) at the facility's PUE and grid intensity."""
    return energy_j * pue / J_PER_KWH * ci_g_per_kwh
