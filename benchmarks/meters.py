"""CPU cost of the energy meters sampling at 10 Hz, as % of one core (target: <= 1%).

This machine has no GPU and no readable RAPL, so:
- RAPL reads a fake powercap tree in a temp dir (real files, same layout as /sys/class/powercap:
  2 packages x {package, core, dram} = 6 zones; sysfs reads of the real tree go through the kernel's
  RAPL MSR read instead of tmpfs, so they can cost more per file);
- NVML replays readings through FakeNVML (8 GPUs); the real ``nvmlDeviceGetTotalEnergyConsumption``
  is a driver call (an ioctl) whose cost this does not include.
So the figures measure our Python overhead (sampler thread, meter bookkeeping, file parsing), not the
driver's. Method: a MeterSampler runs at 10 Hz for ``--seconds`` per configuration; cost = process CPU
time / wall time (the main thread sleeps), minus an idle baseline of the same length. Also reported:
the mean CPU time of one ``read()`` in a tight loop.

Run: ``python benchmarks/meters.py`` (writes benchmarks/results/meters.json and meters.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmco2_sidecar.measure import MeterSampler  # noqa: E402
from llmco2_sidecar.measure.fake_nvml import FakeNVML, RecordedGPU  # noqa: E402
from llmco2_sidecar.measure.fake_powercap import FakePowercap  # noqa: E402
from llmco2_sidecar.measure.nvml import NvmlMeter  # noqa: E402
from llmco2_sidecar.measure.rapl import RaplMeter  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
N_GPUS = 8


def _counter_gpus() -> FakeNVML:
    t0 = time.time()
    # a recorded-style series: 100 ms steps over an hour at ~400 W per GPU
    series = [(t0 + k * 0.1, int(1.0e9 + k * 40000)) for k in range(36000)]
    return FakeNVML([RecordedGPU(energy_mj=series, power_mw=[(t0, 400000)]) for _ in range(N_GPUS)])


def _power_gpus() -> FakeNVML:
    t0 = time.time()
    return FakeNVML([RecordedGPU(energy_mj=None, power_mw=[(t0, 400000)]) for _ in range(N_GPUS)])


def _cpu_share(seconds: float, make_meters) -> dict:
    meters = make_meters()
    for m in meters:
        m.read()
    c0, w0 = time.process_time(), time.perf_counter()
    sampler = MeterSampler(meters, hz=10.0)
    time.sleep(seconds)
    sampler.close()
    c1, w1 = time.process_time(), time.perf_counter()
    for m in meters:
        m.close()
    return {"cpu_s": c1 - c0, "wall_s": w1 - w0, "samples": sampler.samples,
            "errors": sum(sampler.errors.values())}


def _read_cost_us(make_meters, n: int = 2000) -> float:
    meters = make_meters()
    c0 = time.process_time()
    for _ in range(n):
        for m in meters:
            m.read()
    cost = (time.process_time() - c0) / n * 1e6
    for m in meters:
        m.close()
    return cost


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="sampling time per configuration")
    ap.add_argument("--out", default=str(RESULTS / "meters"), help="results path without extension")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        FakePowercap.two_socket(tmp, start_uj=123456789)
        configs = {
            "rapl (6 zones, fake powercap tree)": lambda: [RaplMeter(tmp)],
            f"nvml counter ({N_GPUS} GPUs, replayed)": lambda: [NvmlMeter(nvml=_counter_gpus())],
            f"nvml counter + rapl ({N_GPUS} GPUs + 6 zones)": lambda: [NvmlMeter(nvml=_counter_gpus()), RaplMeter(tmp)],
            f"nvml power sampling ({N_GPUS} GPUs, replayed; its own 20 Hz thread + 10 Hz reads)":
                lambda: [NvmlMeter(nvml=_power_gpus(), power_sample_hz=20.0)],
        }
        c0, w0 = time.process_time(), time.perf_counter()
        time.sleep(args.seconds)
        baseline = {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0}
        rows = []
        for name, make in configs.items():
            share = _cpu_share(args.seconds, make)
            net = max(share["cpu_s"] - baseline["cpu_s"] * share["wall_s"] / baseline["wall_s"], 0.0)
            rows.append({
                "config": name,
                "hz": 10.0,
                "cpu_percent_of_one_core": round(100.0 * net / share["wall_s"], 4),
                "read_cpu_us": round(_read_cost_us(make), 2),
                "samples": share["samples"],
                "errors": share["errors"],
                "wall_s": round(share["wall_s"], 2),
            })
    result = {
        "benchmark": "meters",
        "target": "<= 1% of one core at 10 Hz",
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()} {platform.release()}, "
                   f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python benchmarks/meters.py " + " ".join(sys.argv[1:]),
        "data": "fake powercap tree (llmco2_sidecar/measure/fake_powercap.py) and replayed NVML readings "
                "(llmco2_sidecar/measure/fake_nvml.py); no GPU and no readable RAPL on this machine",
        "baseline_idle_cpu_percent": round(100.0 * baseline["cpu_s"] / baseline["wall_s"], 4),
        "results": rows,
        "meets_target": all(r["cpu_percent_of_one_core"] <= 1.0 for r in rows),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Meter CPU cost at 10 Hz",
        "",
        f"Command: `{result['command'].strip()}` ({result['date']}, {result['machine']}).",
        "",
        "No GPU and no readable RAPL here: RAPL reads a fake powercap tree (real files in a temp dir, the",
        "sysfs layout), NVML replays recorded-style readings through `FakeNVML`. The figures are our",
        "Python overhead (sampler thread, bookkeeping, parsing); the NVML driver call and the kernel's RAPL",
        "MSR read on a real machine come on top.",
        "",
        "| configuration | % of one core | CPU per read (µs) | samples | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['config']} | {r['cpu_percent_of_one_core']:.3f} | {r['read_cpu_us']:.1f} | {r['samples']} | {r['errors']} |")
    lines += ["", f"Target <= 1% of one core: {'met' if result['meets_target'] else 'NOT met'} "
              f"(idle baseline {result['baseline_idle_cpu_percent']:.3f}%, subtracted)."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
