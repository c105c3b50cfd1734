"""Software Carbon Intensity (Green Software Foundation SCI, ISO/IEC 21031:2024) of served requests.

SCI = ((E x I) + M) per R: E the energy of the functional unit (kWh, here including the data
centre's PUE), I the grid intensity (gCO2e/kWh: location-based or marginal, never market-based),
M the embodied carbon charged to it (gCO2e), R the functional unit. The units reported:

* ``g_per_request``: R = one request (the SCI spec's "API call/request");
* ``g_per_1k_output_tokens``: R = 1,000 generated tokens (the per-token unit of the SCI for AI
  consumer guidance, counted on output tokens);
* ``g_per_1k_tokens``: R = 1,000 tokens processed (prompt + output; SCI for AI counts tokens
  processed without separating input from output).

A request record's SCI covers that request's own energy (its steps' GPU energy, its share of the
serving host and of the idle gaps attributed to it) and embodied carbon (by the GPU time it held:
its steps and the gaps it waited through). A summary's SCI divides everything accounted by the
units served, including the idle energy and GPU time no request was running for (``unattributed``,
from window records) -- the boundary the SCI asks for (idle machines included; M by time reserved).
Definition and boundary: docs/sci.md.
"""

from __future__ import annotations

import math
from typing import Iterable


def _per(total_g: float, units: float, scale: float = 1.0) -> float | None:
    return total_g * scale / units if units > 0 and math.isfinite(total_g) else None


def request_sci(carbon_g: float, prompt_tokens: int, output_tokens: int) -> dict:
    """The ``sci`` object of one request record (``carbon_g``: operational + embodied, gCO2e)."""
    return {"g_per_request": carbon_g,
            "g_per_1k_output_tokens": _per(carbon_g, output_tokens, 1000.0),
            "g_per_1k_tokens": _per(carbon_g, prompt_tokens + output_tokens, 1000.0)}


def summary_sci(requests: Iterable[dict], windows: Iterable[dict] = ()) -> dict:
    """SCI of a set of carbon-log records: request records, plus window records whose unattributed
    idle carbon is added to the numerator (pass none to leave idle out; ``idle_included`` says)."""
    n = out = tokens = 0
    carbon = 0.0
    for r in requests:
        n += 1
        carbon += float(r["carbon_g"]["total"])
        out += int(r.get("output_tokens", 0))
        tokens += int(r.get("prompt_tokens", 0)) + int(r.get("output_tokens", 0))
    idle_g = 0.0
    idle_included = False
    for w in windows:
        idle_included = True
        e = w.get("energy_j", {})
        total_j = float(e.get("total", 0.0))
        if total_j > 0:  # the window's operational carbon, in the share of its unattributed energy
            idle_g += float(w["carbon_g"]["operational"]) * float(e.get("unattributed", 0.0)) / total_j
        held = w.get("gpu_s") or {}
        total_s = float(held.get("total", 0.0)) if isinstance(held, dict) else 0.0
        if total_s > 0:  # its embodied carbon, in the share of its GPU time no request held
            idle_g += float(w["carbon_g"].get("embodied", 0.0)) * float(held.get("unattributed", 0.0)) / total_s
    total = carbon + idle_g
    return {"requests": n, "carbon_g": total, "idle_carbon_g": idle_g, "idle_included": idle_included,
            "g_per_request": _per(total, n), "g_per_1k_output_tokens": _per(total, out, 1000.0),
            "g_per_1k_tokens": _per(total, tokens, 1000.0)}
