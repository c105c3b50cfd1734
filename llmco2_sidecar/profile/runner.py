"""Run a plan: idle power, then per model a random-weight build and per point a warm-up and
``repetitions`` measured repetitions of prefill and decode, each read with the energy counter around
it after ``torch.cuda.synchronize()``. One CSV row per point, flushed as it is written, so a run cut
short keeps every finished row. Progress goes to stderr.

Short phases: the NVML energy counter moves in steps (about every 100 ms on recent GPUs; the run
measures the period while it measures idle power and raises ``min_window_s`` to five steps where
needed), so a phase whose warm-up took less than ``min_window_s`` is run ``ceil(min_window_s / t)`` times back to back inside one
measured window (prefill: fresh cache each time; decode: the cache cropped back to the prompt between
runs) and the window's energy and time divided by that count; the counts are recorded per row
(``prefill_inner``, ``decode_inner``).
"""

from __future__ import annotations

import csv
import datetime as _dt
import gc
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from .idle_state import WINDOW_UPDATES, GPUState, IdleMeasurement, effective_min_window, gpu_state, measure_idle  # noqa: F401
from .plan import Plan, PlanPoint, resolve_model, smoke_spec

COLUMNS = ("gpu_name", "driver", "torch_version", "transformers_version", "model", "layers", "batch", "prompt", "output",
           "tp", "prefill_j", "decode_j", "prefill_s", "decode_s", "idle_w", "repetitions", "spread",
           # extra columns (after the contract's): how each figure was taken
           "decode_steps", "prefill_inner", "decode_inner", "source", "meter", "temp_start_c", "temp_end_c")
MAX_INNER = 256
MAX_FAILURES = 5  # give up after this many failed points if none succeeded


def log(msg: str) -> None:
    print(f"[profile {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Device:
    """Where the work runs and how its energy is read."""

    kind: str  # "cuda" or "cpu"
    torch_device: str
    gpu_name: str
    driver: str
    meter_name: str  # e.g. "nvml:counter", "fake-nvml:counter (smoke, not a measurement)", "null"
    read_j: Callable[[], float]  # cumulative J of the measured device
    sync: Callable[[], None]
    close: Callable[[], None] = lambda: None
    total_memory_bytes: float = 0.0
    extras: dict = field(default_factory=dict)
    read_temp_c: Callable[[], float | None] = lambda: None  # GPU temperature (NVML), None where unknown
    read_state: Callable[[], GPUState | None] = lambda: None  # NVML's view of the GPU (idle_state.gpu_state)


def _nvml_index_for_cuda(torch: Any, nvml: Any, cuda_index: int) -> int:
    """NVML index of CUDA device ``cuda_index`` (by UUID; CUDA and NVML may order GPUs differently)."""
    try:
        uuid = str(torch.cuda.get_device_properties(cuda_index).uuid).lower().removeprefix("gpu-")
        for i in range(nvml.nvmlDeviceGetCount()):
            nv = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))
            nv = (nv.decode() if isinstance(nv, bytes) else str(nv)).lower().removeprefix("gpu-")
            if nv == uuid:
                return i
    except Exception:
        pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    if len(visible) > cuda_index and visible[cuda_index].strip().isdigit():
        return int(visible[cuda_index])
    return cuda_index


def open_device(device: str, meter: str) -> Device:
    """``device`` "cuda" / "cuda:N" / "cpu"; ``meter`` "nvml", "fake" or "null"."""
    from ..measure.nvml import NvmlMeter

    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            from ..errors import InputError

            raise InputError("device", "CUDA is not available here", "cpu with --smoke or --dry-run")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        torch.cuda.set_device(index)
        torch.zeros(1, device=f"cuda:{index}")  # create the CUDA context before measuring idle
        name = torch.cuda.get_device_name(index)
        total = float(torch.cuda.get_device_properties(index).total_memory)
        sync = lambda: torch.cuda.synchronize(index)  # noqa: E731
        torch_device = f"cuda:{index}"
    else:
        index, name, total, torch_device = 0, f"CPU ({platform.processor() or platform.machine()})", 0.0, "cpu"
        sync = lambda: None  # noqa: E731
    if meter == "null":
        return Device(device.split(":")[0], torch_device, name, "", "null (no energy meter)", lambda: 0.0, sync,
                      total_memory_bytes=total)
    if meter == "fake":
        from ..measure.fake_nvml import FakeNVML, constant_power_gpu

        nvml = FakeNVML([constant_power_gpu(150.0)])
        nvml.gpus[0].process_pids = [os.getpid()]  # this process holds the (fake) GPU's context now
        m = NvmlMeter(nvml=nvml)
        domain = m.domains()[0]
        return Device(device.split(":")[0], torch_device, name, "fake", "fake-nvml:counter 150 W (smoke, not a measurement)",
                      lambda: m.read().energy_j[domain], sync, m.close, total,
                      read_temp_c=_temperature_reader(nvml, 0), read_state=lambda: gpu_state(nvml, 0))
    from ..errors import InputError
    from ..measure.errors import MeterUnavailable
    from ..measure.nvml import map_nvml_error

    try:
        import pynvml
    except ImportError as exc:
        raise InputError("meter", f"nvidia-ml-py is not installed ({exc})", "pip install nvidia-ml-py, or --meter null") from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        raise InputError("meter", f"NVML unavailable: {map_nvml_error(pynvml, exc, 'init')}", "--meter null (times only)") from None
    try:
        nv_index = _nvml_index_for_cuda(torch, pynvml, index) if torch_device != "cpu" else 0
    finally:
        pynvml.nvmlShutdown()
    try:
        m = NvmlMeter(gpu_indices=[nv_index])
    except MeterUnavailable as exc:
        raise InputError("meter", f"NVML unavailable: {exc}", "--meter null (times only)") from None
    domain = m.domains()[0]
    return Device(device.split(":")[0], torch_device, name, str(m.driver_version), f"nvml:{m.modes[domain]}",
                  lambda: m.read().energy_j[domain], sync, m.close, total, {"nvml_index": nv_index},
                  read_temp_c=_temperature_reader(pynvml, nv_index),  # NVML stays initialised while the meter is open
                  read_state=lambda: gpu_state(pynvml, pynvml.nvmlDeviceGetHandleByIndex(nv_index)))


def _temperature_reader(nvml: Any, index: int) -> Callable[[], float | None]:
    """GPU temperature in degrees C (power, and so energy, rises with it: a hot GPU draws more for the
    same work), or None when NVML cannot tell; never raises."""

    def read() -> float | None:
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            return float(nvml.nvmlDeviceGetTemperature(handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0)))
        except Exception:
            return None
    return read


@dataclass
class PointResult:
    prefill_j: float
    decode_j: float
    prefill_s: float
    decode_s: float
    spread: float
    prefill_inner: int
    decode_inner: int
    wall_s: float
    temp_start_c: float | None = None  # at the first measured repetition
    temp_end_c: float | None = None  # after the last


def measure_point(lm: Any, dev: Device, point: PlanPoint, repetitions: int, min_window_s: float) -> PointResult:
    """Warm-up, then ``repetitions`` x (prefill window, decode window); averages per repetition."""
    import torch
    from .hf_model import crop_cache

    wall0 = time.perf_counter()
    steps = point.output - 1
    with torch.inference_mode():
        ids = lm.random_ids(point.batch, point.prompt)
        # warm-up, timed to size the inner repetitions (the second prefill: the first pays one-off costs)
        t_pre = float("inf")
        for _ in range(2):
            dev.sync()
            t = time.perf_counter()
            cache, nxt = lm.prefill(ids)
            dev.sync()
            t_pre = min(t_pre, time.perf_counter() - t)
        t = time.perf_counter()
        if steps:
            lm.decode(cache, nxt, steps)
        dev.sync()
        t_dec = time.perf_counter() - t
        k_pre = min(MAX_INNER, max(1, math.ceil(min_window_s / max(t_pre, 1e-9))))
        k_dec = min(MAX_INNER, max(1, math.ceil(min_window_s / max(t_dec, 1e-9)))) if steps else 0
        del cache, nxt
        temp_start = dev.read_temp_c()
        pre_j, dec_j, pre_s, dec_s = [], [], [], []
        for _ in range(repetitions):
            dev.sync()
            e0, t0 = dev.read_j(), time.perf_counter()
            for _ in range(k_pre):
                cache, nxt = lm.prefill(ids)
            dev.sync()
            e1, t1 = dev.read_j(), time.perf_counter()
            for k in range(k_dec):
                if k:
                    crop_cache(cache, point.prompt)
                lm.decode(cache, nxt, steps)
            dev.sync()
            e2, t2 = dev.read_j(), time.perf_counter()
            pre_j.append((e1 - e0) / k_pre)
            pre_s.append((t1 - t0) / k_pre)
            dec_j.append((e2 - e1) / k_dec if k_dec else 0.0)
            dec_s.append((t2 - t1) / k_dec if k_dec else 0.0)
            del cache, nxt
        temp_end = dev.read_temp_c()
    totals = [a + b for a, b in zip(pre_j, dec_j)]
    mean_total = statistics.fmean(totals)
    spread = statistics.stdev(totals) / mean_total if len(totals) > 1 and mean_total > 0 else 0.0
    return PointResult(statistics.fmean(pre_j), statistics.fmean(dec_j), statistics.fmean(pre_s), statistics.fmean(dec_s),
                       spread, k_pre, k_dec, time.perf_counter() - wall0, temp_start, temp_end)


def _versions() -> dict[str, str]:
    import torch
    import transformers

    try:
        from importlib.metadata import version

        nvml_version = version("nvidia-ml-py")
    except Exception:
        nvml_version = "not installed"
    cuda = getattr(torch.version, "cuda", None) or "none"
    return {"torch": torch.__version__, "transformers": transformers.__version__, "nvidia-ml-py": nvml_version,
            "cuda": cuda, "python": platform.python_version()}


def _fmt_temp(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def _clean(value: object) -> str:
    return str(value).replace(";", ",").replace("\n", " ")


def provenance_line(dev: Device, versions: dict[str, str], plan: Plan, command: str, idle_w: float | None = None,
                    counter_period_s: float | None = None, min_window_s: float | None = None,
                    bare: IdleMeasurement | None = None, ctx_state: GPUState | None = None) -> str:
    """``# provenance: key=value; key=value; ...`` (see data/measurements/README.md). ``bare``: idle
    before this process had a CUDA context (:func:`.idle_state.measure_bare_idle`); ``ctx_state``: the
    GPU's state when ``idle_w`` (with the context) was measured."""
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    items = [("gpu", dev.gpu_name), ("driver", dev.driver or "n/a"), ("cuda", versions["cuda"]), ("date", date),
             ("torch", versions["torch"]), ("transformers", versions["transformers"]),
             ("nvidia-ml-py", versions["nvidia-ml-py"]), ("python", versions["python"]), ("host", platform.node() or "?"),
             ("meter", dev.meter_name), ("idle_w", "n/a" if idle_w is None else f"{idle_w:.1f}"), ("dtype", "bfloat16" if dev.kind == "cuda" else "float32"), ("attention", "sdpa"),
             ("weights", "random (transformers default init)"), ("repetitions", plan.repetitions),
             ("min_window_s", f"{plan.min_window_s if min_window_s is None else min_window_s:g}"),
             ("counter_period_ms", "n/a" if counter_period_s is None else f"{counter_period_s * 1e3:.1f}"),
             ("idle_s", f"{plan.idle_s:g}"),
             ("idle_bare_w", "n/a" if bare is None else f"{bare.watts:.1f}"),
             ("idle_bare_state", "n/a" if bare is None else bare.state.text()),
             ("idle_ctx_state", "n/a" if ctx_state is None else ctx_state.text()),
             ("budget_s", plan.budget_s), ("command", command)]
    return "# provenance: " + "; ".join(f"{k}={_clean(v)}" for k, v in items)


class CsvSink:
    """Writes the provenance line and header, then one flushed row per point."""

    def __init__(self, fh: TextIO, provenance: str):
        self.fh = fh
        fh.write(provenance + "\n")
        self.writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        self.writer.writeheader()
        fh.flush()
        self.rows = 0

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.fh.flush()
        try:
            os.fsync(self.fh.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        self.rows += 1


def run_plan(plan: Plan, dev: Device, out: TextIO, command: str, smoke: bool = False, seed: int = 0,
             bare: IdleMeasurement | None = None) -> int:
    """Measure every point of ``plan`` within its budget; returns the number of rows written. ``bare``:
    the GPU's idle power measured before the CUDA context existed (written to the provenance line)."""
    import torch

    from .hf_model import build_model

    start = time.perf_counter()
    deadline = start + plan.budget_s
    versions = _versions()
    log(f"device {dev.gpu_name} ({dev.torch_device}), meter {dev.meter_name}, driver {dev.driver or 'n/a'}")
    idle_w, period = measure_idle(dev, plan.idle_s)
    ctx_state = dev.read_state()
    min_window = effective_min_window(plan.min_window_s, period)
    period_txt = "not seen" if period is None else f"{period * 1e3:.1f} ms"
    log(f"idle power {idle_w:.1f} W over {plan.idle_s:g} s with the CUDA context"
        f"{'' if ctx_state is None else ' (' + ctx_state.text() + ')'}; energy counter updates every {period_txt}")
    if min_window > plan.min_window_s:
        log(f"windows of at least {min_window:.2f} s ({WINDOW_UPDATES} counter updates), not {plan.min_window_s:g} s")
    sink = CsvSink(out, provenance_line(dev, versions, plan, command, idle_w, period, min_window, bare, ctx_state))
    dtype = "bfloat16" if dev.kind == "cuda" else "float32"
    oom_error = getattr(torch.cuda, "OutOfMemoryError", MemoryError)
    ratio_num, ratio_den = 0.0, 0.0  # measured / estimated wall time so far, to rescale estimates
    failures = 0
    done = 0
    for model_id in plan.models():
        points = [p for p in plan.points if p.model == model_id]
        scale = (ratio_num / ratio_den) if ratio_den else 1.0
        if time.perf_counter() + scale * (plan.model_fixed_s.get(model_id, 0.0) + min(p.est_s for p in points)) > deadline:
            log(f"budget: skipping {model_id} ({len(points)} points)")
            continue
        spec = smoke_spec() if smoke else resolve_model(model_id)
        layers = points[0].layers
        t = time.perf_counter()
        try:
            lm = build_model(spec, layers, dev.torch_device, dtype, seed=seed)
        except Exception as exc:  # a model that cannot be built must not stop the sweep
            log(f"cannot build {model_id} ({layers} layers): {type(exc).__name__}: {exc}")
            continue
        log(f"built {model_id} with {layers} layers in {time.perf_counter() - t:.1f} s")
        for p in points:
            scale = (ratio_num / ratio_den) if ratio_den else 1.0
            if time.perf_counter() + scale * p.est_s > deadline:
                log(f"budget: skipping {model_id} b{p.batch} p{p.prompt} o{p.output} (est {scale * p.est_s:.1f} s)")
                continue
            try:
                r = measure_point(lm, dev, p, plan.repetitions, min_window)
            except oom_error:
                log(f"out of memory: {model_id} b{p.batch} p{p.prompt} o{p.output}; skipped")
                gc.collect()
                if dev.kind == "cuda":
                    torch.cuda.empty_cache()
                continue
            except Exception as exc:  # one failing point must not lose the sweep; show the first traceback
                failures += 1
                log(f"failed: {model_id} b{p.batch} p{p.prompt} o{p.output}: {type(exc).__name__}: {exc}")
                if failures == 1:
                    traceback.print_exc(file=sys.stderr)
                if failures >= MAX_FAILURES and done == 0:
                    log(f"{failures} failures and no row: giving up")
                    return done
                continue
            ratio_num += r.wall_s
            ratio_den += p.est_s
            sink.write({
                "gpu_name": dev.gpu_name, "driver": dev.driver, "torch_version": versions["torch"],
                "transformers_version": versions["transformers"], "model": model_id, "layers": p.layers,
                "batch": p.batch, "prompt": p.prompt, "output": p.output, "tp": 1,
                "prefill_j": f"{r.prefill_j:.6g}", "decode_j": f"{r.decode_j:.6g}", "prefill_s": f"{r.prefill_s:.6g}",
                "decode_s": f"{r.decode_s:.6g}", "idle_w": f"{idle_w:.4g}", "repetitions": plan.repetitions,
                "spread": f"{r.spread:.4g}", "decode_steps": p.output - 1, "prefill_inner": r.prefill_inner,
                "decode_inner": r.decode_inner, "source": p.source, "meter": dev.meter_name,
                "temp_start_c": _fmt_temp(r.temp_start_c), "temp_end_c": _fmt_temp(r.temp_end_c),
            })
            done += 1
            log(f"{done}/{len(plan.points)} {model_id} L{p.layers} b{p.batch} p{p.prompt} o{p.output}: "
                f"prefill {r.prefill_j:.3g} J / {r.prefill_s * 1e3:.3g} ms (x{r.prefill_inner}), "
                f"decode {r.decode_j:.3g} J / {r.decode_s:.3g} s (x{r.decode_inner}), spread {r.spread:.2%}, "
                f"wall {r.wall_s:.1f} s (est {p.est_s:.1f})")
        del lm
        gc.collect()
        if dev.kind == "cuda":
            torch.cuda.empty_cache()
    log(f"done: {done} rows in {time.perf_counter() - start:.0f} s (budget {plan.budget_s:.0f} s)")
    return done
