"""``llmco2 whatif``: replay one trace on many configurations and pick the carbon-minimal one.

Every combination of the comma lists --model, --gpu, --tp, --max-num-seqs and --region is a
configuration. Those that fit in memory are replayed with ``llmco2 replay``'s simulator and
accounting (one simulation per configuration; regions reuse it), in --jobs worker processes (or as
Ray tasks with --ray); those that do not fit are listed with the reason. Output: a table (or
--json), optionally --plot PNG: carbon per 1,000 output tokens against p99 TTFT, one point per
configuration, the Pareto front marked. With --slo-ttft-ms / --slo-tpot-ms (p99) it names the
carbon-minimal configuration meeting them and says why in one line. A configuration that rejects
requests the others serve (a prompt over a small GPU's KV cache) is shown, with its count, but is
never picked nor on the front: it would answer a smaller workload. Figures are simulated
(engine simulator + predictor), not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .replay import add_engine_arguments, positive_int, setup_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[1].strip()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_engine_arguments(parser, lists=True)
    parser.add_argument("--jobs", type=int, default=None,
                        help="worker processes (default: the CPUs of this machine, at most one per configuration)")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="run each configuration as a Ray task on this cluster ('auto', 'ray://HOST:10001', "
                             "or 'local' to start one here); needs the 'ray' extra")
    parser.add_argument("--slo-ttft-ms", type=float, default=None, help="p99 time-to-first-token objective (ms)")
    parser.add_argument("--slo-tpot-ms", type=float, default=None, help="p99 time-per-output-token objective (ms)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--plot", default=None, metavar="PNG", help="write the carbon vs p99 TTFT plot here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _list(text: str, field: str, conv=str) -> list:
    from ..errors import InputError

    parts = [t.strip() for t in str(text).split(",")]
    items = [t for t in parts if t]
    if not items:
        raise InputError(field, "empty list")
    if len(items) != len(parts):
        raise InputError(field, f"an empty item in {text!r}", "comma-separated values")
    out = [conv(t, field) if conv is positive_int else conv(t) for t in items]
    if len(set(out)) != len(out):
        raise InputError(field, f"repeated value in {text!r}")
    return out


def _same_named_twice(models: list, gpus: list) -> None:
    """Unknown names are refused (exit 2, naming the field) before the sweep; two names of one GPU or
    model (``A100`` and ``A100-SXM4-80GB``) would simulate one configuration twice."""
    from ..errors import InputError
    from ..hardware.catalog import load_gpu
    from ..models.catalog import load_model

    for field, names, load, key in (("gpu", gpus, load_gpu, lambda g: g.gpu_id), ("model", models, load_model,
                                                                               lambda m: m.name)):
        seen: dict = {}
        for name in names:
            k = key(load(name))
            if k in seen:
                raise InputError(field, f"{seen[k]!r} and {name!r} name the same {field} ({k})")
            seen[k] = name


def _unfit_lines(unfit: list[dict]) -> list[str]:
    """One line per model, GPU and TP that cannot run (whatever the sequences and regions)."""
    out, seen = [], set()
    for u in unfit:
        c = u["config"]
        if (c["model"], c["gpu"], c["tp"]) not in seen:
            seen.add((c["model"], c["gpu"], c["tp"]))
            what = "does not fit" if u.get("field") == "gpu" else "cannot run"  # memory; else TP, PP or EP
            out.append(f"{what}: {c['model']} on {c['gpu']} TP{c['tp']}: {u['reason']}")
    return out


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..sim.whatif import ProgressBar, choose, execute, front_of, label, plan, plot, table

    models = _list(args.model, "model")
    gpus = _list(args.gpu, "gpu")
    tps = _list(args.tp, "tp", positive_int)
    seqs = _list(args.max_num_seqs, "max-num-seqs", positive_int)
    regions = _list(args.region, "region") if args.region else [None]
    if args.jobs is not None and args.jobs < 1:
        raise InputError("jobs", "must be positive", ">= 1")
    for name in ("slo_ttft_ms", "slo_tpot_ms"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise InputError(name.replace("_", "-"), f"must be positive, got {v}", "> 0")
    if args.carbon_intensity is not None and args.region:
        raise InputError("region", "give --region or --carbon-intensity, not both")
    base = setup_from_args(args, models[0], gpus[0], tps[0], seqs[0], None)
    if args.intensity_csv and args.region:
        raise InputError("region", "a time-varying intensity (--intensity-csv) replaces --region")
    # the trace must parse before the sweep starts: read it once here (streamed, nothing kept)
    from ..sim.traces import open_trace

    n_req = sum(1 for _ in open_trace(args.trace, args.format))
    if not n_req:
        raise InputError("trace", "no request in the trace (no row, or no row with tokens)")
    _same_named_twice(models, gpus)
    tasks, unfit = plan(base, models, gpus, tps, seqs, regions)
    if not tasks:
        for line in _unfit_lines(unfit):
            print(line, file=sys.stderr)
        raise InputError("configurations", "none of them fits or can run (each reason above)")
    jobs = args.jobs or min(os.cpu_count() or 1, len(tasks))
    n_cfg = sum(len(t.regions or (None,)) for t in tasks)
    if not args.quiet:
        print(f"whatif: {n_req:,} requests x {n_cfg} configurations ({len(tasks)} simulations"
              + (f", {len(unfit)} do not fit" if unfit else "") + ")"
              + (f" as Ray tasks on {args.ray}" if args.ray else f" in {min(jobs, len(tasks))} worker process(es)"),
              file=sys.stderr)
    bar = ProgressBar(len(tasks), enabled=not args.quiet, what="simulations")
    nested = execute(tasks, jobs=jobs, ray_address=args.ray, on_done=bar.advance)
    results = [s for group in nested for s in group]
    front = front_of(results)
    slo = args.slo_ttft_ms is not None or args.slo_tpot_ms is not None
    choice = choose(results, args.slo_ttft_ms, args.slo_tpot_ms) if slo else None
    if args.plot:
        title = (f"{os.path.basename(args.trace)}: {n_req:,} requests; "
                 + (f"SLO p99 TTFT {args.slo_ttft_ms:g} ms " if args.slo_ttft_ms else "")
                 + (f"p99 TPOT {args.slo_tpot_ms:g} ms" if args.slo_tpot_ms else ""))
        try:
            plot(results, front, args.plot, choice, title)
        except OSError as exc:
            raise InputError("plot", f"cannot write {args.plot}: {exc.strerror}") from None
    if args.json:
        doc = {"configurations": [dict(s, label=label(s), pareto=p) for s, p in zip(results, front)],
               "does_not_fit": unfit, "slo": {"ttft_p99_ms": args.slo_ttft_ms, "tpot_p99_ms": args.slo_tpot_ms},
               "choice": choice}
        print(json.dumps(doc, indent=2))
    else:
        print(table(results, front, choice))
        for line in _unfit_lines(unfit):
            print(line)
        if choice is not None:
            print(f"pick: {choice['label'] or 'none'}: {choice['why']}")
        if args.plot:
            print(f"plot: {args.plot}")
        print("note: simulated (engine simulator + predictor), not measured")
    return 0
