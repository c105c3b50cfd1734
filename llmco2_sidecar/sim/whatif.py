"""What-if sweeps: one trace replayed on many configurations, the Pareto front, the pick.

A configuration is (model, GPU, TP, max_num_seqs, region). Configurations that cannot run (weights
beyond the GPUs' memory, TP not dividing the heads) are listed with the reason and not replayed.
The others are grouped by everything but the region (energy does not depend on the grid, so one
simulation serves every region) and each group is one call of :func:`run_task` -- in this process,
in worker processes, or as Ray tasks: the same function everywhere. Results come back in the
order of the configurations, whatever order the workers finish in, so the output is deterministic.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from ..errors import InputError
from .replay import ReplaySetup, deployment, run_replay


@dataclass(frozen=True)
class Task:
    """One simulation: a setup and the regions to price it in (None: the setup's own carbon)."""

    setup: ReplaySetup
    regions: tuple | None


def run_task(task: Task) -> list[dict]:
    """Replay one task; one summary per region. Picklable in and out (worker processes, Ray)."""
    if task.regions is None:
        return [run_replay(task.setup)]
    return run_replay(task.setup, regions=task.regions)


def label(s: dict) -> str:
    st = s["setup"]
    par = f"TP{st['tp']}" + (f"xPP{st['pp']}" if st["pp"] > 1 else "")
    model = st["model"].split("/")[-1]
    return f"{model} {st['gpu']} {par} seqs={st['max_num_seqs']} {st['region']}"


def plan(base: ReplaySetup, models: Sequence[str], gpus: Sequence[str], tps: Sequence[int],
         seqs: Sequence[int], regions: Sequence[str | None]) -> tuple[list[Task], list[dict]]:
    """Tasks for the configurations that fit, and ``{"config", "reason"}`` for those that do not."""
    tasks, unfit = [], []
    for model, gpu, tp in itertools.product(models, gpus, tps):
        probe = replace(base, model=model, gpu=gpu, tp=tp)
        try:
            deployment(probe)
        except InputError as exc:
            for n in seqs:
                for r in regions:
                    unfit.append({"config": {"model": model, "gpu": gpu, "tp": tp, "max_num_seqs": n, "region": r},
                                  "reason": str(exc), "field": exc.field})
            continue
        for n in seqs:
            setup = replace(probe, engine=replace(base.engine, max_num_seqs=n))
            if base.intensity_csv is not None or base.carbon_intensity_g_per_kwh is not None:
                tasks.append(Task(setup, None))
            else:
                tasks.append(Task(setup, tuple(regions)))
    return tasks, unfit


class ProgressBar:
    """``[#####.....] 3/8 configurations, 40 s, about 53 s left`` on standard error."""

    def __init__(self, total: int, enabled: bool = True, what: str = "configurations", width: int = 30):
        self.total, self.enabled, self.what, self.width = total, enabled, what, width
        self.done = 0
        self.t0 = time.perf_counter()
        self._draw()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        el = time.perf_counter() - self.t0
        fill = int(self.width * self.done / max(self.total, 1))
        left = f", about {el / self.done * (self.total - self.done):.0f} s left" if 0 < self.done < self.total else ""
        print(f"\r[{'#' * fill}{'.' * (self.width - fill)}] {self.done}/{self.total} {self.what}, {el:.0f} s{left}",
              end="\n" if self.done >= self.total else "", file=sys.stderr, flush=True)


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def execute(tasks: list[Task], jobs: int = 1, ray_address: str | None = None,
            on_done: Callable[[], None] | None = None) -> list[list[dict]]:
    """Run every task; results in task order. ``jobs`` > 1: that many worker processes;
    ``ray_address``: Ray tasks on that cluster (``auto``, ``ray://host:10001``, or ``local`` to start one here)."""
    results: list = [None] * len(tasks)
    if ray_address:
        return _execute_ray(tasks, ray_address, on_done)
    if jobs <= 1 or len(tasks) <= 1:
        for i, t in enumerate(tasks):
            results[i] = run_task(t)
            if on_done:
                on_done()
        return results
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=mp.get_context("spawn"),
                             initializer=_init_worker) as pool:
        futs = {pool.submit(run_task, t): i for i, t in enumerate(tasks)}
        for f in as_completed(futs):
            results[futs[f]] = f.result()
            if on_done:
                on_done()
    return results


def _execute_ray(tasks: list[Task], address: str, on_done) -> list[list[dict]]:
    try:
        import ray
    except ImportError:
        raise InputError("ray", "Ray is not installed", "pip install 'llmco2-sidecar[ray]'") from None
    started = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(run_task)
        refs = [remote.remote(t) for t in tasks]
        index = {r: i for i, r in enumerate(refs)}
        results: list = [None] * len(tasks)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for r in ready:
                results[index[r]] = ray.get(r)
                if on_done:
                    on_done()
        return results
    finally:
        if started:
            ray.shutdown()


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """True for the points no other point beats on both coordinates (lower is better)."""
    out = []
    for i, (x, y) in enumerate(points):
        dominated = any((a <= x and b <= y) and (a < x or b < y) for j, (a, b) in enumerate(points) if j != i)
        out.append(not dominated)
    return out


def candidates(results: list[dict]) -> list[bool]:
    """Which configurations serve the workload the others serve: those that reject no more requests than
    the fewest any configuration rejects (a prompt over the model's context is rejected by every GPU of
    that model alike; one over a small GPU's KV cache only there). A configuration that drops requests
    the others serve is not a candidate, whatever its carbon: it answers a smaller workload."""
    least = min((s["simulation"]["rejected"] for s in results), default=0)
    return [s["requests"] > 0 and s["simulation"]["rejected"] == least for s in results]


def front_of(results: list[dict]) -> list[bool]:
    """The Pareto front (p99 TTFT, carbon per 1,000 output tokens) among the :func:`candidates`; a
    configuration that rejects requests the others serve is never on it."""
    cand = candidates(results)
    ok = [i for i, s in enumerate(results) if cand[i]]
    sub = pareto_front([(results[i]["latency_s"]["ttft_p99"] or float("inf"),
                         results[i]["g_per_1k_output_tokens"] or float("inf")) for i in ok])
    out = [False] * len(results)
    for i, f in zip(ok, sub):
        out[i] = f
    return out


def meets(s: dict, slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> bool:
    lat = s["latency_s"]
    if slo_ttft_ms is not None and (lat["ttft_p99"] is None or lat["ttft_p99"] * 1e3 > slo_ttft_ms):
        return False
    if slo_tpot_ms is not None and lat["tpot_p99"] is not None and lat["tpot_p99"] * 1e3 > slo_tpot_ms:
        return False
    return s["requests"] > 0


def _components_g(s: dict) -> dict:
    """Carbon per 1,000 output tokens by component (operational split by energy share)."""
    e, c, out = s["energy_j"], s["carbon_g"], s["tokens"]["output"]
    k = 1000.0 / out if out else 0.0
    op_per_j = c["operational"] / e["total"] if e["total"] else 0.0
    return {"prefill": e["prefill"] * op_per_j * k, "decode": e["decode"] * op_per_j * k,
            "GPU idle": e["gpu_idle"] * op_per_j * k, "host": e["host"] * op_per_j * k,
            "embodied": c["embodied"] * k}


def explain(best: dict, others: list[dict]) -> str:
    """One line: why ``best`` emits least among ``others`` (those meeting the same SLOs)."""
    e = best["energy_j"]
    gpu_j = e["prefill"] + e["decode"] + e["gpu_idle"]
    busy = best["simulation"]["busy_s"] / best["duration_s"] if best["duration_s"] else 0.0
    idle_share = e["gpu_idle"] / gpu_j if gpu_j else 0.0
    if not others:
        return (f"the only configuration meeting the SLOs; its GPUs are busy {100 * busy:.0f}% of the trace, "
                f"idle draw is {100 * idle_share:.0f}% of their energy")
    g0 = best["g_per_1k_output_tokens"]
    distinct = [s for s in others if s["g_per_1k_output_tokens"] > g0 * (1 + 1e-9)]
    if not distinct:
        return f"ties with {label(others[0])} (same carbon per 1,000 output tokens)"
    runner = min(distinct, key=lambda s: s["g_per_1k_output_tokens"])
    gap = 100.0 * (1 - best["g_per_1k_output_tokens"] / runner["g_per_1k_output_tokens"])
    same_energy = best["energy_j"] == runner["energy_j"]
    if same_energy:
        return (f"{gap:.0f}% below {label(runner)} with the same energy: a cleaner grid "
                f"({best['setup']['carbon_intensity_g_per_kwh']} vs {runner['setup']['carbon_intensity_g_per_kwh']} gCO2e/kWh)")
    a, b = _components_g(best), _components_g(runner)
    comp = max(a, key=lambda k: b[k] - a[k])
    re = runner["energy_j"]
    r_gpu = re["prefill"] + re["decode"] + re["gpu_idle"]
    r_idle = re["gpu_idle"] / r_gpu if r_gpu else 0.0
    head = f"{gap:.0f}% below the next best, {label(runner)}: "
    if comp == "GPU idle":
        why = (f"idle energy dominates at this load (its GPUs are busy {100 * busy:.0f}% of the trace; idle draw "
               f"{100 * idle_share:.0f}% of its GPU energy vs {100 * r_idle:.0f}%): fewer or smaller GPUs waste less")
    elif comp == "embodied":
        why = (f"embodied carbon decides: {a['embodied']:.4f} vs {b['embodied']:.4f} g per 1,000 output tokens "
               f"(fewer GPU-hours held)")
    elif comp == "host":
        why = f"host energy decides ({a['host']:.4f} vs {b['host']:.4f} g per 1,000 output tokens): fewer servers' share"
    else:
        why = (f"{comp} energy decides: {a[comp]:.4f} vs {b[comp]:.4f} g per 1,000 output tokens "
               f"({'more tokens per joule in the batched decodes' if comp == 'decode' else 'cheaper prompt processing'})")
    return head + why


def choose(results: list[dict], slo_ttft_ms: float | None, slo_tpot_ms: float | None) -> dict | None:
    """``{"label", "why", "index"}`` of the carbon-minimal configuration meeting the SLOs, or a
    ``{"label": None, "why": ...}`` saying that none does."""
    cand = candidates(results)
    dropping = [k for k in range(len(results)) if not cand[k]]
    ok = [i for i, s in enumerate(results) if cand[i] and meets(s, slo_ttft_ms, slo_tpot_ms)]
    if not ok:
        best = min(range(len(results)), key=lambda i: results[i]["latency_s"]["ttft_p99"] or float("inf"),
                   default=None)
        why = "no configuration meets the SLOs"
        if dropping:
            why += (f" ({len(dropping)} reject requests the others serve, e.g. {label(results[dropping[0]])}: "
                    f"{results[dropping[0]]['simulation']['rejected']} rejected)")
        if best is not None and results[best]["latency_s"]["ttft_p99"] is not None:
            lat = results[best]["latency_s"]
            why += (f"; the fastest, {label(results[best])}, has p99 TTFT {lat['ttft_p99'] * 1e3:.0f} ms and "
                    f"p99 TPOT {(lat['tpot_p99'] or 0) * 1e3:.1f} ms")
        return {"label": None, "index": None, "why": why}
    i = min(ok, key=lambda k: (results[k]["g_per_1k_output_tokens"], k))
    why = explain(results[i], [results[k] for k in ok if k != i])
    cheaper_failing = [k for k in range(len(results)) if k not in ok and cand[k]
                       and results[k]["g_per_1k_output_tokens"] < results[i]["g_per_1k_output_tokens"]]
    if cheaper_failing:
        k = min(cheaper_failing, key=lambda k: results[k]["g_per_1k_output_tokens"])
        lat = results[k]["latency_s"]
        why += (f"; {len(cheaper_failing)} lower-carbon configuration(s) miss the SLOs, e.g. {label(results[k])} "
                f"(p99 TTFT {lat['ttft_p99'] * 1e3:.0f} ms, p99 TPOT {(lat['tpot_p99'] or 0) * 1e3:.1f} ms)")
    if dropping:
        why += (f"; {len(dropping)} configuration(s) reject requests the others serve and are not candidates, e.g. "
                f"{label(results[dropping[0]])} ({results[dropping[0]]['simulation']['rejected']} rejected)")
    sim = results[i]["simulation"]
    if sim["rejected"]:  # every candidate rejects these (the model's context, as a rule): say so
        why += (f"; every candidate rejects {sim['rejected']} request(s) of the trace, e.g. "
                + (sim.get("rejected_examples") or ["?"])[0])
    return {"label": label(results[i]), "index": i, "why": why}


def table(results: list[dict], front: list[bool], choice: dict | None) -> str:
    head = (f"{'configuration':<52} {'g/1k out':>9} {'J/out tok':>9} {'GPU idle':>8} {'TTFT p99':>9} "
            f"{'TPOT p99':>9} {'preempt':>7} {'rejected':>8}  ")
    lines = [head, "-" * len(head)]

    def num(v, spec: str, scale: float = 1.0, unit: str = "") -> str:
        return "n/a" if v is None else f"{v * scale:{spec}}{unit}"

    for i, (s, p) in enumerate(zip(results, front)):
        e = s["energy_j"]
        gpu = e["prefill"] + e["decode"] + e["gpu_idle"]
        lat = s["latency_s"]
        mark = ("pareto" if p else "") + (" <- pick" if choice and choice.get("index") == i else "")
        lines.append(f"{label(s):<52} {num(s['g_per_1k_output_tokens'], '.4f'):>9} "
                     f"{num(s['j_per_output_token'], '.3f'):>9} "
                     f"{100 * e['gpu_idle'] / gpu if gpu else 0:>7.0f}% {num(lat['ttft_p99'], '.0f', 1e3, 'ms'):>9} "
                     f"{num(lat['tpot_p99'] or 0, '.1f', 1e3, 'ms'):>9} {s['simulation']['preemptions']:>7} "
                     f"{s['simulation']['rejected']:>8}  {mark}")
    return "\n".join(lines)


def plot(results: list[dict], front: list[bool], path: str, choice: dict | None, title: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise InputError("plot", "needs matplotlib", "pip install 'llmco2-sidecar[plot]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    all_results = results
    shown_mask = [s["latency_s"]["ttft_p99"] is not None and s["g_per_1k_output_tokens"] is not None for s in results]
    shown = [i for i, keep in enumerate(shown_mask) if keep]
    index = {i: k for k, i in enumerate(shown)}
    results, front = [results[i] for i in shown], [front[i] for i in shown]
    if choice and choice.get("index") is not None:
        choice = dict(choice, index=index.get(choice["index"]))
    xs = [s["latency_s"]["ttft_p99"] * 1e3 for s in results]
    ys = [s["g_per_1k_output_tokens"] for s in results]
    full = [cand for cand, keep in zip(candidates(all_results), shown_mask) if keep]
    ax.scatter([x for x, f in zip(xs, full) if f], [y for y, f in zip(ys, full) if f], s=28, color="#8da0cb",
               label="configuration", zorder=2)
    if not all(full):
        ax.scatter([x for x, f in zip(xs, full) if not f], [y for y, f in zip(ys, full) if not f], s=28, marker="x",
                   color="#999999", label="rejects requests the others serve (not a candidate)", zorder=2)
    fr = sorted((x, y) for x, y, p in zip(xs, ys, front) if p)
    if fr:
        ax.plot([x for x, _ in fr], [y for _, y in fr], "-o", color="#d95f02", ms=6, label="Pareto front", zorder=3)
    for x, y, s, p in zip(xs, ys, results, front):
        if p or len(results) <= 12:
            ax.annotate(label(s), (x, y), fontsize=6, xytext=(4, 3), textcoords="offset points")
    if choice and choice.get("index") is not None:
        i = choice["index"]
        ax.scatter([xs[i]], [ys[i]], s=160, facecolors="none", edgecolors="#1b9e77", linewidths=2,
                   label="carbon-minimal meeting the SLOs", zorder=4)
    ax.set_xscale("log")
    ax.set_xlabel("p99 time to first token (ms, log scale)")
    ax.set_ylabel("gCO2e per 1,000 output tokens (operational + embodied)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, "simulated (engine simulator + predictor), not measured", fontsize=7, color="gray")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
