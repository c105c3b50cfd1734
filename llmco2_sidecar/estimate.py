"""``llmco2 estimate``: energy and carbon of the paper's batch (B requests, prompt length, output
length) on a deployment, with the best predictor the project has.

The JSON contract (other tools depend on it) is built by :func:`estimate`:
``energy_j`` {prefill, decode, serving, total}, ``carbon_g`` {operational, embodied, total},
``flops``/``memory_bytes``/``network_bytes``/``latency_s`` {prefill, decode}, ``predictor`` and the
inputs echoed. ``prefill``/``decode`` energy are the GPUs' energy for the whole batch on all
``tp x pp`` GPUs; ``serving`` is the serving engine's host energy (the host's idle-power share for
those GPUs over the batch's wall time, plus the batch-formation energy); ``total`` their sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .energy import carbon, embodied, serving
from .errors import InputError
from .graph import step_features
from .graph.builder import check_deployment
from .hardware import load_gpu
from .models import load_model
from .predictor.api import Deployment, StepPredictor
from .predictor.heldout import expected_error_for
from .schedule import batch_steps
from .workload import BatchQuery, Parallelism


@dataclass(frozen=True)
class CarbonSettings:
    pue: float = carbon.DEFAULT_PUE
    carbon_intensity_g_per_kwh: float | None = None  # None: the region's figure
    region: str | None = None
    lifetime_years: float = embodied.DEFAULT_LIFETIME_YEARS
    grid: object | None = None  # an energy.grid IntensityReading (--grid): wins over the two above

    def resolved_ci(self) -> tuple[float, str]:
        if self.grid is not None:
            return self.grid.g_per_kwh, self.grid.source
        if self.carbon_intensity_g_per_kwh is not None:
            return carbon.check_carbon_intensity(self.carbon_intensity_g_per_kwh), "given"
        reg = carbon.region(self.region)
        return reg.g_per_kwh, f"{reg.code} ({reg.source}, {reg.year})"

    def grid_fields(self) -> dict:
        """Kind (location, marginal) and unix time of the intensity used (None: an annual or given figure)."""
        if self.grid is not None:
            return {"carbon_intensity_kind": self.grid.kind, "carbon_intensity_ts": self.grid.ts}
        return {"carbon_intensity_kind": "location", "carbon_intensity_ts": None}


def batch_sci(carbon_g: float, batch: int, prompt_len: int, output_len: int) -> dict:
    """SCI of the batch (energy/sci.py): per request, per 1,000 output tokens, per 1,000 tokens."""
    from .energy.sci import _per

    return {"g_per_request": _per(carbon_g, batch), "g_per_1k_output_tokens": _per(carbon_g, batch * output_len, 1000.0),
            "g_per_1k_tokens": _per(carbon_g, batch * (prompt_len + output_len), 1000.0)}


def deployment_for(query: BatchQuery) -> Deployment:
    dep = Deployment(load_model(query.model), load_gpu(query.gpu),
                     Parallelism(tp=query.tp, pp=query.pp, dp=query.dp, ep=query.ep))
    check_deployment(dep)
    return dep


def model_info(m) -> dict:
    """What the estimate assumed about the model: size, experts, number formats, config provenance."""
    return {
        "params": m.total_params, "active_params": m.active_params, "weight_bytes": m.weight_bytes,
        "experts": m.num_experts, "experts_per_token": m.experts_per_token, "mla": m.is_mla,
        "weight_bits": m.weight_bits, "expert_weight_bits": m.expert_bits if m.is_moe else None,
        "act_bits": m.act_bits, "kv_bits": m.kv_bits, "gemm_dtype": m.gemm_dtype or None,
        "quant_method": m.quant_method or None, "config_verified": m.verified,
    }


def estimate(query: BatchQuery, settings: CarbonSettings = CarbonSettings(), predictor: StepPredictor | None = None,
             max_batched_tokens: int | None = None) -> dict:
    """The ``llmco2 estimate`` result for one query (see module docstring)."""
    if predictor is None:
        from .predictor.default import default_predictor

        predictor = default_predictor()
    carbon.check_pue(settings.pue)
    ci, ci_source = settings.resolved_ci()
    dep = deployment_for(query)
    max_len = int(dep.model.max_position_embeddings)
    if query.prompt_len + query.output_len > max_len:
        raise InputError("prompt-len", f"{query.prompt_len} prompt + {query.output_len} output tokens exceed "
                         f"{dep.model.name}'s context of {max_len} tokens (max_position_embeddings: vLLM would "
                         "refuse or cut the request)", f"prompt-len + output-len <= {max_len}")
    sched = batch_steps(dep, query.batch, query.prompt_len, query.output_len, max_batched_tokens)
    steps = sched.steps
    feats = step_features(dep, steps, with_nodes=False)  # FLOPs, bytes, Roofline time: not the durations
    pred = predictor.predict_steps(dep, steps)
    if query.observed_latency_s is not None:  # spread the known wall time over the steps, then predict again
        floor_s = float(feats.roofline_s.sum())
        if query.observed_latency_s < floor_s:
            raise InputError("observed-latency-s", f"{query.observed_latency_s:g} s is faster than this batch can run on "
                             f"{dep.n_gpus} x {dep.gpu.gpu_id}: its Roofline minimum (every FLOP at peak, every byte "
                             f"at full memory bandwidth) is {floor_s:.3g} s", f">= {floor_s:.3g}")
        steps.duration_s = pred.duration_s * (query.observed_latency_s / float(pred.duration_s.sum()))
        pred = predictor.predict_steps(dep, steps)

    e_prefill = float(pred.prefill_energy_j.sum())
    e_gpu = float(pred.energy_j.sum())
    frac = np.divide(pred.prefill_energy_j, pred.energy_j, out=np.zeros_like(pred.energy_j), where=pred.energy_j > 0)
    t_prefill = float((pred.duration_s * frac).sum())
    t_total = float(pred.duration_s.sum())
    power = serving.serving_power(dep.gpu, dep.n_gpus)
    e_serving = float(serving.serving_energy_j(t_total, power.host_idle_w, power.formation_j))
    e_total = e_gpu + e_serving
    op_g = float(carbon.operational_carbon_g(e_total, settings.pue, ci))
    emb_g = float(embodied.embodied_carbon_g(dep.gpu, dep.n_gpus * t_total, settings.lifetime_years))
    return {
        "model": dep.model.name,
        "gpu": dep.gpu.gpu_id,
        "batch": query.batch,
        "prompt_len": query.prompt_len,
        "output_len": query.output_len,
        "tp": query.tp,
        "pp": query.pp,
        "ep": query.ep,
        "dp": query.dp,
        "model_info": model_info(dep.model),
        "observed_latency_s": query.observed_latency_s,
        "pue": settings.pue,
        "carbon_intensity_g_per_kwh": ci,
        "carbon_intensity_source": ci_source,
        **settings.grid_fields(),
        "energy_j": {"prefill": e_prefill, "decode": e_gpu - e_prefill, "serving": e_serving, "total": e_total},
        "carbon_g": {"operational": op_g, "embodied": emb_g, "total": op_g + emb_g},
        "sci": batch_sci(op_g + emb_g, query.batch, query.prompt_len, query.output_len),
        "flops": {"prefill": float(feats.flops_prefill.sum()), "decode": float(feats.flops_decode.sum())},
        "memory_bytes": {"prefill": float(feats.memory_bytes_prefill.sum()), "decode": float(feats.memory_bytes_decode.sum())},
        "network_bytes": {"prefill": float(feats.network_bytes_prefill.sum()), "decode": float(feats.network_bytes_decode.sum())},
        "latency_s": {"prefill": t_prefill, "decode": t_total - t_prefill},
        "kv_cache": {"capacity_tokens": sched.kv_capacity_tokens, "fits": sched.kv_fits,
                     "preemptions": sched.preemptions, "recomputed_tokens": sched.recomputed_tokens},
        "steps": steps.n_steps,
        "predictor": predictor.name_for(dep),
        "expected_error": err.as_dict() if (err := expected_error_for(predictor, dep, query.model)) else None,
    }
