"""Where the predictor misses the FP8 rows, and what the measurements say about it (issue 15 item 4).

Usage: python benchmarks/fp8_diagnosis.py [--runs accuracy_moe_dequant,accuracy_moe_blockfp8]
                                          [--group precision=fp8] [--out-dir benchmarks/results]
                                          [--name fp8_diagnosis]

Two parts, both from committed data and code, no training:

1. **Per-row errors of committed held-out runs** (``<run>_s0/s1/s2.json`` under benchmarks/results/,
   the seeds present): for the rows of ``--group`` (default ``precision=fp8``), the signed mean
   error and the MAPE of the MoE recipe's column ("same fit as llmco2-gnn, GNN inputs clipped ...")
   and of the physics prior alone, by GPU, by GPU and model, and by GPU and running-batch bucket.
2. **The measurements themselves** (ML.ENERGY v3 rows, each rebuilt as its steady-state window, as in
   training): per FP8 row and each 16-bit twin of the same architecture on the same GPU kind, the
   step time over its Roofline time, the measured power per GPU, and the highest power the physics
   prior could give that step with *any* coefficients its fit allows (``prior_ceiling_w``): loaded
   idle + dynamic range x max(busy coverage, compute + memory + network utilisation), where busy
   coverage is ``min(1, max(4 t_roof, 2 t_roof16) / t)`` (the busy-time terms stop at 4 x the
   Roofline time, the low-precision terms at 2 x the 16-bit twin's; :mod:`~llmco2_sidecar.predictor.prior`).
   A measured power above that ceiling is a miss no refit of the prior can remove. And each FP8 row
   against its 16-bit twin at the same weight bytes per GPU (same architecture, task, GPU kind and
   ``max_num_seqs``, twice the GPUs).

Writes fp8_diagnosis.md and fp8_diagnosis.json (``--name``: another stem, for another group).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
CLIPPED = "same fit as llmco2-gnn, GNN inputs clipped to the training range"
PRIOR = "physics prior alone"


def bucket(b: float) -> str:
    return "b<=16" if b <= 16 else ("16<b<=128" if b <= 128 else "b>128")


def parse_key(key: str) -> dict:
    src, model, task, hw, _tp, seqs = key.split("|")
    gpu, n = hw.split("x")
    return {"source": src, "model": model.split("/")[-1], "task": task, "gpu": gpu, "n_gpus": int(n), "seqs": int(seqs[4:])}


def run_errors(prefix: str, group: str) -> dict | None:
    """``{(column, seed): {example: relative error}}`` for the committed seeds of run ``prefix``."""
    out = {}
    for s in (0, 1, 2):
        p = RESULTS / f"{prefix}_s{s}.json"
        if not p.is_file():
            continue
        d = json.loads(p.read_text())
        for col in (CLIPPED, PRIOR):
            pr = d["predictions"].get(col)
            if pr is None:
                continue
            out[(col, s)] = {e: pv / tv - 1 for sp, e, pv, tv in zip(pr["split"], pr["example"], pr["pred"], pr["true"])
                             if sp == group}
    return out or None


def error_tables(runs: list[str], group: str, batch_of: dict[str, float]) -> tuple[list[str], dict]:
    lines, js = [], {}
    for prefix in runs:
        errs = run_errors(prefix, group)
        if errs is None:
            lines += [f"`{prefix}`: no committed seeds.", ""]
            continue
        seeds = sorted({s for _, s in errs})
        cells = defaultdict(lambda: {CLIPPED: [], PRIOR: []})
        for (col, s), rows in errs.items():
            for e, r in rows.items():
                k = parse_key(e)
                b = bucket(batch_of.get(e, k["seqs"]))
                for cell in (("all",), ("gpu", k["gpu"]), ("gpu, model", k["gpu"], k["model"]), ("gpu, batch", k["gpu"], b)):
                    cells[cell][col].append(r)
        lines += [f"### `{prefix}_s*` (seeds {', '.join(map(str, seeds))}), group `{group}`", "",
                  "| rows | n | MoE recipe: bias % | MoE recipe: MAPE % | prior alone: bias % | prior alone: MAPE % |",
                  "|---|---|---|---|---|---|"]
        table = {}
        for cell in sorted(cells, key=lambda c: (len(c), c)):
            g, p = np.array(cells[cell][CLIPPED]), np.array(cells[cell][PRIOR])
            n = len(g) // max(len(seeds), 1)
            row = {"n": n, "bias": 100 * g.mean(), "mape": 100 * np.abs(g).mean(),
                   "prior_bias": 100 * p.mean() if p.size else None, "prior_mape": 100 * np.abs(p).mean() if p.size else None}
            table[" / ".join(cell)] = row
            pb = "-" if row["prior_bias"] is None else f"{row['prior_bias']:+.1f}"
            pm = "-" if row["prior_mape"] is None else f"{row['prior_mape']:.1f}"
            lines.append(f"| {' / '.join(cell)} | {n} | {row['bias']:+.1f} | {row['mape']:.1f} | {pb} | {pm} |")
        lines.append("")
        js[prefix] = {"seeds": seeds, "cells": table}
    return lines, js


def measured_power_rows() -> list[dict]:
    """Per v3 row of an FP8 checkpoint and of the 16-bit twins of the same architectures: the window's
    mean step time, Roofline time, measured W per GPU and the prior's ceiling (module docstring)."""
    from llmco2_sidecar.cli.train import BUNDLED_MLENERGY
    from llmco2_sidecar.predictor.dataset import featurize, mlenergy_examples
    from llmco2_sidecar.predictor.mlenergy import load_rows
    from llmco2_sidecar.predictor.physics import dynamic_range_w, loaded_idle_w
    from llmco2_sidecar.predictor.prior import is_low_precision, roofline16_s

    rows = load_rows(BUNDLED_MLENERGY)
    ex, _ = mlenergy_examples(rows, seed=0)
    fp8_arch = {e.model for e in ex if e.meta.get("precision") == "fp8"}
    ex = [e for e in ex if e.model in fp8_arch]
    out = []
    for e, f in zip(ex, featurize(ex)):
        dep = e.deployment
        p = e.weight / e.weight.sum()
        t = float(p @ f.duration_s)
        sf = f.features
        t_roof = float(p @ sf.roofline_s)
        t16 = float(p @ roofline16_s(dep, sf, e.steps)) if is_low_precision(dep.model) else t_roof
        gpu, n = dep.gpu, dep.n_gpus
        util = float(p @ ((sf.flops / gpu.peak_flops(gpu.dtype_for_bits(dep.model.act_bits))
                           + (sf.simt_s if sf.simt_s is not None else 0.0)) / n
                          + sf.memory_bytes / n / gpu.mem_bandwidth_bytes_s
                          + sf.network_bytes / n / gpu.interconnect_bytes_s)) / t
        cover = min(1.0, max(4 * t_roof, 2 * t16) / t)
        p_meas = e.target * e.denom / t / n
        ceiling = loaded_idle_w(gpu) + dynamic_range_w(gpu) * min(1.0, max(cover, util))
        k = parse_key(e.key)
        out.append({"key": e.key, "model": k["model"], "precision": e.meta.get("precision"), "gpu": e.gpu, "n_gpus": n,
                    "batch": float(e.denom), "step_ms": 1e3 * t, "roofline_ms": 1e3 * t_roof, "t_over_roof": t / t_roof,
                    "measured_w_per_gpu": p_meas, "prior_ceiling_w": ceiling, "tdp_w": gpu.tdp_w,
                    "weight_gb_per_gpu": dep.model.weight_bytes / n / 1e9})
    return out


def power_lines(rows: list[dict]) -> list[str]:
    lines = ["## Measured power against the prior's ceiling (ML.ENERGY v3, FP8 checkpoints and their 16-bit twins)", "",
             "One line per GPU kind, checkpoint and GPU count, at the smallest and the largest running batch; `over` counts "
             "the rows of that set whose measured power is above the ceiling.", "",
             "| model | precision | GPU x n | weights GB/GPU | batch | step / Roofline | measured W/GPU | prior ceiling W/GPU | over |",
             "|---|---|---|---|---|---|---|---|---|"]
    sets = defaultdict(list)
    for r in rows:
        sets[(r["model"], r["precision"], r["gpu"], r["n_gpus"])].append(r)
    for key in sorted(sets, key=lambda k: (k[0].replace("-FP8", ""), k[2], k[1], k[3])):
        rs = sorted(sets[key], key=lambda r: r["batch"])
        over = sum(r["measured_w_per_gpu"] > r["prior_ceiling_w"] for r in rs)
        for r in (rs[0], rs[-1]) if len(rs) > 1 else rs:
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} x {key[3]} | {r['weight_gb_per_gpu']:.0f} | {r['batch']:.0f} | "
                         f"{r['t_over_roof']:.1f} | {r['measured_w_per_gpu']:.0f} | {r['prior_ceiling_w']:.0f} | "
                         f"{over} of {len(rs)} |")
    n_over = {p: sum(r["measured_w_per_gpu"] > r["prior_ceiling_w"] for r in rows if r["precision"] == p)
              for p in sorted({r["precision"] for r in rows})}
    n_all = {p: sum(r["precision"] == p for r in rows) for p in n_over}
    lines += ["", "Rows above the ceiling: " + ", ".join(f"{p} {n_over[p]} of {n_all[p]}" for p in n_over) + ".", ""]
    return lines


def twin_lines(rows: list[dict]) -> tuple[list[str], list[dict]]:
    """FP8 rows against their 16-bit twin at the same weight bytes per GPU: the same architecture, task,
    GPU kind and ``max_num_seqs`` on twice the GPUs."""
    by = {}
    for r in rows:
        k = parse_key(r["key"])
        by[(r["model"].replace("-FP8", ""), k["task"], r["gpu"], r["n_gpus"], k["seqs"], r["precision"])] = r
    pairs = []
    for (model, task, gpu, n, seqs, prec), r in sorted(by.items()):
        t = by.get((model, task, gpu, 2 * n, seqs, "bfloat16")) if prec == "fp8" else None
        if t is None:
            continue
        e8 = r["step_ms"] * r["measured_w_per_gpu"] / 1e3
        e16 = t["step_ms"] * t["measured_w_per_gpu"] / 1e3
        pairs.append({"model": model, "task": task, "gpu": gpu, "n_fp8": n, "max_num_seqs": seqs, "batch_fp8": r["batch"],
                      "batch_16": t["batch"], "time_ratio": r["step_ms"] / t["step_ms"],
                      "power_ratio": r["measured_w_per_gpu"] / t["measured_w_per_gpu"], "j_per_gpu_step_fp8": e8,
                      "j_per_gpu_step_16": e16, "energy_ratio": e8 / e16,
                      "roofline_ratio": r["roofline_ms"] / t["roofline_ms"]})
    lines = ["## FP8 against its 16-bit twin at the same weight bytes per GPU", "",
             "The same architecture, task, GPU kind and `max_num_seqs`, FP8 on n GPUs, BF16 on 2n (equal weight bytes per "
             "GPU, so nearly equal Roofline time per decode step): measured step time, power per GPU and energy per GPU "
             "and step, FP8 over BF16.", "",
             "| model | task | GPU | n (FP8) | batch FP8 / BF16 | Roofline ratio | time ratio | power ratio | J per GPU-step FP8 / BF16 | energy ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        lines.append(f"| {p['model']} | {p['task']} | {p['gpu']} | {p['n_fp8']} | {p['batch_fp8']:.0f} / {p['batch_16']:.0f} | "
                     f"{p['roofline_ratio']:.2f} | {p['time_ratio']:.2f} | {p['power_ratio']:.2f} | "
                     f"{p['j_per_gpu_step_fp8']:.1f} / {p['j_per_gpu_step_16']:.1f} | {p['energy_ratio']:.2f} |")
    lines.append("")
    return lines, pairs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="accuracy_moe_dequant,accuracy_moe_blockfp8",
                    help="comma-separated run prefixes under benchmarks/results (default: %(default)s)")
    ap.add_argument("--group", default="precision=fp8", help="held-out group to break down (default: %(default)s)")
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--name", default="fp8_diagnosis", help="output file stem (default: %(default)s)")
    args = ap.parse_args()
    t0 = time.time()
    print("featurising the v3 rows of the FP8 architectures ...", file=sys.stderr)
    power = measured_power_rows()
    batch_of = {r["key"]: r["batch"] for r in power}
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    err_lines, err_js = error_tables(runs, args.group, batch_of)
    lines = [f"# Where the held-out rows of {args.group} miss", "",
             f"Command: `python benchmarks/fp8_diagnosis.py --runs {','.join(runs)} --group {args.group} --name {args.name}` "
             f"({time.time() - t0:.0f} s on this project's 2-core CPU VM, shared with other jobs). Signed errors are "
             "(predicted / measured - 1) in %, J per output token, seeds pooled; `bias` < 0: predicted low. Batch buckets "
             "use each row's measured running batch.", "", "## Held-out errors by GPU, model and batch", ""]
    tl, pairs = twin_lines(power)
    lines += err_lines + tl + power_lines(power)
    out = Path(args.out_dir)
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (out / f"{args.name}.json").write_text(json.dumps({"errors": err_js, "twins": pairs, "power": power}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
