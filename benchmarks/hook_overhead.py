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
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integrations"))
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hook_cost import hook_cost  # noqa: E402  (part 1, beside this file)
from hook_overhead_report import reading_of, write  # noqa: E402  (the report, beside this file)
from hook_load import _load  # noqa: E402
from hook_host import (_auto_sidecar_pid, _autogroup, _counter, _pin, _pin_host, _schedstat,  # noqa: E402
                       _virtual, _wait_quiet)
from hook_stats import (_add_delta, _histograms, _late_share, _mean_ci95, _order_adjusted,  # noqa: E402
                        _quantiles_of, _quartiles, _wait_summary)


ARMS = ("off", "on", "nowait", "unreachable", "separate")  # the servers of the throughput part
SIDECAR_ARMS = ("on", "nowait", "separate")  # each with a sidecar of its own

# ---- part 2: a real server's throughput with and without the switch -------------------------------

def _loop_lag_period_s() -> float:
    """How often the sidecar's event loop samples its own lag (its heartbeat's period)."""
    from llmco2_sidecar.service.server import HEARTBEAT_S

    return float(HEARTBEAT_S)

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
        "loop_lag_period_s": _loop_lag_period_s(),
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
