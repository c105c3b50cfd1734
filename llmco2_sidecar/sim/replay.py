"""Replay a request trace through the simulated engine and the sidecar's own accounting, in process.

:func:`run_replay` is the one per-configuration function behind ``llmco2 replay``, ``llmco2 whatif``
(worker processes or Ray tasks) and the case studies. For each chunk of simulated steps it calls
exactly what the live sidecar calls for the steps an engine sends
(:func:`~llmco2_sidecar.energy.accounting.predict_with_shares`,
:func:`~llmco2_sidecar.energy.accounting.account_steps`, :func:`~llmco2_sidecar.energy.accounting.operational_g`,
:func:`~llmco2_sidecar.energy.accounting.embodied_g`), with the simulated step times as the steps'
observed durations. Requests stream: finished ones are summarised (bounded-memory latency histograms)
and written out, then forgotten, so memory does not grow with the trace.

Summary energies (J), over the whole trace (first arrival to last step):
``prefill`` + ``decode`` = the GPUs' predicted energy in steps (idle power inside steps included),
``gpu_idle`` = the GPUs' idle power over the gaps between steps, so the three are everything the
replica's GPUs drew; ``host`` = the host's share (CPU, DRAM, fans) while busy and idle plus batch
formation; ``total`` = all four. ``attributed`` (to requests) + ``unattributed_idle`` = ``total``.
Embodied carbon is charged for every GPU-second of the trace (the replica is held, busy or not).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import asdict, dataclass, field, replace
from typing import IO, Callable

import numpy as np

from ..energy.accounting import (account_steps, embodied_g, gpu_idle_w, operational_g,
                                 predict_with_shares, resolve_accounting)
from ..energy.sci import request_sci
from ..errors import InputError
from ..service.records import Accounting, with_predictor
from .engine import EngineConfig, EngineSimulator, StepChunk
from .quantiles import LogHistogram
from .traces import open_trace

NOTE = ("simulated: step times come from the engine simulator driven by the predictor's duration model (kernels at "
        "the GPU's measured GEMM efficiency plus overheads fitted on vLLM 0.11: latencies are estimates within tens of "
        "percent) and energies from the predictor; nothing here was measured")
PREDICT_STEPS = 512  # steps per predictor call (the fused forward runs them in blocks; 512 beat 128 by ~12% in replay CPU)


@dataclass(frozen=True)
class ReplaySetup:
    """One configuration to replay (picklable: sent to worker processes and Ray tasks)."""

    trace: str
    model: str
    gpu: str
    tp: int = 1
    pp: int = 1
    engine: EngineConfig = field(default_factory=EngineConfig)
    trace_format: str = "auto"
    predictor: str = "default"
    region: str | None = None
    carbon_intensity_g_per_kwh: float | None = None
    pue: float | None = None
    host_idle_w_per_gpu: float | None = None
    formation_j: float | None = None
    lifetime_years: float | None = None
    intensity_csv: str | None = None  # hourly series: each step at its own hour's intensity
    start_s: float | None = None  # Unix time of the first request (default: the trace's own timestamps)
    max_arrival_s: float | None = None  # replay only the requests arriving this many seconds into the trace

    def label(self) -> str:
        par = f"TP{self.tp}" + (f" PP{self.pp}" if self.pp > 1 else "")
        return f"{self.model} | {self.gpu} {par} | seqs {self.engine.max_num_seqs}"


@functools.lru_cache(maxsize=4)
def load_predictor(name: str):
    from ..service.server import make_predictor

    return make_predictor(name)


_REJECTED_WHY = {"kv": "KV cache too small", "budget": "prompt over the token budget without chunked prefill",
                 "context": "prompt fills the model's {}-token context"}


def deployment(setup: ReplaySetup):
    """The :class:`~llmco2_sidecar.predictor.api.Deployment` of ``setup``; raises InputError when the
    model does not fit (weights vs memory, TP vs heads)."""
    from ..graph.builder import check_deployment
    from ..hardware.catalog import load_gpu
    from ..models.catalog import load_model
    from ..predictor.api import Deployment
    from ..schedule import kv_capacity_tokens
    from ..workload import Parallelism

    dep = Deployment(load_model(setup.model), load_gpu(setup.gpu), Parallelism(tp=setup.tp, pp=setup.pp))
    check_deployment(dep)
    kv_capacity_tokens(dep)
    return dep


class _Slots:
    """Per-request accumulators by slot (grown on demand)."""

    NAMES = ("prefill_j", "decode_j", "serving_j", "gpu_s", "op_g")

    def __init__(self) -> None:
        self.cols = {n: np.zeros(1024) for n in self.NAMES}

    def add(self, slot: np.ndarray, n_slots: int, **values: np.ndarray) -> None:
        if n_slots > self.cols["gpu_s"].shape[0]:
            size = max(n_slots, 2 * self.cols["gpu_s"].shape[0])
            for n, a in self.cols.items():
                b = np.zeros(size)
                b[:a.shape[0]] = a
                self.cols[n] = b
        for n, v in values.items():
            self.cols[n][:n_slots] += np.bincount(slot, weights=v, minlength=n_slots)

    def take(self, s: int) -> dict:
        out = {n: float(a[s]) for n, a in self.cols.items()}
        for a in self.cols.values():
            a[s] = 0.0
        return out


def _intensity(setup: ReplaySetup):
    if setup.intensity_csv is None:
        return None
    from ..energy.grid.series import IntensitySeries

    try:
        return IntensitySeries.from_csv(setup.intensity_csv)
    except InputError as exc:  # the series' own errors name "grid" (--grid csv:); here the flag is --intensity-csv
        if exc.field != "grid":
            raise
        raise InputError("intensity-csv", exc.message, exc.allowed) from None


def run_replay(setup: ReplaySetup, requests_out: IO[str] | None = None,
               progress: Callable[[int, float], None] | None = None,
               regions: tuple[str | None, ...] | None = None,
               on_chunk: Callable | None = None) -> list[dict] | dict:
    """Replay ``setup``; returns its summary (see module docstring). With ``regions``, one summary per
    region from the same simulation (energy does not depend on the grid): a list.
    ``requests_out``: a text file receiving one JSON line per finished request.
    ``progress(requests_done, simulated_s)`` is called after each chunk, ``on_chunk(sim, chunk, step_energy)``
    after it is accounted (the demo sends the same steps to a live sidecar)."""
    from ..service.carbon_log import dumps

    dep = deployment(setup)
    predictor = load_predictor(setup.predictor)
    acc = resolve_accounting(dep, setup.pue, setup.carbon_intensity_g_per_kwh, setup.region,
                             setup.host_idle_w_per_gpu, setup.formation_j, setup.lifetime_years)
    with_predictor(acc, predictor, dep, setup.model)
    series = _intensity(setup)
    if series is not None and (setup.carbon_intensity_g_per_kwh is not None or regions):
        raise InputError("intensity-csv", "a time-varying intensity replaces --region / --carbon-intensity")
    trace = open_trace(setup.trace, setup.trace_format)
    sim = EngineSimulator(dep, predictor, setup.engine)
    slots = _Slots()
    ttft, tpot, e2e = LogHistogram(), LogHistogram(), LogHistogram()
    tot = dict(prefill=0.0, decode=0.0, gpu_idle=0.0, host=0.0, attributed=0.0, unattributed_idle=0.0,
               op_series_g=0.0, embodied_attributed_g=0.0, op_attributed_g=0.0)
    tokens = {"prompt": 0, "output": 0}
    n_done = 0
    preempted_requests = 0
    last_end = 0.0  # the replica exists from the first arrival on: a gap before the first step is idle
    epoch = None
    ci_cache: dict[int, float] = {}

    def ci_at(start_s: np.ndarray) -> np.ndarray:
        minute = np.floor((epoch + start_s) / 60.0).astype(np.int64)
        out = np.empty(minute.shape[0])
        for m in np.unique(minute):
            v = ci_cache.get(int(m))
            if v is None:
                v = ci_cache[int(m)] = series.at(float(m) * 60.0).g_per_kwh
            out[minute == m] = v
        return out

    requests = trace
    if setup.max_arrival_s is not None:
        requests = itertools.takewhile(lambda q: q.arrival_s <= setup.max_arrival_s, trace)
    for chunk in sim.run(requests):
        if series is not None and epoch is None:
            epoch = setup.start_s if setup.start_s is not None else trace.epoch_s
            if epoch is None:
                raise InputError("start", "the trace has no timestamps: give the Unix time or ISO date of its first "
                                 "request to place it on the intensity series")
        e = _account(chunk, dep, predictor, acc, last_end)
        last_end = float(chunk.end_s[-1])
        gap_s = e.gap_s
        gpu_idle = gpu_idle_w(acc) * gap_s
        tot["prefill"] += float(e.prefill_j.sum())
        tot["decode"] += float(e.decode_j.sum())
        tot["gpu_idle"] += float(gpu_idle.sum())
        tot["host"] += float((e.busy_host_j + e.gap_attributed_j + e.idle_j - gpu_idle).sum())
        tot["unattributed_idle"] += float(e.idle_j.sum())
        values = dict(prefill_j=e.prefill_j, decode_j=e.decode_j, serving_j=e.serving_j, gpu_s=e.gpu_s)
        if series is not None:
            ci = ci_at(chunk.start_s)
            tot["op_series_g"] += float(operational_g(e.step_total_j, acc, ci).sum())
            values["op_g"] = operational_g(e.slice_total_j, acc, ci[chunk.step_of])
        slots.add(chunk.slot, sim.n_slots, **values)
        lines = []
        fin = chunk.finished
        if fin:
            arr = np.array([r.arrival for r in fin])
            first = np.array([r.first_s for r in fin])
            finish = np.array([r.finish_s for r in fin])
            outs = np.array([r.output for r in fin], dtype=np.float64)
            ttft.add(first - arr)
            e2e.add(finish - arr)
            multi = outs > 1
            tpot.add((finish[multi] - first[multi]) / (outs[multi] - 1))
        for r in fin:
            a = slots.take(r.slot)
            total_j = a["prefill_j"] + a["decode_j"] + a["serving_j"]
            op = a["op_g"] if series is not None else operational_g(total_j, acc)
            emb = embodied_g(a["gpu_s"], acc)
            tot["attributed"] += total_j
            tot["op_attributed_g"] += op
            tot["embodied_attributed_g"] += emb
            tokens["prompt"] += r.prompt
            tokens["output"] += r.output
            n_done += 1
            preempted_requests += r.preemptions > 0
            if requests_out is not None:
                rec = {"type": "request", "request_id": r.rid, "arrival_s": r.arrival, "prompt_tokens": r.prompt,
                       "output_tokens": r.output, "ttft_s": r.first_s - r.arrival,
                       "tpot_s": (r.finish_s - r.first_s) / (r.output - 1) if r.output > 1 else None,
                       "e2e_s": r.finish_s - r.arrival, "preemptions": r.preemptions,
                       "energy_j": {"prefill": a["prefill_j"], "decode": a["decode_j"], "serving": a["serving_j"],
                                    "total": total_j},
                       "carbon_g": {"operational": op, "embodied": emb, "total": op + emb}, "gpu_s": a["gpu_s"]}
                rec["sci"] = request_sci(op + emb, r.prompt, r.output)
                rec["expected_error_pct"] = acc.expected_error_pct
                if series is None:
                    rec["carbon_intensity_g_per_kwh"] = acc.ci_g_per_kwh
                    rec["carbon_intensity_kind"] = "location"
                    rec["carbon_intensity_source"] = acc.region if acc.region == "configured" else f"static:{acc.region}"
                else:  # each step at its own hour: the record names the series and the reading at its finish
                    fin_r = series.at(epoch + r.finish_s, clamp=True)
                    rec["carbon_intensity_kind"] = fin_r.kind
                    rec["carbon_intensity_source"] = fin_r.source + " (per step)"
                    rec["carbon_intensity_ts"] = fin_r.ts
                lines.append(dumps(rec))
        if lines:
            requests_out.write("\n".join(lines) + "\n")
        if on_chunk is not None:
            on_chunk(sim, chunk, e)
        if progress is not None:
            progress(n_done, last_end)
    st = sim.stats
    duration = st.end_s
    energy = {k: tot[k] for k in ("prefill", "decode", "gpu_idle", "host")}
    energy["total"] = sum(energy.values())
    energy["attributed"] = tot["attributed"]
    energy["unattributed_idle"] = tot["unattributed_idle"]

    def pct(h: LogHistogram) -> tuple:
        return h.quantile(0.50), h.quantile(0.99)

    latency = {}
    for name, h in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        p50, p99 = pct(h)
        latency[f"{name}_p50"] = p50
        latency[f"{name}_p99"] = p99
    for name, h in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        latency[f"{name}_mean"] = h.mean()
    out_tok = tokens["output"]
    base = {
        "requests": n_done,
        "duration_s": duration,
        "tokens": tokens,
        "energy_j": energy,
        "latency_s": latency,
        "j_per_output_token": energy["total"] / out_tok if out_tok else None,
        "simulation": {"steps": st.steps, "busy_s": st.busy_s, "preemptions": st.preemptions,
                       "preempted_requests": preempted_requests, "recomputed_tokens": st.recomputed_tokens,
                       "max_running": st.max_running, "max_waiting": st.max_waiting,
                       "kv_capacity_tokens": sim.kv_capacity_tokens, "rejected": st.rejected,
                       "rejected_examples": [f"{rid} ({_REJECTED_WHY[why].format(sim.max_len)})"
                                             for rid, why in st.rejected_ids[:5]],
                       "truncated_outputs": st.truncated, "max_model_len": sim.max_len},
        "trace": {"path": setup.trace, "format": trace.format, "rows": trace.rows,
                  "skipped_zero_tokens": trace.skipped, "start_epoch_s": trace.epoch_s},
        "predictor": acc.predictor_name,
        # the predictor's typical error on this deployment, in % (predictor/heldout.py; None: unknown)
        "expected_error_pct": acc.expected_error_pct,
        "note": NOTE,
    }
    gpu_seconds = dep.n_gpus * duration

    def summary(acc_r: Accounting) -> dict:
        s = dict(base)
        if series is not None:
            op = tot["op_series_g"]
            avg = series.mean_g_per_kwh()
            op_avg = float(operational_g(energy["total"], acc_r, avg))
            op_region = float(operational_g(energy["total"], acc_r))  # the region's annual figure (table)
            s["intensity"] = {"series": setup.intensity_csv, "series_mean_g_per_kwh": avg,
                              "start_epoch_s": epoch, "operational_g_at_series_mean": op_avg,
                              "difference_g": op - op_avg,
                              "difference_pct": 100.0 * (op - op_avg) / op_avg if op_avg else None,
                              "region": acc_r.region, "region_annual_g_per_kwh": acc_r.ci_g_per_kwh,
                              "operational_g_at_region_annual": op_region,
                              "difference_vs_region_annual_g": op - op_region,
                              "effective_g_per_kwh": (op / (energy["total"] * acc_r.pue / 3.6e6)
                                                      if energy["total"] else None)}
        else:
            op = float(operational_g(energy["total"], acc_r))
        emb = float(embodied_g(gpu_seconds, acc_r))
        s["carbon_g"] = {"operational": op, "embodied": emb, "total": op + emb,
                         "attributed_to_requests": (tot["op_attributed_g"] if series is not None
                                                    else float(operational_g(tot["attributed"], acc_r)))
                         + tot["embodied_attributed_g"]}
        s["g_per_1k_output_tokens"] = 1000.0 * (op + emb) / out_tok if out_tok else None
        # SCI ((E x I) + M per R, docs/sci.md) over all energy of the replica, idle included
        s["sci"] = {"g_per_request": (op + emb) / n_done if n_done else None,
                    "g_per_1k_output_tokens": s["g_per_1k_output_tokens"],
                    "g_per_1k_tokens": (1000.0 * (op + emb) / (out_tok + tokens["prompt"])
                                        if out_tok + tokens["prompt"] else None),
                    "idle_included": True}
        s["setup"] = _setup_dict(setup, dep, acc_r, series is not None)
        return s

    if regions:
        return [summary(replace(acc, **_region_fields(r))) for r in regions]
    return summary(acc)


def _region_fields(code: str | None) -> dict:
    from ..energy import carbon

    reg = carbon.region(code)
    return {"ci_g_per_kwh": reg.g_per_kwh, "region": reg.code}


def _setup_dict(setup: ReplaySetup, dep, acc: Accounting, series: bool) -> dict:
    eng = asdict(setup.engine)
    eng["kv_capacity_tokens"] = eng["kv_capacity_tokens"]  # None: from the deployment (see simulation)
    return {"model": setup.model, "gpu": dep.gpu.gpu_id, "tp": setup.tp, "pp": setup.pp, "n_gpus": dep.n_gpus,
            **eng, "predictor": acc.predictor_name, "pue": acc.pue,
            "carbon_intensity_g_per_kwh": None if series else acc.ci_g_per_kwh,
            "region": "intensity series" if series else acc.region,
            "host_idle_w": acc.host_busy_w, "gpu_idle_w": gpu_idle_w(acc), "formation_j": acc.formation_j,
            "embodied_g_per_gpu_hour": acc.embodied_g_per_gpu_s * 3600.0}


def _account(chunk: StepChunk, dep, predictor, acc: Accounting, last_end: float):
    """The sidecar's prediction and attribution over one chunk (predicted in calls of PREDICT_STEPS)."""
    sb = chunk.step_batch()
    S = sb.n_steps
    if S <= PREDICT_STEPS:
        predicted = predict_with_shares(predictor, dep, sb)
    else:
        from ..workload import StepBatch

        edges = list(range(0, S, PREDICT_STEPS)) + [S]
        bounds = np.searchsorted(chunk.step_of, edges, side="left")
        parts = []
        for i in range(len(edges) - 1):
            s0, s1, r0, r1 = edges[i], edges[i + 1], bounds[i], bounds[i + 1]
            parts.append(predict_with_shares(predictor, dep, StepBatch(
                sb.request_step[r0:r1] - s0, sb.context_tokens[r0:r1], sb.new_tokens[r0:r1], sb.duration_s[s0:s1])))
        predicted = tuple(np.concatenate([p[k] for p in parts]) for k in range(4))
    return account_steps(chunk.step_of, chunk.context_tokens, chunk.is_prefill, chunk.start_s, chunk.end_s,
                         predicted, last_end, acc)
