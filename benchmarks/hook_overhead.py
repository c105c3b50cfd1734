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
2. **Throughput.** Real vLLM OpenAI servers (CPU build, the tiny random LLaMA of the e2e test,
   ``--max-num-batched-tokens 64``): one with ``LLMCO2_SIDECAR`` unset, one with it set (and a
   real sidecar), one with it set to a socket nobody listens on (hook and middleware run, nothing is
   sent), one with a real sidecar and ``LLMCO2_RESPONSE_WAIT_S=0`` (everything sent and recorded, no
   response held for its carbon). The same closed-loop load (concurrency 8, mixed prompt lengths, 32 output tokens each,
   ``ignore_eos``) runs against them in rotating rounds, each server's load starting once all servers
   and the sidecar are quiet (a vLLM server keeps a core busy for about a second after its load, and
   all workers are pinned to the same core) plus ``--settle-s``; the result is the median over rounds of the ratio of output tokens
   per second, with / without, with its quartiles and range. The switched-on server runs as users
   run it: the sidecar with ``llmco2 serve`` defaults, and every response waits for its carbon
   headers (their ``x-llmco2-carbon-status`` is counted per server); request latencies and the
   sidecar's own arrival-to-record latency (its Prometheus histogram) are reported beside.

Run: ``python benchmarks/hook_overhead.py [--rounds N] [--skip-server]`` (it re-runs itself with the
e2e venv's python, building ``.venv-vllm`` if needed). Writes ``benchmarks/results/hook_overhead.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import json
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
    __slots__ = ("request_id", "num_output_tokens", "status")

    def __init__(self, rid: str):
        self.request_id = rid
        self.num_output_tokens = 17
        self.status = None


def hook_cost(target: str, sizes=(8, 64, 256), n_steps: int = 3000, pace_s: float = 0.001) -> list[dict]:
    from types import SimpleNamespace

    from llmco2_vllm.patch import patch_scheduler
    from llmco2_vllm.settings import Settings

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
                t = pc()
                so = s.schedule()
                s.update_from_output(so)
                s._free_request(_Req(leaving))
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
ARMS = ("off", "on", "unreachable", "nowait")  # the servers of the throughput part
_SCRATCH = bytearray(8 << 20)
_ZEROS = bytes(8 << 20)


def _engine_work(seconds: float) -> None:
    """Stand-in for an engine step between two hook calls: vLLM's own Python work overwrites the
    caches (8 MiB copied, GIL held), then the thread waits for the model step (GIL released, the
    emitter's sender thread runs), ``seconds`` in all."""
    end = time.perf_counter() + seconds
    _SCRATCH[:] = _ZEROS
    left = end - time.perf_counter()
    if left > 0:
        time.sleep(left)


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


def _record_latency(metrics_port: int) -> dict:
    """The sidecar's ``llmco2_record_latency_seconds`` histogram (a step's arrival to its request
    records), as cumulative counts per bucket bound, read from its Prometheus endpoint."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    buckets = {}
    for line in text.splitlines():
        if line.startswith("llmco2_record_latency_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[bound] = float(line.rsplit(" ", 1)[1])
    return buckets


def _bucket_quantile(before: dict, after: dict, q: float) -> str | None:
    """Upper bucket bound holding quantile ``q`` of the observations between two histogram reads."""
    diff = [(float("inf") if b == "+Inf" else float(b), after[b] - before.get(b, 0.0)) for b in after]
    diff.sort()
    total = diff[-1][1] if diff else 0.0
    if total <= 0:
        return None
    for bound, count in diff:
        if count >= q * total:
            return "> 1 s" if bound == float("inf") else f"<= {bound * 1000:g} ms"
    return None


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def throughput(rounds: int, n_requests: int, concurrency: int, max_tokens: int, workdir: Path,
               settle_s: float = 0.5) -> dict:
    from llmco2_e2e_harness import Sidecar, VllmServer, build_tiny_model, cpu_seconds, free_port

    python = Path(sys.executable)
    model = build_tiny_model(python, workdir / "tiny")
    # the sidecar as users run it: `llmco2 serve` defaults (journal fsync every second, no step log;
    # the harness's test-speed `--fsync never` is overridden), plus its Prometheus endpoint
    metrics_port = free_port()
    sidecar = Sidecar(workdir / "sidecar", python=str(python), log_steps=False,
                      extra=["--fsync", "interval", "--metrics-port", str(metrics_port)]).start()
    off = VllmServer(python, model, workdir / "off", max_num_batched_tokens=64)
    on = VllmServer(python, model, workdir / "on", max_num_batched_tokens=64,
                    env={"LLMCO2_SIDECAR": sidecar.address, "LLMCO2_GPU": "A100-SXM4-80GB"})
    # the switch on but no sidecar listening: the hook and middleware run, nothing is sent
    unreachable = VllmServer(python, model, workdir / "unreachable", max_num_batched_tokens=64,
                             env={"LLMCO2_SIDECAR": f"unix:{workdir}/no-sidecar.sock", "LLMCO2_GPU": "A100-SXM4-80GB"})
    # the switch on with a real sidecar, responses not held (LLMCO2_RESPONSE_WAIT_S=0): every event is sent,
    # no response waits for its carbon; it separates the sending path from the response hold
    nowait = VllmServer(python, model, workdir / "nowait", max_num_batched_tokens=64,
                        env={"LLMCO2_SIDECAR": sidecar.address, "LLMCO2_GPU": "A100-SXM4-80GB",
                             "LLMCO2_RESPONSE_WAIT_S": "0"})
    servers = {"off": off, "on": on, "unreachable": unreachable, "nowait": nowait}
    try:
        sidecar.wait_ready()
        for server in servers.values():  # one at a time: starting together starves them on 2 cores
            server.start()
            server.wait_ready()
        for server in servers.values():  # warm
            _load(server.port, 8, concurrency, max_tokens)
        idle = {}
        for name, server in servers.items():
            c0 = cpu_seconds(server.proc.pid)
            time.sleep(3.0)
            idle[name] = (cpu_seconds(server.proc.pid) - c0) / 3.0
        per_round = []
        quiet_waits: list[float] = []
        hist0 = _record_latency(metrics_port)
        for r in range(rounds):
            names = list(ARMS)
            order = [(n, servers[n]) for n in (names[r % len(names):] + names[:r % len(names)])]
            row = {}
            for name, server in order:
                # after its load a vLLM server keeps a core busy for about a second (its worker, pinned to
                # the same core as every other server's worker, spins before it sleeps): wait until every
                # server and the sidecar are quiet, so that no arm runs beside another's tail
                quiet_waits.append(_wait_quiet([s.proc.pid for s in servers.values()] + [sidecar.proc.pid]))
                time.sleep(settle_s)
                c0, s0 = cpu_seconds(server.proc.pid), cpu_seconds(sidecar.proc.pid)
                row[name] = _load(server.port, n_requests, concurrency, max_tokens)
                row[name]["server_cpu_s"] = cpu_seconds(server.proc.pid) - c0
                row[name]["sidecar_cpu_s"] = cpu_seconds(sidecar.proc.pid) - s0 if name in ("on", "nowait") else 0.0
            row["ratio"] = row["on"]["tokens_per_s"] / row["off"]["tokens_per_s"]
            row["ratio_unreachable"] = row["unreachable"]["tokens_per_s"] / row["off"]["tokens_per_s"]
            row["ratio_nowait"] = row["nowait"]["tokens_per_s"] / row["off"]["tokens_per_s"]
            per_round.append(row)
            print(f"round {r + 1}: off {row['off']['tokens_per_s']:.1f} tok/s, on {row['on']['tokens_per_s']:.1f} tok/s "
                  f"(ratio {row['ratio']:.4f}; sidecar {row['on']['sidecar_cpu_s']:.2f} cpu s; carbon "
                  f"{row['on']['carbon_status']}), switch on without a sidecar {row['unreachable']['tokens_per_s']:.1f} "
                  f"tok/s (ratio {row['ratio_unreachable']:.4f}); latency p50 off/on/no sidecar "
                  f"{row['off']['latency_p50_ms']:.0f}/{row['on']['latency_p50_ms']:.0f}/"
                  f"{row['unreachable']['latency_p50_ms']:.0f} ms; responses not held {row['nowait']['tokens_per_s']:.1f} "
                  f"tok/s (ratio {row['ratio_nowait']:.4f})", flush=True)
        hist1 = _record_latency(metrics_port)
        logged = len(sidecar.records("request"))
    finally:
        for server in servers.values():
            server.stop()
        sidecar.stop()
    pooled_waits = {n: _wait_summary([w for r in per_round for w in r[n].get("waits_ms", [])])
                    for n in ("on", "unreachable", "nowait")}
    for r in per_round:  # per round keep the summary, not every response's figure
        for n in ARMS:
            r[n]["waits_ms"] = _wait_summary(r[n].get("waits_ms", []))
    tok_off = sum(r["off"]["output_tokens"] for r in per_round)
    tok_on = sum(r["on"]["output_tokens"] for r in per_round)
    s_off = sum(r["off"]["wall_s"] for r in per_round)
    s_on = sum(r["on"]["wall_s"] for r in per_round)
    ratios = [r["ratio"] for r in per_round]
    tok_un = sum(r["unreachable"]["output_tokens"] for r in per_round)
    s_un = sum(r["unreachable"]["wall_s"] for r in per_round)
    cpu_off = sum(r["off"]["server_cpu_s"] for r in per_round) / tok_off * 1000
    cpu_on = sum(r["on"]["server_cpu_s"] for r in per_round) / tok_on * 1000
    cpu_sidecar = sum(r["on"]["sidecar_cpu_s"] for r in per_round) / tok_on * 1000
    ratios_un = [r["ratio_unreachable"] for r in per_round]
    ratios_nw = [r["ratio_nowait"] for r in per_round]
    tok_nw = sum(r["nowait"]["output_tokens"] for r in per_round)
    s_nw = sum(r["nowait"]["wall_s"] for r in per_round)
    status = {n: {} for n in ARMS}
    for r in per_round:
        for n in status:
            for k, v in r[n]["carbon_status"].items():
                status[n][k] = status[n].get(k, 0) + v
    return {
        "idle_server_cpu_s_per_s": idle,
        "server_cpu_s_per_1000_tokens": {"off": cpu_off, "on": cpu_on, "on_sidecar": cpu_sidecar},
        "server_cpu_ratio_on_over_off": cpu_on / cpu_off,
        "rounds": per_round,
        "tokens_per_s_off": tok_off / s_off,
        "tokens_per_s_on": tok_on / s_on,
        "ratio_on_over_off": (tok_on / s_on) / (tok_off / s_off),
        "tokens_per_s_unreachable": tok_un / s_un,
        "ratio_unreachable_over_off": (tok_un / s_un) / (tok_off / s_off),
        "ratio_median_of_rounds": statistics.median(ratios),
        "ratio_min_max": [min(ratios), max(ratios)],
        "ratio_quartiles": list(_quartiles(ratios)),
        "ratio_unreachable_median_of_rounds": statistics.median(ratios_un),
        "ratio_unreachable_quartiles": list(_quartiles(ratios_un)),
        "ratio_unreachable_min_max": [min(ratios_un), max(ratios_un)],
        "tokens_per_s_nowait": tok_nw / s_nw,
        "ratio_nowait_over_off": (tok_nw / s_nw) / (tok_off / s_off),
        "ratio_nowait_median_of_rounds": statistics.median(ratios_nw),
        "ratio_nowait_quartiles": list(_quartiles(ratios_nw)),
        "ratio_nowait_min_max": [min(ratios_nw), max(ratios_nw)],
        "latency_p50_ms_median_of_rounds": {n: statistics.median(r[n]["latency_p50_ms"] for r in per_round)
                                            for n in ARMS},
        "carbon_wait_ms": pooled_waits,
        "carbon_status": status,
        "sidecar_record_latency": {"p50": _bucket_quantile(hist0, hist1, 0.5),
                                   "p90": _bucket_quantile(hist0, hist1, 0.9),
                                   "p99": _bucket_quantile(hist0, hist1, 0.99)},
        "settle_s": settle_s,
        "quiet_wait_s": {"median": statistics.median(quiet_waits), "max": max(quiet_waits)},
        "requests_per_round": n_requests,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "carbon_log_records": logged,
        "errors": sum(r[n]["errors"] for r in per_round for n in ARMS),
    }


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
    tp = results.get("throughput")
    if tp:
        med = tp["ratio_median_of_rounds"]
        q1, q3 = tp.get("ratio_quartiles", [float("nan")] * 2)
        met = "met" if med >= 0.99 and q1 >= 0.99 else "not met here"
        text += (f" Throughput with the switch on, median over {len(tp['rounds'])} rounds: {med:.3f} of the switch off "
                 f"(quartiles {q1:.3f}-{q3:.3f}, range {tp['ratio_min_max'][0]:.2f}-{tp['ratio_min_max'][1]:.2f}; "
                 f"pooled {tp['ratio_on_over_off']:.3f}; target >= 0.99: {met}).")
        if "ratio_unreachable_median_of_rounds" in tp:
            lat = tp["latency_p50_ms_median_of_rounds"]
            st = tp["carbon_status"]["on"]
            text += (f" With the switch on and no sidecar listening (hook and middleware run, nothing is sent, "
                     f"lookups fail at once): median {tp['ratio_unreachable_median_of_rounds']:.3f}."
                     + (f" With the switch on and a real sidecar but responses not held (LLMCO2_RESPONSE_WAIT_S=0: "
                        f"every event sent and recorded, no response waits): median "
                        f"{tp['ratio_nowait_median_of_rounds']:.3f} (quartiles "
                        "{:.3f}-{:.3f}).".format(*tp["ratio_nowait_quartiles"])
                        if "ratio_nowait_median_of_rounds" in tp else "")
                     + " The switched-on "
                     f"responses carried their carbon headers ({st.get('final', 0)} final, {st.get('pending', 0)} "
                     f"pending of {sum(st.values())}). Median per-request latency: {lat['off']:.0f} ms off, "
                     f"{lat['on']:.0f} ms on, {lat['unreachable']:.0f} ms with no sidecar"
                     + (f" (of which a response was held for its carbon p50 {tp['carbon_wait_ms']['on']['p50']:.1f} ms, "
                        f"p90 {tp['carbon_wait_ms']['on']['p90']:.1f} ms, mean {tp['carbon_wait_ms']['on']['mean']:.1f} ms)"
                        if tp.get("carbon_wait_ms", {}).get("on") else "")
                     + ": in this closed loop "
                     "(each client sends its next request only when the previous response, headers included, has "
                     "arrived) the time a response waits for its carbon record -- the finish event's trip through "
                     "the emitter, the sidecar's micro-batch and GNN prediction and the lookup, all on the same 2 "
                     "cores as vLLM -- lowers throughput directly; the sidecar's arrival-to-record latency was "
                     f"p50 {tp['sidecar_record_latency']['p50']}, p90 {tp['sidecar_record_latency']['p90']}.")
        text += (" On this 2-core machine vLLM's CPU backend pins its worker to core 0 and leaves core 1 to everything "
                 "else (its log: reserved_cpus=[1]): the API server, the EngineCore, this benchmark's client threads "
                 "and the sidecar; the worker and EngineCore poll each other, and the tiny model's steps last about a millisecond, so "
                 "every extra runnable thread (the emitter's sender and gRPC threads, the sidecar process) stalls "
                 "steps directly, and rounds of the same server scatter by a factor of two or more. The figure is "
                 "not a prediction for a GPU server, where steps last tens of milliseconds and the sidecar has cores "
                 "of its own; it has not been measured there.")
    return text


def write(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hook_overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Hook overhead (benchmarks/hook_overhead.py)",
        "",
        f"Machine: {results['machine']}. vLLM {results['vllm_version']} (CPU build). Run {results['date']}.",
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
        "overwritten (vLLM's own work evicting the caches) and the thread then sleeps until 1 ms has passed",
        "(the model step, GIL released).",
        "",
        "| running requests | pacing | mean us | p50 us | p99 us | steps accepted by the sidecar | dropped |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["hook_cost"]:
        for mode in PACING:
            h = r[mode]
            lines.append(f"| {r['running_requests']} | {mode} | {h['mean_us']:.1f} | {h['p50_us']:.1f} | "
                         f"{h['p99_us']:.1f} | {r['emitter']['steps_accepted']} | {r['emitter']['dropped']} |")
    tp = results.get("throughput")
    if tp:
        nw = "ratio_nowait_median_of_rounds" in tp  # runs before 2026-11-26 had no fourth server
        arms = ("off", "on", "unreachable", "nowait") if nw else ("off", "on", "unreachable")
        lines += [
            "",
            "## Real server throughput with / without `LLMCO2_SIDECAR` (target: >= 0.99)",
            "",
            f"vLLM OpenAI servers with the tiny random LLaMA of the e2e test (`--max-num-batched-tokens 64`), one with",
            f"the switch off, one with it on (a real sidecar), closed loop, concurrency {tp['concurrency']}, "
            f"{tp['requests_per_round']} requests of {tp['max_tokens']} output tokens per round and server, the order",
            "of the servers rotating from round to round.",
            "",
            "A third server has the switch on but no sidecar listening (*no sidecar*): the hook and the",
            "middleware run, the emitter buffers and sends nothing; it separates their cost from the sending path.",
            *(["A fourth has the switch on and a real sidecar but does not hold responses (*not held*,",
               "`LLMCO2_RESPONSE_WAIT_S=0`): every event is sent and recorded, no response waits for its carbon;",
               "it separates the sending path from the response hold."] if nw else []),
            "",
            "| round | off tok/s | on tok/s | on / off | no sidecar tok/s | no sidecar / off |"
            + (" not held tok/s | not held / off |" if nw else ""),
            "|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if nw else ""),
        ]
        for i, r in enumerate(tp["rounds"], 1):
            lines.append(f"| {i} | {r['off']['tokens_per_s']:.1f} | {r['on']['tokens_per_s']:.1f} | {r['ratio']:.4f} | "
                         f"{r['unreachable']['tokens_per_s']:.1f} | {r['ratio_unreachable']:.4f} |"
                         + (f" {r['nowait']['tokens_per_s']:.1f} | {r['ratio_nowait']:.4f} |" if nw else ""))
        if "ratio_unreachable_median_of_rounds" in tp:
            lat, st = tp["latency_p50_ms_median_of_rounds"], tp["carbon_status"]
            q1, q3 = tp["ratio_quartiles"]
            u1, u3 = tp["ratio_unreachable_quartiles"]
            lines += [
                "",
                (f"Each server's load starts once every server and the sidecar together use under 0.1 core "
                 f"(waited {tp['quiet_wait_s']['median']:.1f} s at the median, {tp['quiet_wait_s']['max']:.1f} s at "
                 f"most: after a load a vLLM server keeps a core busy for about a second, and all workers are "
                 f"pinned to the same core) and {tp['settle_s']:g} s more, so that no server runs beside another's "
                 "trailing work." if "quiet_wait_s" in tp else
                 f"Each server's load starts {tp['settle_s']:g} s after the previous one ended, so that trailing work "
                 "(the sidecar finishing a round) is not charged to the next server."),
                "",
                "| | off | on (real sidecar) | on, no sidecar |" + (" on, responses not held |" if nw else ""),
                "|---|---:|---:|---:|" + ("---:|" if nw else ""),
                f"| throughput / off, median of rounds | 1 | **{tp['ratio_median_of_rounds']:.4f}** | "
                f"{tp['ratio_unreachable_median_of_rounds']:.4f} |"
                + (f" {tp['ratio_nowait_median_of_rounds']:.4f} |" if nw else ""),
                f"| quartiles of the per-round ratios | | {q1:.4f}-{q3:.4f} | {u1:.4f}-{u3:.4f} |"
                + (" {:.4f}-{:.4f} |".format(*tp["ratio_nowait_quartiles"]) if nw else ""),
                f"| range of the per-round ratios | | {tp['ratio_min_max'][0]:.4f}-{tp['ratio_min_max'][1]:.4f} | "
                f"{tp['ratio_unreachable_min_max'][0]:.4f}-{tp['ratio_unreachable_min_max'][1]:.4f} |"
                + (" {:.4f}-{:.4f} |".format(*tp["ratio_nowait_min_max"]) if nw else ""),
                "| request latency p50 (median of rounds) | " + " | ".join(f"{lat[n]:.0f} ms" for n in arms) + " |",
                "| held for carbon (`x-llmco2-wait-ms`), p50 / p90 / p99 | | " + " | ".join(
                    "n/a" if not tp.get("carbon_wait_ms", {}).get(n) else
                    "{p50:.1f} / {p90:.1f} / {p99:.1f} ms".format(**tp["carbon_wait_ms"][n]) for n in arms[1:])
                + " |",
                "| responses by `x-llmco2-carbon-status` | " + " | ".join(
                    ", ".join(f"{k} {v}" for k, v in sorted(st[n].items())) for n in arms)
                + " |",
                "",
                f"Sidecar, a step's arrival to its request records (`llmco2_record_latency_seconds`, over the rounds): "
                f"p50 {tp['sidecar_record_latency']['p50']}, p90 {tp['sidecar_record_latency']['p90']}, p99 "
                f"{tp['sidecar_record_latency']['p99']}. The sidecar ran with `llmco2 serve` defaults (journal fsync "
                "every second) on a Unix socket.",
            ]
        c = tp["server_cpu_s_per_1000_tokens"]
        lines += [
            "",
            f"The sidecar process used {c['on_sidecar']:.2f} CPU seconds per 1000 output tokens. vLLM's EngineCore and "
            "worker poll each other while requests are in flight, so their CPU time follows the wall time and is not "
            f"a measure of the plugin's work (idle, the servers used {tp['idle_server_cpu_s_per_s']['off']:.2f} / "
            f"{tp['idle_server_cpu_s_per_s']['on']:.2f} / {tp['idle_server_cpu_s_per_s']['unreachable']:.2f} CPU s per s).",
        ]
        lines += [
            "",
            f"Pooled over all rounds (total tokens / total seconds), switch on without a sidecar: "
            f"{tp['tokens_per_s_unreachable']:.1f} tok/s, ratio {tp['ratio_unreachable_over_off']:.4f}."
            + (f" Switch on, responses not held: {tp['tokens_per_s_nowait']:.1f} tok/s, ratio "
               f"{tp['ratio_nowait_over_off']:.4f}." if nw else ""),
            "",
            f"Pooled, switch on: {tp['tokens_per_s_off']:.1f} tok/s off, {tp['tokens_per_s_on']:.1f} tok/s on, ratio "
            f"{tp['ratio_on_over_off']:.4f} (median of rounds {tp['ratio_median_of_rounds']:.4f}, range "
            f"{tp['ratio_min_max'][0]:.4f}-{tp['ratio_min_max'][1]:.4f}); {tp['carbon_log_records']} requests in the "
            f"carbon log{' (the on and not-held servers together)' if nw else ''}; {tp['errors']} HTTP errors.",
        ]
    load = results.get("load")
    if load:
        b, a = load["loadavg_1_5_15_before"], load["loadavg_1_5_15_after"]
        lines += ["", f"Machine load: 1/5/15-minute load averages {b[0]:.2f}/{b[1]:.2f}/{b[2]:.2f} before the "
                  f"throughput part, {a[0]:.2f}/{a[1]:.2f}/{a[2]:.2f} after (2 cores; the benchmark's own servers "
                  "included)." + (f" {load['note']}" if load.get("note") else "")]
    lines += ["", "## Reading", "", results["reading"], ""]
    (RESULTS / "hook_overhead.md").write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--settle-s", type=float, default=0.5,
                    help="pause before each server's load, after all servers and the sidecar went quiet")
    ap.add_argument("--note", default="", help="what else ran on the machine (kept in the results)")
    ap.add_argument("--requests", type=int, default=96, help="requests per round and server")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3000, help="steps per batch size in the hook-cost part")
    ap.add_argument("--skip-server", action="store_true", help="only the hook-cost part")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md (and reading) from the .json")
    args = ap.parse_args()
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
        sidecar = Sidecar(work / "hook-sidecar", python=sys.executable).start()
        try:
            sidecar.wait_ready()
            cost = hook_cost(sidecar.address, n_steps=args.steps)
        finally:
            sidecar.stop()
        load_before = os.getloadavg()
        tp = None if args.skip_server else throughput(args.rounds, args.requests, args.concurrency, args.max_tokens,
                                                       work, settle_s=args.settle_s)
        load_after = os.getloadavg()
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}",
        "vllm_version": vllm.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "hook_cost": cost,
        "throughput": tp,
        "load": {"loadavg_1_5_15_before": list(load_before), "loadavg_1_5_15_after": list(load_after),
                 "note": args.note},
    }
    results["reading"] = reading_of(results)
    write(results)
    print(results["reading"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
