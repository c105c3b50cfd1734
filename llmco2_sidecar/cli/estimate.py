"""``llmco2 estimate``: energy and carbon of a batch of requests (see llmco2_sidecar.estimate)."""

from __future__ import annotations

import argparse
import json
import sys

from ..energy import carbon
from ..errors import InputError
from ..workload import BatchQuery
from .helpfmt import DefaultsShown, default_region

QUERY_KEYS = ("model", "gpu", "batch", "prompt_len", "output_len", "tp", "pp", "ep", "dp", "observed_latency_s")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = DefaultsShown
    p.epilog = ("Energy: GPUs' energy for the whole batch on all TP x PP GPUs (prefill, decode) plus the serving "
                "engine's host energy. Carbon: energy x PUE x grid carbon intensity, plus the GPUs' embodied carbon "
                "charged by GPU time. --queries FILE reads JSON lines with keys " + ", ".join(QUERY_KEYS) + ".")
    p.add_argument("--model", help="bundled Hugging Face id (see `llmco2 catalog`) or path to a config.json or its folder")
    p.add_argument("--gpu", help="GPU id or alias, e.g. A100, H100, H200-SXM-141GB")
    p.add_argument("--batch", type=int, help="requests in the batch (required without --queries)")
    p.add_argument("--prompt-len", type=int, help="prompt tokens per request (required without --queries)")
    p.add_argument("--output-len", type=int, help="generated tokens per request (required without --queries)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel stages")
    p.add_argument("--ep", type=int, default=1,
                   help="expert-parallel size of a MoE model (vLLM --enable-expert-parallel: tp x dp); 1: experts "
                        "split by TP. ep > tp spans --dp replicas, assumed to run batches like this one")
    p.add_argument("--dp", type=int, default=1, help="data-parallel replicas (matters with --ep > --tp)")
    p.add_argument("--observed-latency-s", type=float, default=None,
                   help="the batch's measured wall time, when known (else the predictor predicts it)")
    p.add_argument("--max-batched-tokens", type=int, default=None,
                   help="engine token budget per step (chunked prefill); default: whole prefill in one step")
    p.add_argument("--pue", type=float, default=carbon.DEFAULT_PUE, help="data-centre PUE (" + carbon.PUE_SOURCE + ")")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--carbon-intensity", type=float, default=None, metavar="G_PER_KWH", help="grid intensity, gCO2e/kWh")
    g.add_argument("--region", default=None, help=f"grid region code from the bundled table (default {default_region()})")
    from .. import config as cfgmod

    cfgmod.add_grid_arguments(p)
    p.add_argument("--queries", default=None, metavar="FILE", help="JSON lines, one query each (use - for stdin)")
    p.add_argument("--hardware", default=None, metavar="FILE",
                   help="TOML file adding or overriding GPU/server entries (also LLMCO2_HARDWARE)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per line with --queries)")


def _query_from_args(a: argparse.Namespace) -> BatchQuery:
    for name in ("model", "gpu", "batch", "prompt_len", "output_len"):
        if getattr(a, name) is None:
            raise InputError(name.replace("_", "-"), "is required (or use --queries FILE)")
    return BatchQuery(a.model, a.gpu, a.batch, a.prompt_len, a.output_len, a.tp, a.pp, a.observed_latency_s,
                      ep=a.ep, dp=a.dp)


def _query_from_json(obj: dict) -> BatchQuery:
    if not isinstance(obj, dict):
        raise InputError("query", "each line must be a JSON object")
    unknown = set(obj) - set(QUERY_KEYS)
    if unknown:
        raise InputError(sorted(unknown)[0], "unknown key", ", ".join(QUERY_KEYS))
    for k in ("model", "gpu", "batch", "prompt_len", "output_len"):
        if k not in obj:
            raise InputError(k, "missing")
    return BatchQuery(str(obj["model"]), str(obj["gpu"]), obj["batch"], obj["prompt_len"], obj["output_len"],
                      obj.get("tp", 1), obj.get("pp", 1), obj.get("observed_latency_s"), ep=obj.get("ep", 1),
                      dp=obj.get("dp", 1))


def _print_human(r: dict) -> None:
    e, c = r["energy_j"], r["carbon_g"]
    ep = f", EP {r['ep']}" + (f" over DP {r['dp']}" if r["ep"] > r["tp"] else "") if r.get("ep", 1) > 1 else ""
    print(f"{r['model']} on {r['tp'] * r['pp']} x {r['gpu']} (TP {r['tp']}, PP {r['pp']}{ep}): batch {r['batch']}, "
          f"prompt {r['prompt_len']}, output {r['output_len']}")
    mi = r.get("model_info") or {}
    if mi.get("experts") or mi.get("quant_method"):
        print("  model    " + describe_model(mi))
    print(f"  energy   prefill {e['prefill']:.1f} J   decode {e['decode']:.1f} J   serving {e['serving']:.1f} J   "
          f"total {e['total']:.1f} J ({e['total'] / 3.6e3:.3f} Wh)")
    print(f"  latency  prefill {r['latency_s']['prefill']:.3f} s   decode {r['latency_s']['decode']:.3f} s")
    print(f"  carbon   operational {c['operational']:.3f} g   embodied {c['embodied']:.4f} g   total {c['total']:.3f} gCO2e")
    print(f"           (PUE {r['pue']}, {r['carbon_intensity_g_per_kwh']:g} gCO2e/kWh {r['carbon_intensity_kind']}: "
          f"{r['carbon_intensity_source']})")
    sci = r["sci"]
    print(f"  SCI      {sci['g_per_request']:.4f} gCO2e per request, {sci['g_per_1k_output_tokens']:.4f} per 1,000 output "
          f"tokens ((E x I) + M, docs/sci.md)")
    kv = r["kv_cache"]
    if not kv["fits"]:
        print(f"  KV cache does not fit ({kv['capacity_tokens']} tokens): {kv['preemptions']} preemptions, "
              f"{kv['recomputed_tokens']} tokens recomputed")
    print(f"  predictor: {r['predictor']}")
    err = r.get("expected_error")
    if err:
        print(f"  expected error: about +-{err['mape_pct']:.0f}% (the predictor's held-out MAPE: {err['basis']})")
    else:
        print("  expected error: unknown (this predictor has no held-out scores)")


def describe_model(mi: dict) -> str:
    """One line: size, experts, number formats (for MoE and quantized models)."""
    parts = [f"{mi['params'] / 1e9:.1f}B params"]
    if mi.get("experts"):
        parts = [f"MoE {mi['experts']} experts, {mi['experts_per_token']} per token",
                 f"{mi['params'] / 1e9:.1f}B params ({mi['active_params'] / 1e9:.1f}B active)"]
    fmt = f"{mi['weight_bits']}-bit weights"
    if mi.get("expert_weight_bits") and mi["expert_weight_bits"] != mi["weight_bits"]:
        fmt += f", {mi['expert_weight_bits']:g}-bit experts"
    if mi.get("quant_method"):
        fmt += f" ({mi['quant_method']}" + (f", {mi['gemm_dtype']} GEMMs" if mi.get("gemm_dtype") else "") + ")"
    parts.append(fmt + f", {mi['weight_bytes'] / 1e9:.1f} GB")
    if not mi.get("config_verified", True):
        parts.append("config checked in one copy only")
    return "; ".join(parts)


def run(a: argparse.Namespace) -> int:
    import os

    from ..estimate import CarbonSettings, estimate

    if a.hardware:
        os.environ["LLMCO2_HARDWARE"] = a.hardware

    from .. import config as cfgmod

    grid = cfgmod.grid_settings(a)
    reading = None
    if grid["grid"] or grid["grid_url"]:
        if a.carbon_intensity is not None:
            raise InputError("carbon-intensity", "a fixed intensity and --grid exclude each other", "one of them")
        from ..energy.grid.sources import parse_grid, reading_once

        reading = reading_once(parse_grid(grid["grid"], grid["grid_url"], a.region), a.region)
        if "fallback" in reading.source:
            print(f"llmco2 estimate: note: {reading.source}", file=sys.stderr)
    settings = CarbonSettings(pue=carbon.check_pue(a.pue), carbon_intensity_g_per_kwh=a.carbon_intensity, region=a.region,
                              grid=reading)
    settings.resolved_ci()  # validate before any work
    if a.queries is None:
        r = estimate(_query_from_args(a), settings, max_batched_tokens=a.max_batched_tokens)
        print(json.dumps(r)) if a.json else _print_human(r)
        return 0
    stream = sys.stdin if a.queries == "-" else _open(a.queries)
    status = 0
    with stream:
        for lineno, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError("query", f"not valid JSON ({exc.msg})") from None
                r = estimate(_query_from_json(obj), settings, max_batched_tokens=a.max_batched_tokens)
            except InputError as exc:
                status = 2
                print(f"llmco2 estimate: error: {a.queries} line {lineno}: {exc}", file=sys.stderr)
                r = {"error": {"line": lineno, "field": exc.field, "message": str(exc)}}
            if a.json:
                print(json.dumps(r), flush=True)
            elif "error" not in r:
                _print_human(r)
    return status


def _open(path: str):
    try:
        return open(path)
    except OSError as exc:
        raise InputError("queries", f"cannot read {path}: {exc.strerror}") from None
