"""Embodied carbon of the GPUs, charged by the time a workload holds them (LLMCarbon's model).

Die carbon = die area (cm^2) x carbon per area (CPA) of its process node, amortised linearly over
the hardware's lifetime (default 5 years, as LLMCarbon). CPA per node, kgCO2e/cm^2, from the
LLMCarbon paper's hardware table (Faiz et al., ICLR 2024; repository SotaroKaneda/MLCarbon,
data/hardware.csv): 16 nm 1.0, 12 nm 1.2, 7 nm 1.6, 4 nm 1.8. 4NP (B200) is taken as 4 nm. The die
only: HBM, board, host and cooling are not included (a known under-count, stated in outputs).
"""

from __future__ import annotations

from ..errors import InputError
from ..hardware.spec import GPUSpec

DEFAULT_LIFETIME_YEARS = 5.0
SECONDS_PER_YEAR = 365.0 * 24 * 3600
CPA_KG_PER_CM2 = {"16": 1.0, "12": 1.2, "7": 1.6, "5": 1.8, "4": 1.8}


def cpa_kg_per_cm2(process_node: str) -> float:
    digits = "".join(ch for ch in process_node if ch.isdigit())
    if digits in CPA_KG_PER_CM2:
        return CPA_KG_PER_CM2[digits]
    raise InputError("process_node", f"no carbon-per-area figure for {process_node!r}", ", ".join(CPA_KG_PER_CM2) + " nm")


def gpu_embodied_kg(gpu: GPUSpec) -> float:
    """Embodied carbon of one GPU die in kgCO2e."""
    return gpu.die_area_mm2 / 100.0 * cpa_kg_per_cm2(gpu.process_node)


def embodied_carbon_g(gpu: GPUSpec, gpu_seconds, lifetime_years: float = DEFAULT_LIFETIME_YEARS):
    """gCO2e charged for holding ``gpu_seconds`` (GPU count x seconds; scalar or array)."""
    if not lifetime_years > 0:
        raise InputError("lifetime-years", f"must be positive, got {lifetime_years!r}", "> 0")
    return gpu_embodied_kg(gpu) * 1000.0 * gpu_seconds / (lifetime_years * SECONDS_PER_YEAR)
