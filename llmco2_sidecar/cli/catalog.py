"""``llmco2 catalog``: what is bundled -- GPUs (dense figures), servers, models, grid regions."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", choices=("gpus", "servers", "models", "regions"), default=None,
                   help="one section (default: all)")
    p.add_argument("--hardware", default=None, help="a TOML file that adds or overrides GPU/server entries")
    p.add_argument("--json", action="store_true")


def model_support(hf_id: str) -> dict:
    """Whether the product can model a bundled config: decided by building its spec, so the answer
    follows the model code (a family that gains support stops being marked). ``reason``: why not."""
    from ..errors import InputError
    from ..models import load_model

    try:
        load_model(hf_id)
    except InputError as exc:
        return {"supported": False, "reason": getattr(exc, "message", str(exc))}
    return {"supported": True, "reason": ""}


def run(a: argparse.Namespace) -> int:
    from ..energy import carbon
    from ..hardware import load_catalog
    from ..models import bundled_status

    cat = load_catalog(a.hardware)
    out = {
        "gpus": {k: {"name": g.name, "dense_tflops": g.dense_tflops, "memory_gb": g.memory_gb,
                     "mem_bandwidth_gb_s": g.mem_bandwidth_gb_s, "nvlink_gb_s": g.nvlink_gb_s, "pcie_gb_s": g.pcie_gb_s,
                     "tdp_w": g.tdp_w, "idle_w": g.idle_w, "idle_w_source": g.sources.get("idle_w", ""),
                     "die_area_mm2": g.die_area_mm2, "process_node": g.process_node, "source": g.sources.get("all", "")}
                 for k, g in cat.gpus.items()},
        "aliases": cat.aliases,
        "servers": {k: {"name": s.name, "gpu_id": s.gpu_id, "gpus_per_node": s.gpus_per_node, "cpu_model": s.cpu_model,
                        "cpus_per_node": s.cpus_per_node, "host_idle_w": s.host_idle_w,
                        "host_idle_w_source": s.sources.get("host_idle_w", "")} for k, s in cat.servers.items()},
        "models": {k: {"verified": v, **model_support(k)} for k, v in bundled_status().items()},
        "regions": {k: {"g_per_kwh": r.g_per_kwh, "source": r.source, "year": r.year} for k, r in carbon.regions().items()},
    }
    if a.what:
        out = {a.what: out[a.what]}
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    if "gpus" in out:
        print("GPUs (dense tensor throughput; the LLMCO2 paper's Table 2 lists sparse):")
        for k, g in out["gpus"].items():
            t = g["dense_tflops"]
            print(f"  {k:<20} bf16 {t.get('bf16', 0):>7.1f}  fp8 {t.get('fp8', 0) or '-':>7}  int8 {t.get('int8', 0):>7.1f} TF/s"
                  f"  {g['memory_gb']:>5.0f} GB  {g['mem_bandwidth_gb_s']:>5.0f} GB/s  link {max(g['nvlink_gb_s'], g['pcie_gb_s']):>5.0f} GB/s"
                  f"  TDP {g['tdp_w']:>5.0f} W  idle {g['idle_w']:>5.1f} W  {g['die_area_mm2']:>6.1f} mm2 {g['process_node']}")
        print("  aliases: " + ", ".join(f"{k}->{v}" for k, v in cat.aliases.items() if not k.startswith("NVIDIA ")))
    if "servers" in out:
        print("Servers:")
        for k, s in out["servers"].items():
            print(f"  {k:<16} {s['gpus_per_node']} x {s['gpu_id']}, {s['cpus_per_node']} x {s['cpu_model']}, "
                  f"host idle {s['host_idle_w']:.0f} W ({s['host_idle_w_source']})")
    if "models" in out:
        print("Models (Hugging Face ids; * = checked in one public copy only; UNSUPPORTED = refused by estimate and serve):")
        for k, m in out["models"].items():
            mark = "" if m["supported"] else f"  UNSUPPORTED: {m['reason']}"
            print(f"  {k}{'' if m['verified'] else ' *'}{mark}")
    if "regions" in out:
        print("Grid carbon intensity, gCO2e/kWh:")
        for k, r in out["regions"].items():
            print(f"  {k:<6} {r['g_per_kwh']:>6.0f}  {r['source']}, {r['year']}")
    return 0
