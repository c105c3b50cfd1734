"""``llmco2 replay``: a request trace through a simulated engine and the sidecar's accounting.

Replays ``--trace`` through a simulated continuous-batching engine (vLLM v1 / Sarathi-Serve
scheduling: chunked prefill, token budget, KV-cache capacity, preemption by recomputation) on the
given model and GPUs, and accounts every simulated step with the same prediction, attribution and
carbon code as the live sidecar, in this process. Step times come from the predictor's duration
model, energies from the predictor: a simulation, not a measurement. Same input, same output bytes.

Trace formats (--format, detected by default): JSON lines or CSV with ``arrival_s`` (seconds from
the first request) or ``timestamp``, ``prompt_tokens``, ``output_tokens``, optional ``request_id``;
the Azure LLM inference traces 2023/2024 (TIMESTAMP, ContextTokens, GeneratedTokens); the JSON of
vLLM's benchmark client (--save-result) with input_lens, output_lens and start_times. ``-`` reads
standard input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..sim.engine import DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS
from ..sim.traces import FORMATS
from .helpfmt import default_region


def add_engine_arguments(parser: argparse.ArgumentParser, lists: bool = False) -> None:
    """Arguments shared by ``replay`` and ``whatif`` (``lists``: comma lists where whatif sweeps)."""
    many = " (comma list)" if lists else ""
    parser.add_argument("--trace", required=True, help="request trace file ('-': standard input)")
    parser.add_argument("--format", default="auto", choices=FORMATS, help="trace format (default: detected)")
    parser.add_argument("--model", required=True, help=f"model: bundled Hugging Face id or config.json path{many}")
    parser.add_argument("--gpu", required=True, help=f"GPU: catalog id or alias, e.g. H100, A100-SXM4-80GB{many}")
    parser.add_argument("--tp", default="1", help=f"tensor parallelism (default 1){many}")
    parser.add_argument("--pp", type=int, default=1, help="pipeline parallelism (default 1)")
    parser.add_argument("--max-num-seqs", default=str(DEFAULT_MAX_NUM_SEQS),
                        help=f"running sequences at most (vLLM; default {DEFAULT_MAX_NUM_SEQS}){many}")
    parser.add_argument("--max-num-batched-tokens", type=int, default=DEFAULT_MAX_NUM_BATCHED_TOKENS,
                        help=f"token budget per step (vLLM; Sarathi's chunk size; default {DEFAULT_MAX_NUM_BATCHED_TOKENS})")
    parser.add_argument("--scheduler", default="vllm", choices=("vllm", "sarathi"),
                        help="step composition: vllm (v1: running requests in admission order) or sarathi "
                             "(decodes first, then prefill chunks); default vllm")
    parser.add_argument("--no-chunked-prefill", action="store_true",
                        help="schedule each prompt whole (default: chunked prefill, as vLLM v1)")
    parser.add_argument("--kv-capacity-tokens", type=int, default=None,
                        help="KV-cache capacity in tokens (default: 90%% of GPU memory minus weights and a 5%% reserve)")
    parser.add_argument("--region", default=None,
                        help=f"carbon-intensity region of the bundled table (default {default_region()}){many}")
    parser.add_argument("--carbon-intensity", type=float, default=None, dest="carbon_intensity",
                        help="grid intensity in gCO2e/kWh (overrides --region)")
    parser.add_argument("--intensity-csv", default=None,
                        help="hourly intensity series, CSV of timestamp,g_per_kwh: each step at its own hour's "
                             "intensity; the summary compares with the series mean")
    parser.add_argument("--start", default=None,
                        help="time of the trace's first request (ISO 8601 or Unix s) on the intensity series "
                             "(default: the trace's own timestamps)")
    parser.add_argument("--pue", type=float, default=None, help="PUE (default 1.58, Uptime Institute 2023 average)")
    parser.add_argument("--lifetime-years", type=float, default=None, help="GPU lifetime for embodied carbon (default 5)")
    parser.add_argument("--predictor", default="default", choices=("default", "roofline"),
                        help="step predictor (default: the shipped GNN)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[1].strip()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_engine_arguments(parser)
    from .. import config as cfgmod

    cfgmod.add_grid_arguments(parser)  # static:R = --region, csv:PATH = --intensity-csv, an API: its reading now
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--requests-out", default=None, help="write one JSON line per request to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress on standard error")


def positive_int(text: str, field: str) -> int:
    from ..errors import InputError

    try:
        v = int(text)
    except (TypeError, ValueError):
        raise InputError(field, f"not a whole number: {text!r}") from None
    if v < 1:
        raise InputError(field, f"must be positive, got {v}", ">= 1")
    return v


def start_time(text: str | None) -> float | None:
    if text is None:
        return None
    from ..sim.traces import parse_timestamp

    return parse_timestamp(text, "--start", None, "start")


def setup_from_args(args, model: str, gpu: str, tp: int, max_num_seqs: int, region: str | None):
    from ..sim.engine import EngineConfig
    from ..sim.replay import ReplaySetup

    eng = EngineConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                       chunked_prefill=not args.no_chunked_prefill, kv_capacity_tokens=args.kv_capacity_tokens,
                       policy=args.scheduler)
    return ReplaySetup(trace=args.trace, trace_format=args.format, model=model, gpu=gpu, tp=tp, pp=args.pp,
                       engine=eng, predictor=args.predictor, region=region,
                       carbon_intensity_g_per_kwh=args.carbon_intensity, pue=args.pue,
                       lifetime_years=args.lifetime_years, intensity_csv=args.intensity_csv,
                       start_s=start_time(args.start))


class Progress:
    """A one-line progress report on standard error, at most once a second."""

    def __init__(self, enabled: bool, what: str):
        self.enabled = enabled
        self.what = what
        self.t0 = self.last = time.perf_counter()
        self.state = (0, 0.0)

    def __call__(self, done: int, sim_s: float) -> None:
        now = time.perf_counter()
        self.state = (done, sim_s)
        if self.enabled and now - self.last >= 1.0:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        done, sim_s = self.state
        print(f"\r{self.what}: {done:,} requests, {sim_s:,.0f} s of trace simulated, {now - self.t0:.0f} s",
              end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        """End the line, with the final counts (not those of the last report a second ago)."""
        if self.enabled and self.last != self.t0:
            self._line(time.perf_counter())
            print(file=sys.stderr)


def no_request_why(summary: dict) -> str:
    """Why a replay served no request: an empty trace, rows without tokens, or every request rejected."""
    t, sim = summary["trace"], summary["simulation"]
    if sim["rejected"]:
        return (f"no request could be served: all {sim['rejected']} were rejected, e.g. "
                + "; ".join(sim["rejected_examples"][:2]))
    if t["skipped_zero_tokens"]:
        return f"no request in the trace: its {t['skipped_zero_tokens']} row(s) have no tokens"
    return "no request in the trace"


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..sim.whatif import _init_worker as _one_intra_op_thread

    # one intra-op thread, as whatif's workers and the sidecar use: the replay's GNN calls are small, and
    # torch's default team (one thread per core) made a 256-step call 292 ms against 6 ms on a busy
    # 2-core box (an ad-hoc timing, 2026-12-06); it also keeps the float summation order fixed
    _one_intra_op_thread()
    from ..sim.replay import run_replay
    from ..sim.replay_text import fmt_summary

    tp = positive_int(args.tp, "tp")
    seqs = positive_int(args.max_num_seqs, "max-num-seqs")
    if args.pp < 1:
        raise InputError("pp", "must be positive", ">= 1")
    from .. import config as cfgmod

    cfgmod.apply_grid_to_replay(args)
    setup = setup_from_args(args, args.model, args.gpu, tp, seqs, args.region)
    progress = Progress(not args.quiet, "replay")
    out = None
    if args.requests_out:
        try:
            out = open(args.requests_out, "w", encoding="utf-8")
        except OSError as exc:
            raise InputError("requests-out", f"cannot write {args.requests_out}: {exc.strerror}") from None
    try:
        summary = run_replay(setup, requests_out=out, progress=progress)
    finally:
        progress.done()
        if out is not None:
            out.close()
    if not summary["requests"]:
        raise InputError("trace", no_request_why(summary))
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=False))
    else:
        print(fmt_summary(summary))
    return 0
