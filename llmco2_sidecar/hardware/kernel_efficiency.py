"""Each GPU's GEMM compute efficiency: the share of its peak throughput that measured compute-bound GEMMs reach.

A step never runs faster than its Roofline time, and real kernels do not reach it either: Vidur's
per-operator profiles (``data/vidur_gemm/``, A100 and H100, eight models, 1 to 32,768 tokens, TP 1-8) put a
transformer layer's compute-bound GEMMs at about two thirds of the datasheet's peak. No training source
times a prefill (ML.ENERGY's step times are decode-dominated means), so the duration model
(:class:`~llmco2_sidecar.predictor.prior.DurationModel`, base ``kernel``) takes this measured figure for
the compute-bound part of a step and stretches it by ``1 / efficiency``; the memory-bound part keeps what
the modern engine's own decode steps fit. A step that is not observed (replay, what-if, ``llmco2
estimate``) then lasts what its kernels would: a prefill no longer runs at 90-odd % of peak.

The rule (it replaced a first one, a median over every GEMM applied to the whole step, which fit ML.ENERGY
v3's decode-dominated step times worse in sample; that comparison was a scratch run, not a committed page):

* per measured GEMM (GPU, model, token count, TP degree, one of the layer's four GEMMs): its Roofline
  compute time (``2 n k m`` FLOPs over the catalog's bf16 peak) and memory time (16-bit weights and
  activations over the bandwidth); a GEMM whose compute time is at least twice its memory time is
  compute-bound, and its efficiency is compute time / measured median time;
* a GPU's figure: the median over its compute-bound GEMMs, rounded to 0.01 (``gemm_efficiency.csv``,
  written by ``python -m llmco2_sidecar.hardware.kernel_efficiency --write``; a test recomputes it). The
  memory-bound GEMMs' figure (memory time / measured, at least twice the compute time) is printed beside
  it for comparison and not used;
* a GPU without profiles takes the figure of a measured GPU of the same architecture (Ampere: A100,
  Hopper: H100), else the mean of the measured GPUs; both flagged ASSUMED in :func:`efficiency_source`.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from .spec import GPUSpec

TABLE = Path(__file__).with_name("gemm_efficiency.csv")
#: Vidur's GPU names -> catalog ids (DGX A100 80 GB, DGX H100)
VIDUR_GPUS = {"a100": "A100-SXM4-80GB", "h100": "H100-SXM5-80GB"}
DEFAULT_TIMES = "data/vidur_gemm/gemm_times.csv"
#: the four GEMMs of a layer in ``gemm_times.csv``
GEMMS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
#: a GEMM is compute- (memory-) bound when that time is at least this multiple of the other
BOUND_RATIO = 2.0


def gemm_shapes(row: dict) -> tuple[tuple[int, int], ...]:
    """``(k, m)`` of each GEMM in :data:`GEMMS` on one TP shard (``[n, k] x [k, m]``) for a profile row."""
    tp = int(row["num_tensor_parallel_workers"])
    h, f = int(row["n_embd"]), int(row["n_expanded_embd"])
    heads, kv = int(row["n_head"]), int(row["n_kv_head"])
    d = h // heads
    gated = str(row["use_gated_mlp"]).strip().lower() in ("true", "1")
    return (h, (heads + 2 * kv) * d // tp), (h // tp, h), (h, (2 if gated else 1) * f // tp), (f // tp, h)


def gemm_times_s(gpu: GPUSpec, n: int, k: int, m: int) -> tuple[float, float]:
    """``(compute_s, memory_s)`` Roofline times of one ``[n, k] x [k, m]`` GEMM, 16-bit, on ``gpu``."""
    return 2.0 * n * k * m / gpu.peak_flops("bf16"), 2.0 * (k * m + n * k + n * m) / gpu.mem_bandwidth_bytes_s


def measured_points(times_csv: str | Path, gpus: dict[str, GPUSpec]) -> dict[str, dict[str, list[float]]]:
    """``{catalog gpu id: {"compute": [...], "memory": [...], "between": [...]}}``: per measured GEMM,
    the bounding Roofline time over the measured median time, by regime (:data:`BOUND_RATIO`)."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"compute": [], "memory": [], "between": []})
    with open(times_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            gpu_id = VIDUR_GPUS.get(row["gpu"])
            if gpu_id is None:
                continue
            n = int(row["num_tokens"])
            for op, (k, m) in zip(GEMMS, gemm_shapes(row)):
                measured_s = float(row[f"time_stats.{op}.median"]) / 1e3
                if measured_s <= 0:
                    continue
                tc, tm = gemm_times_s(gpus[gpu_id], n, k, m)
                regime = "compute" if tc >= BOUND_RATIO * tm else ("memory" if tm >= BOUND_RATIO * tc else "between")
                out[gpu_id][regime].append(max(tc, tm) / measured_s)
    return dict(out)


def derive(times_csv: str | Path = DEFAULT_TIMES) -> dict[str, dict]:
    """Per measured GPU: ``efficiency`` (the rule's figure: compute-bound GEMMs), ``points`` (how many),
    and each regime's median, quartiles and count."""
    from .catalog import load_gpu

    gpus = {g: load_gpu(g) for g in VIDUR_GPUS.values()}
    result = {}
    for gpu_id, regimes in sorted(measured_points(times_csv, gpus).items()):
        detail = {name: {"median": statistics.median(v), "q25": float(np.percentile(v, 25)),
                         "q75": float(np.percentile(v, 75)), "points": len(v)}
                  for name, v in regimes.items() if v}
        result[gpu_id] = {"efficiency": round(detail["compute"]["median"], 2), "points": detail["compute"]["points"],
                          "regimes": detail}
    return result


@lru_cache(maxsize=1)
def _table() -> dict[str, tuple[float, str]]:
    with open(TABLE, newline="") as fh:
        return {r["gpu"]: (float(r["gemm_efficiency"]), r["source"]) for r in csv.DictReader(fh)}


def _resolve(gpu: GPUSpec) -> tuple[float, str]:
    table = _table()
    if gpu.gpu_id in table:
        return table[gpu.gpu_id]
    from .catalog import load_catalog

    cat = load_catalog()
    for measured, (eff, _) in sorted(table.items()):
        spec = cat.gpus.get(measured)
        if spec is not None and spec.architecture == gpu.architecture:
            return eff, f"ASSUMED: the {measured}'s figure (same {gpu.architecture} architecture; no GEMM profile of this GPU)"
    mean = round(sum(e for e, _ in table.values()) / len(table), 2)
    return mean, f"ASSUMED: the mean of the measured GPUs ({', '.join(sorted(table))}); no GEMM profile of this GPU"


_RESOLVED: dict[tuple[str, str], tuple[float, str]] = {}


def _cached(gpu: GPUSpec) -> tuple[float, str]:
    key = (gpu.gpu_id, gpu.architecture)  # a GPUSpec holds dicts: not hashable itself
    hit = _RESOLVED.get(key)
    if hit is None:
        hit = _RESOLVED[key] = _resolve(gpu)
    return hit


def efficiency(gpu: GPUSpec) -> float:
    """The share of ``gpu``'s peak throughput its compute-bound GEMMs reach (0 < e <= 1)."""
    return _cached(gpu)[0]


def efficiency_source(gpu: GPUSpec) -> str:
    return _cached(gpu)[1]


def render_table(derived: dict[str, dict], times_csv: str) -> str:
    lines = ["gpu,gemm_efficiency,points,source"]
    for gpu_id, d in derived.items():
        lines.append(f"{gpu_id},{d['efficiency']:.2f},{d['points']},MEASURED: median over {d['points']} compute-bound "
                     f"GEMMs of Vidur's profiles ({times_csv}; Roofline compute time / measured time)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m llmco2_sidecar.hardware.kernel_efficiency",
        description="Each GPU's GEMM compute efficiency (Roofline compute time / measured time of compute-bound "
                    "GEMMs, median over Vidur's profiles), by the rule in this module's docstring; the memory-bound "
                    "GEMMs' figure beside it, for comparison.")
    ap.add_argument("--times", default=DEFAULT_TIMES, help=f"the GEMM profile extract (default {DEFAULT_TIMES})")
    ap.add_argument("--write", action="store_true", help=f"rewrite {TABLE.name} with the figures")
    args = ap.parse_args(argv)
    if not Path(args.times).is_file():
        print(f"error: --times: no file {args.times} (run from the repository root)", file=sys.stderr)
        return 2
    derived = derive(args.times)
    for gpu_id, d in derived.items():
        parts = "; ".join(f"{k}-bound: {v['median']:.2f} (quartiles {v['q25']:.2f}-{v['q75']:.2f}, {v['points']} GEMMs)"
                          for k, v in d["regimes"].items())
        print(f"{gpu_id}: {d['efficiency']:.2f} ({parts})")
    if args.write:
        TABLE.write_text(render_table(derived, args.times))
        _table.cache_clear()
        _RESOLVED.clear()
        print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
