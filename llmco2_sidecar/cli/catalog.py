"""``llmco2 catalog``: what is bundled -- GPUs (dense figures), servers, models, grid regions."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", choices=("gpus", "servers", "models", "regions"), default=None,
                   help="one section (default: all)")
    p.add_argument("--hardware", default=None, help="a TOML file that adds or overrides GPU/server entries")
    p.add_argument("--json", action="store_true", help="print the catalog as JSON")
    p.epilog = ("models: each bundled Hugging Face id and alias with its kind (dense or MoE: experts, active per "
                "token; MLA; local attention), size, number formats, whether its config was checked in two public "
                "copies, and the held-out error of the shipped model that serves it (llmco2-gnn-v2 for dense models, "
                "llmco2-gnn-moe-v1 for mixtures of experts) on the model or its family, where its card has one.")


def _models() -> dict[str, dict]:
    from ..models import bundled_status, list_aliases, load_model

    from ..predictor.heldout import family_of, model_score, shipped_scores

    held, held_moe = shipped_scores(), shipped_scores(moe=True)
    aliases = list_aliases()
    out = {}
    status = bundled_status()
    for hf_id in list(status) + sorted(aliases):
        support = model_support(hf_id)
        if not support["supported"]:
            out[hf_id] = {"verified": status.get(hf_id, True), "alias_of": aliases.get(hf_id, {}).get("base"), **support}
            continue
        m = load_model(hf_id)
        fmt = f"w{m.weight_bits}" + (f"/experts {m.expert_bits:g}" if m.is_moe and m.expert_bits != m.weight_bits else "")
        fmt += f" {m.quant_method}" if m.quant_method else ""
        out[hf_id] = {
            "verified": m.verified, "alias_of": aliases.get(hf_id, {}).get("base"), "model_type": m.model_type,
            "experts": m.num_experts, "experts_per_token": m.experts_per_token, "mla": m.is_mla,
            "local_attention": m.local_attention, "params_b": m.total_params / 1e9, "active_params_b": m.active_params / 1e9,
            "weight_bits": m.weight_bits, "expert_weight_bits": m.expert_bits if m.is_moe else None,
            "quant_method": m.quant_method or None, "format": fmt, "kv_bytes_per_token": m.kv_bytes_per_token,
            "heldout_mape": model_score(held_moe if m.is_moe else held, hf_id, aliases.get(hf_id, {}).get("base"),
                                        family_of(m), m.quant_method)[0],
            **support,
        }
    return out


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
    from ..hardware.kernel_efficiency import efficiency, efficiency_source

    cat = load_catalog(a.hardware)
    out = {
        "gpus": {k: {"name": g.name, "dense_tflops": g.dense_tflops, "memory_gb": g.memory_gb,
                     "mem_bandwidth_gb_s": g.mem_bandwidth_gb_s, "nvlink_gb_s": g.nvlink_gb_s, "pcie_gb_s": g.pcie_gb_s,
                     "tdp_w": g.tdp_w, "idle_w": g.idle_w, "idle_w_source": g.sources.get("idle_w", ""),
                     "gemm_efficiency": efficiency(g), "gemm_efficiency_source": efficiency_source(g),
                     "die_area_mm2": g.die_area_mm2, "process_node": g.process_node, "source": g.sources.get("all", "")}
                 for k, g in cat.gpus.items()},
        "aliases": cat.aliases,
        "servers": {k: {"name": s.name, "gpu_id": s.gpu_id, "gpus_per_node": s.gpus_per_node, "cpu_model": s.cpu_model,
                        "cpus_per_node": s.cpus_per_node, "host_idle_w": s.host_idle_w,
                        "host_idle_w_source": s.sources.get("host_idle_w", "")} for k, s in cat.servers.items()},
        "models": _models(),
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
                  f"  TDP {g['tdp_w']:>5.0f} W  idle {g['idle_w']:>5.1f} W  GEMM {g['gemm_efficiency']:.2f}"
                  f"{' ' if g['gemm_efficiency_source'].startswith('MEASURED') else '*'}"
                  f"  {g['die_area_mm2']:>6.1f} mm2 {g['process_node']}")
        print("  GEMM: the share of peak a compute-bound GEMM reaches (step times where none is observed); "
              "* = assumed from another GPU (--json: gemm_efficiency_source)")
        print("  aliases: " + ", ".join(f"{k}->{v}" for k, v in cat.aliases.items() if not k.startswith("NVIDIA ")))
    if "servers" in out:
        print("Servers:")
        for k, s in out["servers"].items():
            print(f"  {k:<16} {s['gpus_per_node']} x {s['gpu_id']}, {s['cpus_per_node']} x {s['cpu_model']}, "
                  f"host idle {s['host_idle_w']:.0f} W ({s['host_idle_w_source']})")
    if "models" in out:
        print("Models (Hugging Face ids; * = config checked in one public copy only; heldout: the shipped predictor's "
              "MAPE with the model held out (else its family; else the worst of its family's models held out one by one), "
              "the worse of that and its number format's for FP8/MXFP4, "
              "'-' where it has none; UNSUPPORTED = refused by estimate and serve):")
        for k, m in out["models"].items():
            if not m["supported"]:
                print(f"  {k + ('' if m['verified'] else ' *'):<52} UNSUPPORTED: {m['reason']}")
                continue
            kind = "dense" if not m["experts"] else f"MoE {m['experts']}/{m['experts_per_token']}"
            kind += " MLA" if m["mla"] else ""
            kind += f" {m['local_attention']}" if m["local_attention"] else ""
            fmt = m["format"]
            held = f"{m['heldout_mape']:.1f}%" if m["heldout_mape"] is not None else "-"
            alias = f" -> {m['alias_of']}" if m["alias_of"] else ""
            print(f"  {k + ('' if m['verified'] else ' *'):<52} {kind:<22} {m['params_b']:>7.1f}B "
                  f"({m['active_params_b']:>5.1f}B active) {fmt:<14} heldout {held:>6}{alias}")
    if "regions" in out:
        print("Grid carbon intensity, gCO2e/kWh:")
        for k, r in out["regions"].items():
            print(f"  {k:<6} {r['g_per_kwh']:>6.0f}  {r['source']}, {r['year']}")
    return 0
