"""Hook overhead of the llmco2 vLLM plugin: its own cost per engine step, and a real server's
throughput with and without the switch, in one run.

1. **Hook cost per step (µs).** Real vLLM 0.32 ``SchedulerOutput`` / ``NewRequestData`` /
   ``CachedRequestData`` objects go through the patched scheduler methods of a stand-in scheduler
   whose ``schedule`` only builds the step's ``SchedulerOutput`` (as vLLM's does, right before the
   hook reads it; until 2026-11-26 they were built before timing, so the hook found them cold in
   memory, which no engine does) and whose ``update_from_output`` returns at once, so what the
   difference times is the plugin's wrappers + hook + emitter enqueue. The emitter is connected to a real
   ``llmco2 serve`` subprocess (its sender thread runs, as in vLLM). Batches in steady state: 8, 64
   and 256 running requests, each step one request leaves (a finish event) and one enters (a
   prefill chunk of up to 512 tokens). The per-step time is the wrapped calls minus the same calls
   unwrapped, measured back to back ("hot") and with engine-like pacing (see ``_engine_work``).
2. **Throughput.** Real vLLM OpenAI servers (CPU build, ``--max-num-batched-tokens 64
   --max-num-seqs 8``) under a saturating closed-loop load (24 requests in flight, mixed prompt
   lengths, 32 output tokens each, ``ignore_eos``): the engine's batch is always full and requests
   queue, so throughput is the server's capacity, and a response held for its carbon adds latency
   (reported) without emptying the batch. Each arm's server is started several times (passes, the
   arms' order reversed from pass to pass) and loaded a few times per start (rounds); the ratio is an
   arm's median tokens/s over the switch-off server's, beside the per-pass ratios and their mean with
   a 95% t-interval (server starts differ by a few percent, so passes, not rounds, set the
   resolution), and the per-pass ratios with the start order as a factor of the design
   (``_order_adjusted``: the server started second runs faster, whichever arm it is; the order
   alternates, so the factor cancels in the estimate and, taken out, narrows the interval). Host-bound servers run one at a time (five alive at once disturbed each other: the
   switch-off server scattered by 4x from round to round); the step-bound pair runs interleaved (both
   started, loaded in turns, the order alternating from round to round), so that the machine's drift
   falls on both arms alike; there the mean ratio of side-by-side rounds is reported too.
   Two regimes (``REGIMES``):
   *step-bound*, the shape of a GPU server: a random LLaMA (hidden 768, 6 layers) whose steps take
   real compute, the model worker alone on the core vLLM pins it to, every other process (API server,
   EngineCore, sidecar, load client) on the other core; arms *off* and *on*
   (``LLMCO2_SIDECAR=auto``, responses held for their carbon). *host-bound*: the e2e test's tiny
   model, whose steps are almost all Python, every process on both cores; arms *off*, *on*, *not held*
   (``LLMCO2_RESPONSE_WAIT_S=0``), *no sidecar* (the switch set to a socket nobody listens on: hook and
   middleware run, nothing is sent) and *own session* (a sidecar started separately, in a session of
   its own). Beside the ratios: request latencies, how long responses were held for their carbon
   (``x-llmco2-wait-ms``), each sidecar's latency histograms (finish -> sidecar, arrival -> record,
   event-loop lag), its event-loop thread's running and run-queue time
   (``/proc/PID/task/TID/schedstat``), its CPU per 1000 tokens, the engine's steps per second, and its
   carbon-log records against the responses.

Run: ``python benchmarks/hook_overhead.py [--regimes step-bound,host-bound] [--passes-step-bound N]``
(about 25 minutes with the default 6 step-bound passes; the committed figures used 30, about 85
minutes; ``--hook-cost-only`` reruns part 1 in two minutes and keeps the committed part 2, naming
both dates). It re-runs itself with the e2e venv's python, building ``.venv-vllm`` if needed. Writes
``benchmarks/results/hook_overhead.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integrations"))
RESULTS = ROOT / "benchmarks" / "results"


# ---- part 1: the hook's own cost ------------------------------------------------------------------
def _steps(n_running: int, n_steps: int, chunk: int = 512):
    """A steady state: n_running requests, one leaves and one enters per step.

    Returns, per step, a function that builds that step's real ``SchedulerOutput`` (vLLM's own
    ``schedule()`` builds it right before the hook reads it, so the stand-in scheduler builds it
    inside its ``schedule()`` too, in both the hooked and the plain runs), the leaving request's
    id, and the new request's prompt length."""
    from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput

    next_id = [0]

    def new_id() -> str:
        next_id[0] += 1
        return f"cmpl-{next_id[0]:032x}-0-{next_id[0] % 10**8:08d}"

    def builder(rid_new, prompt_ids, ids, ctx, nst):
        def build():
            new_req = NewRequestData(req_id=rid_new, prompt_token_ids=prompt_ids, mm_features=[],
                                     sampling_params=None, pooling_params=None, block_ids=([],),
                                     num_computed_tokens=0, lora_request=None)
            cached = CachedRequestData(req_ids=list(ids), resumed_req_ids=set(), new_token_ids=[], all_token_ids={},
                                       new_block_ids=[None] * len(ids), num_computed_tokens=list(ctx),
                                       num_output_tokens=[1] * len(ids))
            return SchedulerOutput(scheduled_new_reqs=[new_req], scheduled_cached_reqs=cached,
                                   num_scheduled_tokens=dict(nst), total_num_scheduled_tokens=sum(nst.values()),
                                   scheduled_spec_decode_tokens={}, scheduled_encoder_inputs={},
                                   finished_req_ids=set(), free_encoder_mm_hashes=[])
        return build

    running = {new_id(): 200 + 37 * i % 1500 for i in range(n_running)}  # rid -> tokens in the KV cache
    out = []
    for _ in range(n_steps):
        rid_new = new_id()
        prompt = 300 + (next_id[0] * 131) % 1200
        ids = list(running)
        nst = {r: 1 for r in ids}
        nst[rid_new] = min(chunk, prompt)
        leaving = ids[0]
        out.append((builder(rid_new, list(range(prompt)), ids, [running[r] for r in ids], nst), leaving, prompt))
        del running[leaving]
        for r in ids[1:]:
            running[r] += 1
        running[rid_new] = min(chunk, prompt)
    return out


class _Req:
    """A leaving request as ``_free_request`` sees it: vLLM's own status enum, ``num_output_tokens`` a
    property over the output token list (as ``vllm.v1.request.Request`` has them)."""

    __slots__ = ("request_id", "_output_token_ids", "status")

    def __init__(self, rid: str, status):
        self.request_id = rid
        self._output_token_ids = [0] * 17
        self.status = status

    @property
    def num_output_tokens(self) -> int:
        return len(self._output_token_ids)


def hook_cost(target: str, sizes=(8, 64, 256), n_steps: int = 3000, pace_s: float = 0.001) -> list[dict]:
    from types import SimpleNamespace

    from llmco2_vllm.patch import patch_scheduler
    from llmco2_vllm.settings import Settings
    from vllm.v1.request import RequestStatus

    hf = SimpleNamespace(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, head_dim=128, vocab_size=32000,
                         tie_word_embeddings=False)
    cfg = SimpleNamespace(model_config=SimpleNamespace(hf_text_config=hf, dtype="bfloat16",
                                                       served_model_name="meta-llama/Llama-2-7b-hf"),
                          parallel_config=SimpleNamespace(tensor_parallel_size=1, pipeline_parallel_size=1,
                                                          data_parallel_size=1, data_parallel_rank=0),
                          cache_config=SimpleNamespace(cache_dtype="auto"))
    results = []
    for size in sizes:
        steps = _steps(size, n_steps)

        class Sched:
            def __init__(self, vllm_config):
                self.vllm_config = vllm_config
                self.requests = dict.fromkeys(range(size + 1))  # the running requests (the hook reads len())
                self.current = None

            def schedule(self):
                return self.current()  # builds the step's SchedulerOutput, as vLLM's schedule() does

            def update_from_output(self, so, model_output=None):
                return {}

            def _free_request(self, request, delay_free_blocks=False):
                return None

            def shutdown(self):
                pass

        plain = Sched(cfg)

        class Hooked(Sched):
            pass

        patch_scheduler(Settings(target=target, gpu="A100-SXM4-80GB"), Hooked)
        hooked = Hooked(cfg)
        emitter = hooked._llmco2_hook.emitter
        deadline = time.monotonic() + 30
        while not emitter.stats().connected and time.monotonic() < deadline:
            time.sleep(0.05)

        def run(s, series, mode):
            pc = time.perf_counter_ns
            for build, leaving, _ in series:
                s.current = build
                req = _Req(leaving, RequestStatus.FINISHED_LENGTH_CAPPED)
                t = pc()
                so = s.schedule()
                s.update_from_output(so)
                s._free_request(req)
                yield pc() - t
                if mode == "engine-like":
                    _engine_work(pace_s)

        third = len(steps) // 3
        row = {"running_requests": size, "slices_per_step": size + 1}
        for k, mode in enumerate(PACING):
            series = steps[k * third:(k + 1) * third]
            warm, measured = series[: third // 10], series[third // 10:]
            list(run(hooked, warm, mode))
            list(run(plain, warm, mode))
            t_hooked = list(run(hooked, measured, mode))
            t_plain = list(run(plain, measured, mode))
            diff_us = sorted((a - b) / 1000.0 for a, b in zip(t_hooked, t_plain))
            row[mode] = {"steps_measured": len(measured), "mean_us": statistics.fmean(diff_us),
                         "p50_us": statistics.median(diff_us), "p99_us": diff_us[int(0.99 * len(diff_us))],
                         "unhooked_call_mean_us": statistics.fmean(b / 1000 for b in t_plain)}
            print(f"hook cost, {size:4d} running, {mode:5s}: mean {row[mode]['mean_us']:.1f} us, "
                  f"p50 {row[mode]['p50_us']:.1f} us, p99 {row[mode]['p99_us']:.1f} us per step", flush=True)
        assert emitter.flush(30.0), "the sidecar did not acknowledge the benchmark's steps"
        st = emitter.stats()
        hooked.shutdown()
        row["emitter"] = {"emitted": st.emitted, "dropped": st.dropped, "steps_accepted": st.steps_accepted,
                          "steps_rejected": st.steps_rejected, "done_accepted": st.done_accepted}
        results.append(row)
    return results


PACING = ("hot", "engine-like")
ARMS = ("off", "on", "nowait", "unreachable", "separate")  # the servers of the throughput part
SIDECAR_ARMS = ("on", "nowait", "separate")  # each with a sidecar of its own
ARM_TITLES = {"off": "off", "on": "on (auto sidecar)", "nowait": "on, not held", "unreachable": "on, no sidecar",
              "separate": "on, sidecar in its own session"}
_SCRATCH = bytearray(8 << 20)
_ZEROS = bytes(8 << 20)


def _engine_work(seconds: float) -> None:
    """Stand-in for an engine step between two hook calls: vLLM's own Python work overwrites the
    caches (8 MiB copied, GIL held), then the thread waits ``seconds`` for the model step (GIL
    released: the emitter's sender thread runs then). The wait is not shortened by the copy's time:
    on this box the copy alone takes about 0.9 ms, and a 1 ms step that included it left the sender
    almost no GIL-free time (the hook-cost parts run before 2026-11-26 14:42 UTC were paced that way)."""
    _SCRATCH[:] = _ZEROS
    time.sleep(seconds)


# ---- part 2: a real server's throughput with and without the switch -------------------------------
PROMPTS = [
    "Hello world",
    "Carbon accounting for language model serving measures energy per request. " * 3,
    "Decode steps generate one token per running request. " * 6,
    "A sidecar receives one event per engine step and attributes energy to requests. " * 2,
]


def _load(port: int, n_requests: int, concurrency: int, max_tokens: int) -> dict:
    """Closed loop: ``concurrency`` clients, each sends its next request when the previous response
    (with its carbon headers, when the switch is on) has arrived."""
    from llmco2_e2e_harness import http_request

    todo = list(range(n_requests))
    lock = threading.Lock()
    tokens = [0]
    errors = [0]
    latencies: list[float] = []
    waits_ms: list[float] = []  # x-llmco2-wait-ms: how long the middleware held each response for its carbon
    carbon_status: dict[str, int] = {}

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            body = {"model": "tiny", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens,
                    "ignore_eos": True, "temperature": 0.0}
            t = time.perf_counter()
            status, headers, payload = http_request(port, "POST", "/v1/completions", body, timeout_s=300)
            latency = time.perf_counter() - t
            with lock:
                if status == 200:
                    tokens[0] += json.loads(payload)["usage"]["completion_tokens"]
                    latencies.append(latency)
                    # "final": x-llmco2-carbon-g/-energy-j present; "pending": the wait ran out; "none": no middleware
                    key = headers.get("x-llmco2-carbon-status", "none")
                    if key == "final" and "x-llmco2-carbon-g" not in headers:
                        key = "final-without-figure"
                    carbon_status[key] = carbon_status.get(key, 0) + 1
                    if "x-llmco2-wait-ms" in headers:
                        waits_ms.append(float(headers["x-llmco2-wait-ms"]))
                else:
                    errors[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    waits_ms.sort()
    return {"output_tokens": tokens[0], "wall_s": wall, "tokens_per_s": tokens[0] / wall, "errors": errors[0],
            "responses": len(latencies),
            "latency_p50_ms": 1000 * statistics.median(latencies) if latencies else None,
            "latency_p90_ms": 1000 * latencies[int(0.9 * len(latencies))] if latencies else None,
            "carbon_status": carbon_status, "waits_ms": waits_ms}


def _wait_quiet(pids: list[int], below_cores: float = 0.1, window_s: float = 0.25, timeout_s: float = 15.0) -> float:
    """Wait until ``pids`` (with their descendants) together use less than ``below_cores`` of a core over
    ``window_s``; returns the seconds waited (``timeout_s`` at most)."""
    from llmco2_e2e_harness import cpu_seconds

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        c0 = sum(cpu_seconds(p) for p in pids)
        time.sleep(window_s)
        if (sum(cpu_seconds(p) for p in pids) - c0) / window_s < below_cores:
            break
    return time.monotonic() - t0


def _wait_summary(waits: list[float]) -> dict | None:
    """p50 / p90 / p99 / mean of the responses' ``x-llmco2-wait-ms`` (None when there were none)."""
    if not waits:
        return None
    w = sorted(waits)
    return {"n": len(w), "p50": statistics.median(w), "p90": w[int(0.9 * (len(w) - 1))],
            "p99": w[int(0.99 * (len(w) - 1))], "mean": statistics.fmean(w)}


HISTOGRAMS = {"record": "llmco2_record_latency_seconds", "finish_lag": "llmco2_finish_lag_seconds",
              "loop_lag": "llmco2_event_loop_lag_seconds"}


def _histograms(metrics_port: int) -> dict:
    """The sidecar's latency histograms as cumulative counts per bucket bound, from its Prometheus
    endpoint: ``record`` (a message's arrival to its request records), ``finish_lag`` (a request's
    finish in the engine to the finish event's arrival at the sidecar) and ``loop_lag`` (how late the
    sidecar's event loop wakes from a 0.1 s sleep, ten samples a second)."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    out: dict[str, dict] = {k: {} for k in HISTOGRAMS}
    for line in text.splitlines():
        for key, name in HISTOGRAMS.items():
            if line.startswith(name + "_bucket{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                out[key][bound] = float(line.rsplit(" ", 1)[1])
    return out


def _add_delta(acc: dict, before: dict, after: dict) -> None:
    """``acc`` += the observations between two reads of :func:`_histograms`."""
    for key in HISTOGRAMS:
        for bound, count in after[key].items():
            acc.setdefault(key, {})[bound] = acc.get(key, {}).get(bound, 0.0) + count - before[key].get(bound, 0.0)


def _schedstat(pid: int) -> tuple[float, float]:
    """The main thread of ``pid`` (a sidecar's event loop): (seconds it ran, seconds it was runnable
    but waiting for a CPU), from ``/proc/PID/task/PID/schedstat``; zeros when unreadable."""
    try:
        run_ns, wait_ns, _ = open(f"/proc/{pid}/task/{pid}/schedstat").read().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


def _late_share(hist: dict, bound: str = "0.05") -> dict:
    """Share of the samples in ``hist`` above ``bound`` seconds, and how many samples there were."""
    total = hist.get("+Inf", 0.0)
    return {"samples": int(total), "share_over_50ms": (total - hist.get(bound, 0.0)) / total if total else None}


def _quantiles_of(hist: dict) -> dict:
    return {f"p{int(q * 100)}": _bucket_quantile(hist, q) for q in (0.5, 0.9, 0.99)} if hist else {}


def _bucket_quantile(hist: dict, q: float) -> str | None:
    """Upper bucket bound holding quantile ``q`` of a histogram's observations (cumulative counts per
    bound, as Prometheus writes them); past the last finite bound, "> that bound"."""
    rows = sorted((float("inf") if b == "+Inf" else float(b), count) for b, count in hist.items())
    total = rows[-1][1] if rows else 0.0
    if total <= 0:
        return None
    finite = [b for b, _ in rows if b != float("inf")]
    for bound, count in rows:
        if count >= q * total:
            return f"> {finite[-1] * 1000:g} ms" if bound == float("inf") else f"<= {bound * 1000:g} ms"
    return None


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def _auto_sidecar_pid(server_pid: int, timeout_s: float = 30.0) -> int:
    """The ``llmco2 serve`` the plugin started for ``LLMCO2_SIDECAR=auto`` (a descendant of the server)."""
    import psutil

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        for p in psutil.Process(server_pid).children(recursive=True):
            try:
                if "llmco2_sidecar.cli.main" in " ".join(p.cmdline()):
                    return p.pid
            except psutil.Error:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"no auto-started sidecar under pid {server_pid}")


def _count_records(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("type", "request") == "request")


# the two regimes of the throughput part: what a server's step is bound by decides what the plugin can cost
REGIMES = {
    "step-bound": {
        "what": "a random LLaMA with hidden size 768 and 6 layers (about 36M parameters) whose steps take real "
                "compute; vLLM's model worker alone on the core vLLM pins it to, every other process (API server, "
                "EngineCore, sidecar, load client) kept on the other core: the shape of a GPU server, where the "
                "model step runs on the accelerator and the host's processes share the CPUs",
        "hidden_size": 768, "num_layers": 6, "pin_host": True, "arms": ("off", "on"), "interleave": True,
    },
    "host-bound": {
        "what": "the tiny random LLaMA of the e2e test (hidden size 128, 2 layers), whose steps are almost all "
                "Python: every process (the server's, the sidecar, the load client) shares both cores, so whatever "
                "CPU the plugin and its sidecar use is taken from the engine",
        "hidden_size": None, "num_layers": 2, "pin_host": False, "arms": ARMS,
    },
}


_ALL_CPUS = os.sched_getaffinity(0)  # this process's cores at start (the load client is pinned per server)
_T95 = dict(enumerate([12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
                        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
                        2.052, 2.048, 2.045, 2.042], start=1))


def _t95(dof: int) -> float:
    """Two-sided 95% Student t quantile (exact to 30 degrees of freedom; beyond, the next lower row
    of the usual table's value: slightly wide, never narrow)."""
    if dof in _T95:
        return _T95[dof]
    return 2.042 if dof <= 60 else 2.000 if dof <= 120 else 1.980


def _mean_ci95(values: list[float]) -> list[float]:
    """[mean, lower, upper]: the mean with its two-sided 95% Student t-interval (at least two values)."""
    m = statistics.fmean(values)
    half = _t95(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return [m, m - half, m + half]


def _order_adjusted(ratios: list[float], off_first: list[bool]) -> dict | None:
    """The per-pass ratios with the start order as a known factor of the design (the arms' order is
    reversed from one pass to the next): ``log r = mu + delta * s + e``, ``s`` = +1 in the passes where the
    switch-off server came first, -1 otherwise. ``exp(mu)`` is the ratio with the order's effect
    removed, with its 95% t-interval (residual variance pooled over both orders, n - 2 degrees of
    freedom); ``order_factor`` = ``exp(delta)``, what coming second did to the switch-on server's
    ratio. None unless each order has at least two passes."""
    a = [math.log(r) for r, f in zip(ratios, off_first) if f]
    b = [math.log(r) for r, f in zip(ratios, off_first) if not f]
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    dof = len(a) + len(b) - 2
    s2 = (sum((x - ma) ** 2 for x in a) + sum((x - mb) ** 2 for x in b)) / dof
    mu, half = (ma + mb) / 2, _t95(dof) * math.sqrt(s2 / 4 * (1 / len(a) + 1 / len(b)))
    return {"ratio": math.exp(mu), "ci95": [math.exp(mu - half), math.exp(mu + half)],
            "order_factor": math.exp((ma - mb) / 2), "passes": len(a) + len(b), "dof": dof}


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` to ``cpus`` (threads it starts later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass


def _pin_host(server_pid: int) -> set[int] | None:
    """Keep the server's processes other than its model worker (with an auto sidecar) and this process
    (the load client) off the worker's cores; returns the cores they now share, or None when that is
    impossible (no worker found, or it may run on every core)."""
    import psutil

    procs = [psutil.Process(server_pid), *psutil.Process(server_pid).children(recursive=True)]
    worker = set()
    for p in procs:
        if "Worker" in p.name():
            worker |= os.sched_getaffinity(p.pid)
    host = set(os.sched_getaffinity(0)) - worker
    if not worker or not host:
        return None
    for p in procs:
        if "Worker" not in p.name():
            _pin(p.pid, host)
    _pin(os.getpid(), host)
    return host


def _counter(metrics_port: int, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")
               or line.startswith(name + "{"))


class _ArmServer:
    """One server of an arm: started, warmed and pinned by :meth:`start`, loaded by :meth:`load_round`,
    stopped by :meth:`finish`, which returns its block (rounds and the sidecar's figures)."""

    def __init__(self, regime: str, arm: str, model: Path, python: Path, workdir: Path, pin_host: bool, separate,
                 n_requests: int, concurrency: int, max_tokens: int, max_num_seqs: int, settle_s: float):
        from llmco2_e2e_harness import VllmServer, free_port

        self.regime, self.arm, self.workdir, self.pin_host, self.separate = regime, arm, workdir, pin_host, separate
        self.n_requests, self.concurrency, self.max_tokens, self.settle_s = n_requests, concurrency, max_tokens, settle_s
        self.max_num_seqs = max_num_seqs
        workdir.mkdir(parents=True, exist_ok=True)
        self.metrics_port = free_port()
        env = {"LLMCO2_GPU": "A100-SXM4-80GB"}
        if arm in ("on", "nowait"):
            # the switch as users set it: the plugin starts `llmco2 serve` (its defaults: journal fsync every
            # second, no step log) in the server's session; the log and metrics port are the benchmark's
            env.update(LLMCO2_SIDECAR="auto", LLMCO2_METRICS_PORT=str(self.metrics_port),
                       LLMCO2_LOG=str(workdir / "carbon.jsonl"))
            if arm == "nowait":
                env["LLMCO2_RESPONSE_WAIT_S"] = "0"
        elif arm == "unreachable":
            env["LLMCO2_SIDECAR"] = f"unix:{workdir}/no-sidecar.sock"
        elif arm == "separate":
            env["LLMCO2_SIDECAR"] = separate.address
            self.metrics_port = separate.metrics_port
        elif arm == "off":
            env = {}
        self.server = VllmServer(python, model, workdir, max_num_batched_tokens=64, env=env)
        self.server.args += ["--max-num-seqs", str(max_num_seqs)]
        self.spid: int | None = None  # the arm's sidecar
        self.host: set[int] | None = None
        self.rounds: list[dict] = []
        self.hist: dict = {}
        self.wall_sum = 0.0

    def start(self) -> "_ArmServer":
        # the server's processes inherit this process's cores: all of them (a pinned load client's set
        # would confine vLLM's worker to the host cores)
        _pin(os.getpid(), _ALL_CPUS)
        t0 = time.monotonic()
        self.server.start()
        self.server.wait_ready()
        self.start_s = time.monotonic() - t0
        if self.arm in ("on", "nowait"):
            self.spid = _auto_sidecar_pid(self.server.proc.pid)
        elif self.arm == "separate":
            self.spid = self.separate.proc.pid
        if self.pin_host:
            self.host = _pin_host(self.server.proc.pid)
        self.records0 = len(self.separate.records("request")) if self.arm == "separate" else 0
        self.warm = _load(self.server.port, 2 * self.max_num_seqs, self.concurrency, self.max_tokens)
        self.steps0 = _counter(self.metrics_port, "llmco2_ingest_steps_total") if self.spid else None
        return self

    @property
    def pids(self) -> list[int]:
        return [self.server.proc.pid] + ([self.spid] if self.spid else [])

    def load_round(self, quiet: list[int]) -> dict:
        """One load, once ``quiet`` (servers and sidecars) use under 0.1 core, plus the settle time."""
        from llmco2_e2e_harness import cpu_seconds

        waited = _wait_quiet(quiet)
        time.sleep(self.settle_s)
        spid = self.spid
        s0 = cpu_seconds(spid) if spid else 0.0
        h0 = _histograms(self.metrics_port) if spid else None
        sched0 = _schedstat(spid) if spid else None
        res = _load(self.server.port, self.n_requests, self.concurrency, self.max_tokens)
        res["quiet_wait_s"] = waited
        self.wall_sum += res["wall_s"]
        if spid:
            run1, wait1 = _schedstat(spid)
            res["sidecar_sched"] = {"main_cpu_s": run1 - sched0[0], "main_runq_s": wait1 - sched0[1]}
            _wait_quiet([spid])  # the records of the last finishes land (responses not held)
            _add_delta(self.hist, h0, _histograms(self.metrics_port))
            res["sidecar_cpu_s"] = cpu_seconds(spid) - s0
        self.rounds.append(res)
        return res

    def stop(self) -> None:
        self.server.stop()  # stops an auto sidecar with its server (SIGTERM: it flushes its log)

    def finish(self) -> dict:
        steps = (_counter(self.metrics_port, "llmco2_ingest_steps_total") - self.steps0) if self.spid else None
        self.stop()
        records = (len(self.separate.records("request")) - self.records0 if self.arm == "separate" else
                   _count_records(self.workdir / "carbon.jsonl") if self.arm in ("on", "nowait") else None)
        return {"regime": self.regime, "arm": self.arm, "rounds": self.rounds, "start_s": self.start_s,
                "host_cpus": sorted(self.host) if self.host else None, "hist": self.hist, "steps": steps,
                "load_wall_s": self.wall_sum, "carbon_log_records": records,
                "responses_ok": self.warm["responses"] + sum(r["responses"] for r in self.rounds)}


def _pass(regime: str, arms: tuple, interleave: bool, rounds: int, make) -> list[dict]:
    """One pass over ``arms``: each server alone, started, loaded ``rounds`` times and stopped, in
    turn; or (``interleave``) all started, then loaded in turns, the order alternating from round to
    round (no drift of the machine between the arms' rounds), then stopped."""
    blocks = []
    if not interleave:
        for arm in arms:
            srv = make(arm)
            try:
                srv.start()
                for _ in range(rounds):
                    srv.load_round(srv.pids)
                blocks.append(srv.finish())
            finally:
                srv.stop()
                _pin(os.getpid(), _ALL_CPUS)
        return blocks
    servers = [make(arm) for arm in arms]
    try:
        for srv in servers:  # one at a time: starting together starves them on 2 cores
            srv.start()
        quiet = [p for srv in servers for p in srv.pids]
        for r in range(rounds):
            for srv in (servers if r % 2 == 0 else servers[::-1]):
                srv.load_round(quiet)
        blocks = [srv.finish() for srv in servers]
    finally:
        for srv in servers:
            srv.stop()
        _pin(os.getpid(), _ALL_CPUS)
    return blocks


def _arm_summary(name: str, blocks: list[dict]) -> dict:
    rows = [r for b in blocks for r in b["rounds"]]
    tokens, wall = sum(x["output_tokens"] for x in rows), sum(x["wall_s"] for x in rows)
    status: dict[str, int] = {}
    for x in rows:
        for k, v in x["carbon_status"].items():
            status[k] = status.get(k, 0) + v
    rates = [x["tokens_per_s"] for x in rows]
    arm = {"tokens_per_s_median": statistics.median(rates), "tokens_per_s_quartiles": list(_quartiles(rates)),
           "tokens_per_s_pooled": tokens / wall,
           "block_medians": [statistics.median(x["tokens_per_s"] for x in b["rounds"]) for b in blocks],
           "latency_p50_ms_median_of_rounds": statistics.median(x["latency_p50_ms"] for x in rows),
           "carbon_wait_ms": _wait_summary([w for x in rows for w in x.get("waits_ms", [])]),
           "carbon_status": status, "errors": sum(x["errors"] for x in rows),
           "responses_ok": sum(b["responses_ok"] for b in blocks),
           "server_start_s": [round(b["start_s"], 1) for b in blocks]}
    if name in SIDECAR_ARMS and all("sidecar_cpu_s" in x for x in rows):
        hist: dict = {}
        for b in blocks:
            for key, h in b["hist"].items():
                for bound, count in h.items():
                    hist.setdefault(key, {})[bound] = hist.get(key, {}).get(bound, 0.0) + count
        steps = sum(b["steps"] or 0 for b in blocks)
        load_wall = sum(b["load_wall_s"] for b in blocks)
        arm.update(
            sidecar_cpu_s_per_1000_tokens=sum(x["sidecar_cpu_s"] for x in rows) / tokens * 1000,
            # steps the engine sent over the loads (the warm-up's few included), per second of load
            engine_steps_per_s=steps / load_wall if load_wall else None,
            finish_lag=_quantiles_of(hist.get("finish_lag", {})),
            record_latency=_quantiles_of(hist.get("record", {})),
            loop_lag={**_quantiles_of(hist.get("loop_lag", {})), **_late_share(hist.get("loop_lag", {}))},
            # the sidecar's event-loop thread, per second of load: running / runnable but waiting for a CPU
            loop_thread_cpu_per_wall=sum(x["sidecar_sched"]["main_cpu_s"] for x in rows) / wall,
            loop_thread_runq_per_wall=sum(x["sidecar_sched"]["main_runq_s"] for x in rows) / wall,
            carbon_log_records=sum(b["carbon_log_records"] or 0 for b in blocks))
    return arm


def throughput(regimes: list[str], passes: dict, rounds_per: dict, concurrency: int, max_tokens: int, max_num_seqs: int,
               workdir: Path, settle_s: float = 0.5, requests: dict | None = None) -> dict:
    """Per regime: its arms' servers in ``passes[regime]`` passes (the arms' order reversed from one pass
    to the next; see :func:`_pass` for one at a time or interleaved), each server loaded
    ``rounds_per[regime]`` times; a load keeps ``concurrency`` (more than ``max_num_seqs``) requests in
    flight, so the engine always has a full batch and a queue."""
    from llmco2_e2e_harness import Sidecar, build_tiny_model, free_port

    python = Path(sys.executable)
    out: dict = {"concurrency": concurrency, "max_tokens": max_tokens, "max_num_seqs": max_num_seqs,
                 "settle_s": settle_s, "regimes": {}}
    for regime in regimes:
        spec = REGIMES[regime]
        n_requests = (requests or {}).get(regime, 96)
        model = build_tiny_model(python, workdir / f"model-{regime}",
                                 *([spec["hidden_size"], spec["num_layers"]] if spec["hidden_size"] else []))
        separate = None
        if "separate" in spec["arms"]:
            # a sidecar started on its own, in its own session (as a separately launched service would be)
            port = free_port()
            separate = Sidecar(workdir / regime / "separate-sidecar", python=str(python), log_steps=False,
                               extra=["--fsync", "interval", "--metrics-port", str(port)], own_session=True).start()
            separate.metrics_port = port
            separate.wait_ready()
        blocks: list[dict] = []
        n_passes = passes[regime]
        rounds = rounds_per[regime]
        interleave = spec.get("interleave", False)

        def make(arm: str, p: int) -> _ArmServer:
            return _ArmServer(regime, arm, model, python, workdir / regime / f"{arm}-{p}", spec["pin_host"], separate,
                              n_requests, concurrency, max_tokens, max_num_seqs, settle_s)

        try:
            for p in range(n_passes):
                order = spec["arms"] if p % 2 == 0 else tuple(reversed(spec["arms"]))
                for b in _pass(regime, order, interleave, rounds, lambda arm, p=p: make(arm, p)):
                    blocks.append(b)
                    rates = [r["tokens_per_s"] for r in b["rounds"]]
                    print(f"{regime} pass {p + 1} {b['arm']}: {statistics.median(rates):.1f} tok/s median of "
                          f"{len(rates)} rounds ({min(rates):.1f}-{max(rates):.1f}); server up in "
                          f"{b['start_s']:.0f} s", flush=True)
        finally:
            if separate is not None:
                separate.stop()
        arms = {name: _arm_summary(name, [b for b in blocks if b["arm"] == name]) for name in spec["arms"]}
        off = arms["off"]
        for name in spec["arms"][1:]:
            a = arms[name]
            a["ratio_of_medians"] = a["tokens_per_s_median"] / off["tokens_per_s_median"]
            a["ratio_pooled"] = a["tokens_per_s_pooled"] / off["tokens_per_s_pooled"]
            a["ratio_per_pass"] = r = [x / y for x, y in zip(a["block_medians"], off["block_medians"])]
            if len(r) > 1:  # passes are independent server starts
                a["ratio_per_pass_mean_ci95"] = _mean_ci95(r)
            # in even passes the switch-off server came first (spec["arms"] starts with it)
            adj = _order_adjusted(r, [p % 2 == 0 for p in range(len(r))])
            if adj:
                a["ratio_order_adjusted"] = adj
        if interleave:  # round r of an arm ran right beside round r of the switch-off server
            offs = [b for b in blocks if b["arm"] == "off"]
            for name in spec["arms"][1:]:
                pairs = [y["tokens_per_s"] / x["tokens_per_s"]
                         for bo, bn in zip(offs, [b for b in blocks if b["arm"] == name])
                         for x, y in zip(bo["rounds"], bn["rounds"])]
                if len(pairs) > 1:
                    m, lo, hi = _mean_ci95(pairs)
                    arms[name]["ratio_per_round_pair"] = {"n": len(pairs), "mean": m, "ci95": [lo, hi]}
        for b in blocks:  # per round keep the summary, not every response's figure
            for r in b["rounds"]:
                r["waits_ms"] = _wait_summary(r.get("waits_ms", []))
            b.pop("hist")
        out["regimes"][regime] = {"what": spec["what"], "requests_per_round": n_requests, "passes": n_passes,
                                  "rounds_per_block": rounds, "interleaved": interleave, "arms": arms,
                                  "blocks": blocks, "host_cpus": blocks[0]["host_cpus"]}
    return out


def reading_of(results: dict) -> str:
    """The plain-words summary of a run (kept beside the tables)."""
    cost = results["hook_cost"]
    worst = max(r["engine-like"]["mean_us"] for r in cost)
    worst_p50 = max(r["engine-like"]["p50_us"] for r in cost)
    hot_p50 = max(r["hot"]["p50_us"] for r in cost)
    text = (f"Hook cost per step, engine-like pacing: at most {worst:.1f} us mean and {worst_p50:.1f} us median over "
            f"8 to 256 running requests ({'within' if worst <= 20 else 'above'} the 20 us target for the mean); back "
            f"to back (hot caches) the median is at most {hot_p50:.1f} us. It does not grow with the batch: the "
            "per-request columns are read on the emitter's thread. The means and tails include the moments when "
            "that thread holds the GIL as the engine thread comes back (back to back, the emitter encodes steps "
            "without pause, which is where the hot means and tails come from), and the 2-core machine's other load.")
    earlier = results.get("hook_cost_reruns") or []
    if earlier:
        rows = [r for run in earlier for r in run["hook_cost"]]
        over = sum(r["engine-like"]["mean_us"] > 20 for r in rows)
        text += (f" The {len(earlier)} earlier rerun(s) of this part kept in the results: engine-like means "
                 f"{min(r['engine-like']['mean_us'] for r in rows):.1f}-{max(r['engine-like']['mean_us'] for r in rows):.1f} us, "
                 f"{over} of {len(rows)} rows above 20 us.")
    tp = results.get("throughput")
    if not tp:
        return text
    sb = tp["regimes"].get("step-bound")
    if sb:
        on, off = sb["arms"]["on"], sb["arms"]["off"]
        per_pass = on["ratio_per_pass"]
        ci = on.get("ratio_per_pass_mean_ci95")
        pp = on.get("ratio_per_round_pair")
        adj = on.get("ratio_order_adjusted")
        basis = adj["ci95"] if adj else (ci[1:] if ci else None)  # the order-adjusted interval when there is one
        if basis is None:
            met = "not resolved (one pass)"
        elif basis[0] >= 0.99:
            met = "met (the whole 95% interval at or above 0.99)"
        elif basis[1] < 0.99:
            met = "not met (the whole 95% interval below 0.99)"
        else:
            met = f"not resolved: the 95% interval reaches {basis[0]:.3f}, below 0.99"
        text += (f" **Step-bound server** (the shape of a GPU server: the model step, about {_step_ms(on)} here, runs "
                 "on a core of its own; the host's processes, sidecar included, share the other): throughput with the "
                 f"switch on (`LLMCO2_SIDECAR=auto`, responses held for their carbon) {on['ratio_of_medians']:.3f} of "
                 f"the switch off (median of {len(per_pass) * sb['rounds_per_block']} rounds each; per pass "
                 f"{', '.join(f'{x:.3f}' for x in per_pass)}"
                 + (f", their mean {ci[0]:.3f}, 95% interval {ci[1]:.3f}-{ci[2]:.3f}" if ci else "")
                 + (f"; with the start order as a factor of the design (whichever server came second ran "
                    f"{100 * (adj['order_factor'] - 1):+.1f}% against the other), {adj['ratio']:.3f}, 95% interval "
                    f"{adj['ci95'][0]:.3f}-{adj['ci95'][1]:.3f} over {adj['passes']} passes" if adj else "")
                 + (f"; rounds run side by side: mean ratio {pp['mean']:.3f}, 95% interval {pp['ci95'][0]:.3f}-"
                    f"{pp['ci95'][1]:.3f} over {pp['n']} pairs, which counts every round as independent and so "
                    "ignores what a server start shares among its rounds" if pp else "")
                 + f"; pooled {on['ratio_pooled']:.3f}): target >= 0.99 {met}. "
                 f"Responses waited for their carbon {_ms(on, 'p50')} at the median ({_ms(on, 'p90')} at p90) in "
                 f"requests of {off['latency_p50_ms_median_of_rounds']:.0f} ms (median latency "
                 f"{on['latency_p50_ms_median_of_rounds']:.0f} ms on); the sidecar used "
                 f"{on['sidecar_cpu_s_per_1000_tokens']:.2f} CPU s per 1000 output tokens.")
    hb = tp["regimes"].get("host-bound")
    if hb:
        a = hb["arms"]
        on, sep, nw, un = a["on"], a["separate"], a["nowait"], a["unreachable"]
        text += (f" **Host-bound server** (the tiny model: steps of about {_step_ms(on)}, almost all Python, and every "
                 "process on the same two cores): with the switch on "
                 f"{on['ratio_of_medians']:.3f} (per pass {', '.join(f'{x:.3f}' for x in on['ratio_per_pass'])}); not "
                 f"held {nw['ratio_of_medians']:.3f}; switch on with no sidecar listening (hook and middleware only) "
                 f"{un['ratio_of_medians']:.3f}; a sidecar in a session of its own {sep['ratio_of_medians']:.3f}. "
                 f"Here the sidecar's CPU ({on['sidecar_cpu_s_per_1000_tokens']:.2f} CPU s per 1000 output tokens, "
                 f"about {_per_step_us(on)} per engine step) is taken from the engine's own processes: what the "
                 "switch costs on a host whose CPUs the engine saturates; a server that reaches no sidecar (the hook "
                 "and the middleware alone) shows no loss this box resolves. Give the sidecar CPU the engine does "
                 "not need (a GPU server has it: its step waits on the accelerator).")
        text += (f" A sidecar in a session of its own waited, runnable, for a CPU "
                 f"{100 * sep['loop_thread_runq_per_wall']:.0f}% of the load's wall time (auto-started: "
                 f"{100 * on['loop_thread_runq_per_wall']:.0f}%) and held responses {_ms(sep, 'p50')} at the median "
                 f"(auto: {_ms(on, 'p50')}): this kernel groups processes by session for CPU fairness (autogroup, "
                 "`/proc/sys/kernel/sched_autogroup_enabled`), so a sidecar alone in its session competes as one "
                 "group against the whole server. Run it with `LLMCO2_SIDECAR=auto`, or in the engine's session or "
                 "cgroup, or with a CPU share of its own (a container's CPU request, a systemd `CPUWeight`).")
    return text


def _step_ms(arm: dict) -> str:
    r = arm.get("engine_steps_per_s")
    return f"{1000 / r:.1f} ms" if r else "n/a"


def _per_step_us(arm: dict) -> str:
    r = arm.get("engine_steps_per_s")
    if not r:
        return "n/a"
    return f"{arm['sidecar_cpu_s_per_1000_tokens'] / 1000 * arm['tokens_per_s_pooled'] / r * 1e6:.0f} us"


def _ms(arm: dict, q: str) -> str:
    w = arm.get("carbon_wait_ms")
    return f"{w[q]:.1f} ms" if w else "n/a"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _virtual() -> str:
    """", a virtual machine (...)" when the kernel says so: its vCPUs are scheduled by a host we cannot see."""
    try:
        cmdline = Path("/proc/cmdline").read_text()
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return ""
    if "firecracker" in cmdline:
        return " (a Firecracker microVM: /proc/cmdline)"
    return " (a virtual machine: the CPU's hypervisor flag)" if " hypervisor" in flags else ""


def _autogroup() -> str:
    try:
        return "on" if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1" else "off"
    except OSError:
        return "n/a"


def _throughput_lines(tp: dict) -> list[str]:
    lines = [
        "",
        "## Real server throughput with / without `LLMCO2_SIDECAR` (target: >= 0.99)",
        "",
        "vLLM OpenAI servers (`--max-num-batched-tokens 64 --max-num-seqs "
        f"{tp['max_num_seqs']}`) under a saturating closed-loop load: {tp['concurrency']} requests "
        f"in flight (more than the {tp['max_num_seqs']} the engine runs at once, so its batch is always full and "
        f"requests queue), mixed prompt lengths, {tp['max_tokens']} output tokens each (`ignore_eos`). Throughput is "
        "then the server's capacity; a response held for its carbon adds to its latency (shown) but does not "
        "empty the engine's batch. Each arm's server runs several times (passes; the arms' order reversed "
        "from one pass to the next), each time started, warmed and loaded a few times (rounds): one server "
        "alive at a time, or (*interleaved*) the arms' servers all started and loaded in turns, the order "
        "alternating from round to round, so that round r of each arm runs beside round r of the others. "
        "Every load starts once the servers and sidecars use under 0.1 core, plus "
        f"{tp['settle_s']:g} s. Ratio = an arm's median tokens/s over all its rounds / the switch-off server's.",
        "",
        "Arms: *off*: `LLMCO2_SIDECAR` unset. *on*: `LLMCO2_SIDECAR=auto`, the switch as users set it: the plugin "
        "starts its own `llmco2 serve` (defaults: journal fsync every second) and every response waits for its "
        "carbon. *not held*: the same with `LLMCO2_RESPONSE_WAIT_S=0` (every event sent and recorded, no response "
        "waits). *no sidecar*: the switch set to a socket nobody listens on (hook and middleware run, the emitter "
        "buffers and sends nothing). *own session*: the switch set to a sidecar started separately, in a session of "
        "its own.",
    ]

    def cell(d: dict | None, keys=("p50", "p90", "p99")) -> str:
        return " / ".join((d or {}).get(k) or "n/a" for k in keys) if d else "n/a"

    for regime, rg in tp["regimes"].items():
        a = rg["arms"]
        names = list(a)
        lines += ["", f"### {regime}", "", f"{rg['what'][0].upper()}{rg['what'][1:]}"
                  + (f" (host processes on cores {rg['host_cpus']})" if rg.get("host_cpus") else "")
                  + f"; {rg['passes']} passes of {rg['rounds_per_block']} rounds"
                  + (", interleaved" if rg.get("interleaved") else ", one server at a time")
                  + f"; {rg['requests_per_round']} requests per round.", "",
                  "| pass | server | tokens/s, median of rounds (range) | server start |", "|---:|---|---:|---:|"]
        seen: dict[str, int] = {}
        for b in rg["blocks"]:
            seen[b["arm"]] = seen.get(b["arm"], 0) + 1
            rates = [r["tokens_per_s"] for r in b["rounds"]]
            lines.append(f"| {seen[b['arm']]} | {ARM_TITLES[b['arm']]} | {statistics.median(rates):.1f} "
                         f"({min(rates):.1f}-{max(rates):.1f}) | {b['start_s']:.0f} s |")

        def row(title: str, fn) -> str:
            return f"| {title} | " + " | ".join(fn(n) for n in names) + " |"

        def sc(n: str, fn) -> str:
            return fn(a[n]) if "sidecar_cpu_s_per_1000_tokens" in a[n] else ""

        lines += [
            "",
            "| | " + " | ".join(ARM_TITLES[n] for n in names) + " |",
            "|---|" + "---:|" * len(names),
            row("tokens/s, median of rounds (quartiles)", lambda n: "{:.1f} ({:.1f}-{:.1f})".format(
                a[n]["tokens_per_s_median"], *a[n]["tokens_per_s_quartiles"])),
            row("throughput / off (ratio of medians)", lambda n: "1" if n == "off" else
                (f"**{a[n]['ratio_of_medians']:.3f}**" if n == "on" else f"{a[n]['ratio_of_medians']:.3f}")),
            row("per pass (ratio of that pass's medians)", lambda n: "" if n == "off" else
                ", ".join(f"{x:.3f}" for x in a[n]["ratio_per_pass"])),
            row("mean of the per-pass ratios, 95% interval", lambda n: "" if "ratio_per_pass_mean_ci95" not in a[n]
                else "{:.3f} ({:.3f}-{:.3f})".format(*a[n]["ratio_per_pass_mean_ci95"])),
            *([row("order-adjusted (start order as a factor), 95% interval; factor of coming second",
                   lambda n: "" if "ratio_order_adjusted" not in a[n] else "{:.3f} ({:.3f}-{:.3f}); {:.3f}".format(
                       a[n]["ratio_order_adjusted"]["ratio"], *a[n]["ratio_order_adjusted"]["ci95"],
                       a[n]["ratio_order_adjusted"]["order_factor"]))]
              if any("ratio_order_adjusted" in a[n] for n in names) else []),
            row("interleaved: mean of the ratios of rounds run side by side, 95% interval",
                lambda n: "" if "ratio_per_round_pair" not in a[n] else "{:.3f} ({:.3f}-{:.3f}; {} pairs)".format(
                    a[n]["ratio_per_round_pair"]["mean"], *a[n]["ratio_per_round_pair"]["ci95"],
                    a[n]["ratio_per_round_pair"]["n"])),
            row("pooled (total tokens / total seconds) / off", lambda n: "1" if n == "off" else f"{a[n]['ratio_pooled']:.3f}"),
            row("request latency p50 (median of rounds)", lambda n: f"{a[n]['latency_p50_ms_median_of_rounds']:.0f} ms"),
            row("held for carbon (`x-llmco2-wait-ms`), p50 / p90 / p99", lambda n: "" if not a[n]["carbon_wait_ms"] else
                "{p50:.1f} / {p90:.1f} / {p99:.1f} ms".format(**a[n]["carbon_wait_ms"])),
            row("responses by `x-llmco2-carbon-status`", lambda n: ", ".join(f"{k} {v}" for k, v in sorted(a[n]["carbon_status"].items()))),
            row("engine steps per second of load (mean step)", lambda n: sc(n, lambda x: (
                f"{x['engine_steps_per_s']:.0f} ({_step_ms(x)})" if x.get("engine_steps_per_s") else "n/a"))),
            row("finish in the engine -> its event at the sidecar (`llmco2_finish_lag_seconds`), p50 / p90 / p99",
                lambda n: sc(n, lambda x: cell(x["finish_lag"]))),
            row("arrival at the sidecar -> request record (`llmco2_record_latency_seconds`), p50 / p90 / p99",
                lambda n: sc(n, lambda x: cell(x["record_latency"]))),
            row("sidecar event loop late (`llmco2_event_loop_lag_seconds`), p50 / p90 / p99",
                lambda n: sc(n, lambda x: cell(x["loop_lag"]))),
            row("sidecar event loop more than 50 ms late, share of samples",
                lambda n: sc(n, lambda x: _pct(x["loop_lag"].get("share_over_50ms")))),
            row("sidecar event-loop thread running, share of wall time",
                lambda n: sc(n, lambda x: f"{100 * x['loop_thread_cpu_per_wall']:.0f}%")),
            row("sidecar event-loop thread runnable, waiting for a CPU",
                lambda n: sc(n, lambda x: f"{100 * x['loop_thread_runq_per_wall']:.0f}%")),
            row("sidecar CPU s per 1000 output tokens (per engine step)", lambda n: sc(n, lambda x: (
                f"{x['sidecar_cpu_s_per_1000_tokens']:.3f} ({_per_step_us(x)})"))),
            row("requests in the sidecar's carbon log / responses", lambda n: sc(n, lambda x: (
                f"{x['carbon_log_records']} / {a[n]['responses_ok']}"))),
            row("HTTP errors", lambda n: str(a[n]["errors"])),
        ]
    lines += [
        "",
        "Responses counts every response with status 200, each server's warm-up load included. Latency histograms are Prometheus bucket bounds "
        "(\"<= 20 ms\": between the next lower bound and 20 ms). The event-loop lag is how late the sidecar's loop "
        "woke from a 0.1 s sleep (ten samples a second; the loop ingests every message and answers every lookup); "
        "running / waiting are its event-loop thread's `/proc/PID/task/TID/schedstat` times over the loads. vLLM's "
        "EngineCore and worker poll each other while requests are in flight, so the servers' CPU time follows the "
        "wall time and is not a measure of the plugin's work.",
    ]
    return lines


def write(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hook_overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Hook overhead (benchmarks/hook_overhead.py)",
        "",
        f"Machine: {results['machine']}. vLLM {results['vllm_version']} (CPU build). Run {results['date']}"
        + (f"; the hook-cost part rerun on its own {results['hook_cost_date']} (`--hook-cost-only`), the throughput "
           f"part is the {results['date']} run's." if results.get("hook_cost_date") else "."),
        "",
        "## Hook cost per engine step (target <= 20 us)",
        "",
        "Real vLLM `SchedulerOutput` objects through the patched scheduler methods (wrappers + hook + emitter",
        "enqueue), minus the same calls unpatched; the stand-in `schedule()` builds each step's `SchedulerOutput`",
        "as vLLM's does (in both runs); emitter connected to a real `llmco2 serve`; each step one",
        "request leaves (its finish is handed to the emitter at once, with the steps before it) and one enters",
        "(prefill chunk).",
        "",
        "Pacing: *hot* = steps back to back; *engine-like* = between two steps 8 MiB of memory is",
        "overwritten (vLLM's own work evicting the caches, GIL held) and the thread then sleeps 1 ms (the",
        "model step, GIL released).",
        "",
        "| running requests | pacing | mean us | p50 us | p99 us | steps accepted by the sidecar | dropped |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["hook_cost"]:
        for mode in PACING:
            h = r[mode]
            lines.append(f"| {r['running_requests']} | {mode} | {h['mean_us']:.1f} | {h['p50_us']:.1f} | "
                         f"{h['p99_us']:.1f} | {r['emitter']['steps_accepted']} | {r['emitter']['dropped']} |")
    for run in results.get("hook_cost_reruns") or []:
        lines += ["", f"Earlier rerun of this part, {run['date']} (engine-like): " + "; ".join(
            f"{r['running_requests']} running: mean {r['engine-like']['mean_us']:.1f} us, p50 "
            f"{r['engine-like']['p50_us']:.1f} us, p99 {r['engine-like']['p99_us']:.1f} us" for r in run["hook_cost"]) + "."]
    tp = results.get("throughput")
    if tp:
        lines += _throughput_lines(tp)
    load = results.get("load")
    if load:
        b, a = load["loadavg_1_5_15_before"], load["loadavg_1_5_15_after"]
        lines += ["", f"Machine load: 1/5/15-minute load averages {b[0]:.2f}/{b[1]:.2f}/{b[2]:.2f} before the "
                  f"throughput part, {a[0]:.2f}/{a[1]:.2f}/{a[2]:.2f} after (2 cores; the benchmark's own servers "
                  f"included). Scheduler autogroup: {results.get('autogroup', 'n/a')}."
                  + (f" {load['note']}" if load.get("note") else "")]
    lines += ["", "## Reading", "", results["reading"], ""]
    (RESULTS / "hook_overhead.md").write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--regimes", default="step-bound,host-bound",
                    help="which servers to load, comma-separated: " + "; ".join(
                        f"{k}: {v['what'].split(':')[0]}" for k, v in REGIMES.items()))
    ap.add_argument("--passes-step-bound", type=int, default=6,
                    help="times each arm's step-bound server is started and loaded")
    ap.add_argument("--passes-host-bound", type=int, default=2,
                    help="times each arm's host-bound server is started and loaded")
    ap.add_argument("--rounds-step-bound", type=int, default=6, help="loads per server start, step-bound server")
    ap.add_argument("--rounds-host-bound", type=int, default=3, help="loads per server start, host-bound server")
    ap.add_argument("--settle-s", type=float, default=0.5,
                    help="pause before each load, after the server and its sidecar went quiet")
    ap.add_argument("--note", default="", help="what else ran on the machine (kept in the results)")
    ap.add_argument("--requests-step-bound", type=int, default=48, help="requests per round, step-bound server")
    ap.add_argument("--requests-host-bound", type=int, default=192, help="requests per round, host-bound server")
    ap.add_argument("--concurrency", type=int, default=24, help="requests in flight (more than --max-num-seqs)")
    ap.add_argument("--max-num-seqs", type=int, default=8, help="the servers' --max-num-seqs")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3000, help="steps per batch size in the hook-cost part")
    ap.add_argument("--skip-server", action="store_true", help="only the hook-cost part (no throughput part)")
    ap.add_argument("--hook-cost-only", action="store_true",
                    help="rerun the hook-cost part and keep the committed throughput part (the results then "
                         "name both runs' dates)")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md (and reading) from the .json")
    args = ap.parse_args()
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown:
        ap.error(f"--regimes: unknown {', '.join(unknown)} (choose from {', '.join(REGIMES)})")
    if args.render_only:
        results = json.loads((RESULTS / "hook_overhead.json").read_text())
        results["reading"] = reading_of(results)
        write(results)
        return 0
    try:
        import vllm
    except ImportError:  # re-run with the e2e venv's python
        from llmco2_e2e_harness import ensure_vllm_env

        python = ensure_vllm_env()
        return subprocess.call([str(python), __file__, *sys.argv[1:]])

    from llmco2_e2e_harness import Sidecar

    with tempfile.TemporaryDirectory(prefix="llmco2-bench-") as tmp:
        work = Path(tmp)
        # in a session of its own, as in every committed run of this part: beside the timed thread, a
        # sidecar in the benchmark's session stretched the 8-request row's tail (p99 ~115 us against ~46)
        sidecar = Sidecar(work / "hook-sidecar", python=sys.executable, own_session=True).start()
        try:
            sidecar.wait_ready()
            cost = hook_cost(sidecar.address, n_steps=args.steps)
        finally:
            sidecar.stop()
        if args.hook_cost_only:
            results = json.loads((RESULTS / "hook_overhead.json").read_text())
            if results.get("hook_cost_date"):  # the rerun it replaces stays in the results
                results.setdefault("hook_cost_reruns", []).append(
                    {"date": results["hook_cost_date"], "hook_cost": results["hook_cost"]})
            results["hook_cost"] = cost
            results["hook_cost_date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            results["reading"] = reading_of(results)
            write(results)
            print(results["reading"])
            return 0
        load_before = os.getloadavg()
        tp = None if args.skip_server else throughput(
            regimes, {"step-bound": args.passes_step_bound, "host-bound": args.passes_host_bound},
            {"step-bound": args.rounds_step_bound, "host-bound": args.rounds_host_bound}, args.concurrency, args.max_tokens, args.max_num_seqs, work,
            settle_s=args.settle_s, requests={"step-bound": args.requests_step_bound,
                                              "host-bound": args.requests_host_bound})
        load_after = os.getloadavg()
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs{_virtual()}, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "vllm_version": vllm.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "hook_cost": cost,
        "throughput": tp,
        "autogroup": _autogroup(),
        "load": {"loadavg_1_5_15_before": list(load_before), "loadavg_1_5_15_after": list(load_after),
                 "note": args.note},
    }
    results["reading"] = reading_of(results)
    write(results)
    print(results["reading"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
