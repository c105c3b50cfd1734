"""``llmco2 measure``: read the NVML and RAPL meters over a few seconds.

JSON (``--json``): ``{"seconds": S, "rapl": {domain: joules} | null, "nvml": {gpu index: joules} | null}``;
a meter is null when it is unavailable (or not requested), with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..errors import InputError

_REPORTED = ("rapl", "nvml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=1.0, help="measurement duration in seconds (default 1)")
    parser.add_argument("--rapl-root", default=None, metavar="DIR",
                        help="powercap tree to read (default /sys/class/powercap)")
    parser.add_argument("--meters", default="nvml,rapl", help="comma-separated meters: nvml, rapl (default both); null reads nothing (a dry run)")
    parser.add_argument("--hz", type=float, default=10.0, help="sampling rate during the measurement (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def measure(seconds: float, meters_spec: str = "nvml,rapl", rapl_root: str | None = None, hz: float = 10.0,
            nvml: object = None) -> tuple[dict, dict[str, str]]:
    """Measure for ``seconds``; returns (result dict as printed by ``--json``, reasons per null meter)."""
    from ..measure import MeterSampler, open_meters, parse_meter_spec

    if not seconds > 0 or seconds != seconds or seconds > 86400:
        raise InputError("seconds", f"must be > 0 and at most a day, got {seconds}", "0 < seconds <= 86400")
    if not hz > 0 or hz > 1000:
        raise InputError("hz", f"must be in (0, 1000], got {hz}")
    names = [n for n in parse_meter_spec(meters_spec) if n != "null"]
    reasons: dict[str, str] = {}
    meters = open_meters(",".join(names) or "null", rapl_root=rapl_root, nvml=nvml, skip_unavailable=True, reasons=reasons)
    result: dict = {"seconds": int(seconds) if float(seconds).is_integer() else seconds, "rapl": None, "nvml": None}
    for name in _REPORTED:
        if name not in names:
            reasons.setdefault(name, "not requested (--meters)")
    try:
        sampler = MeterSampler(meters, hz=hz)
        start = time.time()
        try:
            time.sleep(seconds)
            window = sampler.window(start, time.time())
        finally:
            sampler.close()
        for meter in meters:
            if meter.name not in _REPORTED:
                continue
            if sampler.errors.get(meter.name):
                reasons[meter.name] = f"{sampler.errors[meter.name]} failed read(s): {sampler.last_error.get(meter.name, '')}"
            doms = meter.domains()
            if not all(d in window.energy_j for d in doms):
                result[meter.name] = None
                reasons.setdefault(meter.name, "no reading")
                continue
            if meter.name == "nvml":
                result["nvml"] = {d[len("gpu"):]: round(window.energy_j[d], 6) for d in doms}
            else:
                result["rapl"] = {d: round(window.energy_j[d], 6) for d in doms}
    finally:
        for m in meters:
            m.close()
    return result, {k: v for k, v in reasons.items() if result.get(k) is None}


def run(args: argparse.Namespace) -> int:
    result, reasons = measure(args.seconds, args.meters, args.rapl_root, args.hz)
    for name in _REPORTED:
        if result[name] is None and name in reasons and reasons[name] != "not requested (--meters)":
            print(f"llmco2 measure: {name} unavailable: {reasons[name]}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
        return 0
    seconds = result["seconds"]
    rows = []
    for name in _REPORTED:
        for dom, joules in (result[name] or {}).items():
            rows.append((name, f"gpu{dom}" if name == "nvml" else dom, f"{joules:.3f}", f"{joules / seconds:.2f}"))
    if not rows:
        print(f"no meter available over {seconds:g} s")
        return 0
    header = ("meter", "domain", "energy_j", "avg_power_w")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
    print(f"energy over {seconds:g} s")
    for r in (header, *rows):
        print("  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(r)))
    return 0
