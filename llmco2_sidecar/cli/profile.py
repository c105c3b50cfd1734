"""``llmco2 profile``: the GPU profiling harness (per-batch prefill and decode energy, CSV).

Needs only torch, transformers and nvidia-ml-py at run time (no vLLM, no network). ``--dry-run``
prints the plan and its time estimate without importing torch; ``--device cpu --smoke`` runs a tiny
2-layer model through every code path with a fake NVML meter.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from ..errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget-seconds", type=float, default=540.0,
                        help="time budget of the measurement (plan sizing and a hard stop; default 540)")
    parser.add_argument("--out", default=None, metavar="FILE", help="CSV to write (required unless --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its time estimate, measure nothing")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu only with --smoke or --dry-run)")
    parser.add_argument("--smoke", action="store_true", help="tiny 2-layer model (hidden 64) through every code path")
    parser.add_argument("--models", default=None,
                        help="comma-separated Hugging Face ids, ID:LAYERS to truncate (default: the built-in sweep)")
    parser.add_argument("--gpu", default=None, help="GPU to size the plan for (default: the detected one; H100 for --dry-run)")
    parser.add_argument("--repetitions", type=int, default=5, help="measured repetitions per point (default 5)")
    parser.add_argument("--min-window-s", type=float, default=None,
                        help="shortest measured window; shorter phases are repeated inside it (default 0.5; smoke "
                             "0.01). Raised at run time to 5 updates of the energy counter (NVML's moves about every "
                             "100 ms; the period is measured and written to the provenance line)")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle power measurement at start (default 5)")
    parser.add_argument("--meter", choices=("auto", "nvml", "fake", "null"), default="auto",
                        help="energy source: auto = nvml on a GPU, fake for --smoke")
    parser.add_argument("--seed", type=int, default=0, help="seed of the plan draw and the random weights")


def _validate(args: argparse.Namespace) -> None:
    if not args.budget_seconds > 0:
        raise InputError("budget-seconds", f"must be > 0, got {args.budget_seconds}")
    if args.repetitions < 1:
        raise InputError("repetitions", f"must be >= 1, got {args.repetitions}")
    if args.min_window_s is not None and not args.min_window_s >= 0:
        raise InputError("min-window-s", f"must be >= 0, got {args.min_window_s}")
    if not args.idle_seconds > 0:
        raise InputError("idle-seconds", f"must be > 0, got {args.idle_seconds}")
    if not (args.device == "cpu" or args.device == "cuda" or (args.device.startswith("cuda:") and args.device[5:].isdigit())):
        raise InputError("device", f"unknown device {args.device!r}", "cuda, cuda:N, cpu")
    if args.device == "cpu" and not (args.smoke or args.dry_run):
        raise InputError("device", "cpu runs only with --smoke or --dry-run (energy labels come from a GPU)", "cuda, cuda:N")
    if not args.dry_run and not args.out:
        raise InputError("out", "missing: where should the CSV go?", "a file path, e.g. --out h100.csv")


def run(args: argparse.Namespace) -> int:
    from ..profile.plan import DEFAULT_MIN_WINDOW_S, build_plan, format_plan, gpu_limits, parse_models, smoke_plan

    _validate(args)
    min_window = args.min_window_s if args.min_window_s is not None else (0.01 if args.smoke else DEFAULT_MIN_WINDOW_S)
    models = parse_models(args.models)
    if args.smoke:
        plan = smoke_plan(args.repetitions, min_window)
        plan.idle_s = min(args.idle_seconds, 0.2)
        plan.budget_s = args.budget_seconds
    elif args.dry_run:
        plan = build_plan(args.budget_seconds, gpu_limits(args.gpu or "H100"), models, args.repetitions, min_window,
                          args.idle_seconds, args.seed)
    if args.dry_run:
        print(format_plan(plan))
        return 0

    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise InputError("dependencies", f"the harness needs torch and transformers: {exc}",
                         "pip install torch transformers nvidia-ml-py") from None
    from ..profile.runner import log, open_device, run_plan

    meter = args.meter if args.meter != "auto" else ("fake" if args.smoke else "nvml")
    if meter == "fake" and not args.smoke:
        raise InputError("meter", "the fake meter is for --smoke only", "nvml, null")
    bare = _bare_idle(meter, args)  # before open_device: it creates the CUDA context
    dev = open_device(args.device, meter)
    try:
        if not args.smoke:
            try:
                limits = gpu_limits(args.gpu or dev.gpu_name, memory_bytes=dev.total_memory_bytes or None)
            except InputError:
                limits = gpu_limits("H100", memory_bytes=dev.total_memory_bytes or None)
                log(f"{dev.gpu_name} is not in the catalog: sizing with H100 rates and the detected memory")
            plan = build_plan(args.budget_seconds, limits, models, args.repetitions, min_window, args.idle_seconds, args.seed)
            log(format_plan(plan).splitlines()[0])
        command = "llmco2 profile " + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "profile")
        with open(args.out, "w", newline="") as fh:
            rows = run_plan(plan, dev, fh, command, smoke=args.smoke, seed=args.seed,
                            bare=bare.get(dev.extras.get("nvml_index", 0)) if bare else None)
    finally:
        dev.close()
    return 0 if rows else 1


def _bare_idle(meter: str, args: argparse.Namespace) -> dict:
    """Idle power of every GPU NVML sees, before this process has a CUDA context ({} when there is no
    NVML or it fails: the run goes on without the bare figure)."""
    from ..profile.idle_state import SETTLE_S, measure_bare_idle
    from ..profile.runner import log

    if meter == "fake":
        from ..measure.fake_nvml import FakeNVML, constant_power_gpu

        nvml, seconds, settle = FakeNVML([constant_power_gpu(150.0)]), min(args.idle_seconds, 0.2), 0.0
    elif meter == "nvml":
        try:
            import pynvml as nvml
        except ImportError:
            return {}
        seconds, settle = args.idle_seconds, SETTLE_S
    else:
        return {}
    try:
        out = measure_bare_idle(nvml, seconds, settle)
    except Exception as exc:  # NVML missing or refusing: the labels matter more than this figure
        log(f"bare idle power not measured: {exc}")
        return {}
    for i, m in sorted(out.items()):
        log(f"bare idle power of GPU {i} (no CUDA context of ours): {m.watts:.1f} W over {m.seconds:.1f} s "
            f"({m.source}; {m.state.text()})")
    return out
