"""What one engine message costs a Python gRPC server that does nothing with it, beside the sidecar.

Issue 16 asks for at most 0.5 ms of sidecar CPU per step when steps arrive one per message at 100
steps/s. This measures the floor under that figure on the same machine, the same way
(``benchmarks/sidecar.py``'s paced run): the shipped emitter (``llmco2_sidecar.client.Emitter``)
sends 100 one-step messages a second (16 request slices each, a finish every 4 steps) to a server
pinned to one core, and the server's CPU (user + system, /proc) over the run is divided by the
messages. Servers:

* ``bare-aio-iomgr``: a grpc.aio servicer that parses each message and sends one cumulative Ack per
  50 ms (what the sidecar does for this emitter), on gRPC's iomgr I/O stack (``llmco2 serve``'s);
* ``bare-aio``: the same on gRPC's default EventEngine stack;
* ``bare-sync``: a synchronous gRPC servicer (a thread pool), iomgr stack;
* ``bare-lookups``: ``bare-aio-iomgr`` that also answers a ``GetRequestCarbon`` for every finished
  request at once (no state): the floor under ``sidecar-lookups``;
* ``sidecar-receive``: ``llmco2 serve`` with its pipeline's work removed by a benchmark shim
  (``benchmarks/shims/pipeline``, ``drop``: every message is dropped after ingest): the receive side
  alone (gRPC, the journal, ingest's validation, the Acks);
* ``sidecar-roofline`` / ``sidecar-default``: ``llmco2 serve`` with the Roofline predictor / the
  shipped GNN (journal, ingest, prediction, attribution, records, metrics). Nothing waits for a
  record here (no lookup, no watcher), so with records on demand (the default since 2026-12-07)
  finishes wait with the steps and share prediction calls: a deployment that only logs and exports;
* ``sidecar-lookups``: ``llmco2 serve`` (shipped GNN) with a waiting ``GetRequestCarbon`` for every
  finished request right after its finish, as the vLLM hook's held responses do (the default there):
  every finish closes its micro-batch at once;
* ``sidecar-prompt``: ``llmco2 serve --prompt-records`` (every record within micro_batch_ms of its
  finish, waited for or not: the sidecar before records on demand);
* ``sidecar-inline``: ``llmco2 serve`` (shipped GNN) with the pipeline's work done on the event loop's
  thread, no hand-off to the pipeline thread (the same shim, ``inline``, which processes at every
  finish: compare it with ``sidecar-prompt``): what the hand-offs cost.

Each server is measured ``--repeat`` times (median and range: this VM's figures swing between runs).
Then the bare iomgr servicer and the sidecar once more with the emitter's defaults (steps alone held up
to 50 ms, a finish sent at once: a message per finish), their CPU per step.
Writes benchmarks/results/grpc_floor.json and .md. Usage: python benchmarks/grpc_floor.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import sidecar as bench  # noqa: E402  (benchmarks/sidecar.py: the workload, CPU reading, machine facts)
from llmco2_sidecar.config import SidecarConfig  # noqa: E402


SERVERS = ("bare-aio-iomgr", "bare-aio", "bare-sync", "bare-lookups", "sidecar-receive", "sidecar-roofline", "sidecar-default",
           "sidecar-lookups", "sidecar-prompt", "sidecar-inline")
SHIM = HERE / "shims" / "pipeline"  # sidecar-receive / sidecar-inline: measurement devices (its docstring)
ACK_INTERVAL_S = SidecarConfig.ack_interval_ms / 1000.0  # the bare servers ack as the sidecar does
# after the last message, before the CPU reading (every server alike): the sidecar's last micro-batch,
# which nothing waits for, closes within its step_wait_ms
SETTLE_S = SidecarConfig.step_wait_ms / 1000.0 + 0.15


def _serve_bare(mode: str) -> None:
    """The bare server (run as a subprocess): prints its address, serves until killed."""
    if mode in ("bare-aio-iomgr", "bare-sync", "bare-lookups"):
        from llmco2_sidecar.cli.serve import GRPC_IO_EXPERIMENTS

        os.environ["GRPC_EXPERIMENTS"] = GRPC_IO_EXPERIMENTS
    from concurrent import futures

    import grpc

    from llmco2_sidecar._proto import events_pb2 as pb
    from llmco2_sidecar._proto import sidecar_pb2 as spb
    from llmco2_sidecar._proto import sidecar_pb2_grpc

    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.so_reuseport", 0)]

    def ack_for(msg, last: list) -> "pb.Ack | None":
        if msg.WhichOneof("body") == "identity":
            return pb.Ack(seq=0, stream_id="bare")
        now = time.monotonic()
        if now - last[0] >= ACK_INTERVAL_S:
            last[0] = now
            seq = msg.events.seq
            return pb.Ack(seq=seq, acked_through_seq=seq, steps_accepted=len(msg.events.steps.step_id))
        return None

    class Aio(sidecar_pb2_grpc.CarbonSidecarServicer):
        async def StreamEvents(self, request_iterator, context):
            last = [0.0]
            async for msg in request_iterator:
                ack = ack_for(msg, last)
                if ack is not None:
                    await context.write(ack)

        async def GetRequestCarbon(self, request, context):  # bare-lookups: answers at once, no state
            return spb.RequestCarbonReply(records=[spb.RequestCarbon(request_id=request.request_id)])

    class Sync(sidecar_pb2_grpc.CarbonSidecarServicer):
        def StreamEvents(self, request_iterator, context):
            last = [0.0]
            for msg in request_iterator:
                ack = ack_for(msg, last)
                if ack is not None:
                    yield ack

    if mode == "bare-sync":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options)
        sidecar_pb2_grpc.add_CarbonSidecarServicer_to_server(Sync(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        print(f"listening on 127.0.0.1:{port}", flush=True)
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server(options=options)
        sidecar_pb2_grpc.add_CarbonSidecarServicer_to_server(Aio(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


def _start(mode: str, tmp: Path, cpu: int | None) -> tuple[subprocess.Popen, str]:
    if mode in ("sidecar-receive", "sidecar-inline"):
        env = {**os.environ, "LLMCO2_BENCH_PIPELINE": "drop" if mode == "sidecar-receive" else "inline",
               "PYTHONPATH": os.pathsep.join(p for p in (str(SHIM), os.environ.get("PYTHONPATH", "")) if p)}
        return bench.start_sidecar(tmp / mode, cpu, "default", env=env)
    if mode == "sidecar-prompt":
        return bench.start_sidecar(tmp / mode, cpu, "default", ("--prompt-records",))
    if mode == "sidecar-lookups":
        return bench.start_sidecar(tmp / mode, cpu, "default")
    if mode.startswith("sidecar-"):
        return bench.start_sidecar(tmp / mode, cpu, mode.split("-", 1)[1])
    proc = subprocess.Popen([sys.executable, __file__, "--serve", mode], stdout=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"{mode} did not start: {line!r}")
    return proc, line.split("listening on ")[1].split()[0]


def _threads(pid: int) -> dict[str, tuple[str, int, int]]:
    """Per thread of ``pid``: (name, user ticks, system ticks), from /proc/PID/task."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a thread that ended meanwhile
            continue
        out[tid] = ("main" if tid == str(pid) else name, int(fields[11]), int(fields[12]))
    return out


def _thread_cpu(before: dict, after: dict, seconds: float) -> list[dict]:
    """CPU ms per second of each thread that ran (user and system), busiest first; threads of one name
    (gRPC's pools) summed."""
    tick_ms = 1000.0 / os.sysconf("SC_CLK_TCK")
    by_name: dict[str, list[float]] = {}
    for tid, (name, u, s) in after.items():
        u0, s0 = before.get(tid, (name, 0, 0))[1:]
        acc = by_name.setdefault(name, [0.0, 0.0, 0])
        acc[0] += (u - u0) * tick_ms / seconds
        acc[1] += (s - s0) * tick_ms / seconds
        acc[2] += 1
    rows = [{"thread": n, "threads": int(c), "user_ms_per_s": u, "system_ms_per_s": s} for n, (u, s, c) in by_name.items()
            if u + s > 0]
    return sorted(rows, key=lambda r: -(r["user_ms_per_s"] + r["system_ms_per_s"]))


class _Lookups:
    """A waiting ``GetRequestCarbon`` (wait_s 2) for each finished request, in order, on a thread of
    the load generator (what the vLLM hook does for a held response); counts the records found."""

    def __init__(self, address: str):
        import queue
        import threading

        import grpc

        from llmco2_sidecar._proto import sidecar_pb2 as spb
        from llmco2_sidecar._proto import sidecar_pb2_grpc

        self._spb, self._q, self.found, self.missed = spb, queue.Queue(), 0, 0
        self._channel = grpc.insecure_channel(address)
        self._stub = sidecar_pb2_grpc.CarbonSidecarStub(self._channel)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def ask(self, rid: str) -> None:
        self._q.put(rid)

    def _run(self) -> None:
        for rid in iter(self._q.get, None):
            try:
                rep = self._stub.GetRequestCarbon(self._spb.RequestCarbonQuery(request_id=rid, wait_s=2.0), timeout=5)
                self.found += bool(rep.records)
            except Exception:  # a lookup that failed counts as missed (reported)
                self.missed += 1

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(30)
        self._channel.close()


def _paced(address: str, rate: float, duration_s: float, pid: int, hold_s: float = 0.0, lookups: bool = False,
           lifetime: int = bench.LIFETIME) -> dict:
    """The shipped emitter at ``rate`` steps a second, one step per message (``hold_s`` 0) or with
    steps alone held up to ``hold_s`` (the emitter's default: a message per finish); the server's CPU
    per message and per step. ``lookups``: a waiting lookup for every finished request. ``lifetime``:
    each request's steps (default 64: with 16 running, a finish every 4 steps)."""
    from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo

    engine = f"floor-{time.monotonic_ns()}"
    em = Emitter(EngineInfo(engine_name="bench", model_name=bench.MODEL, gpu=bench.GPU, instance_id=engine),
                 EmitterConfig(target=address, steps_hold_s=hold_s))
    w = bench.Workload(engine, lifetime)
    n = int(rate * duration_s)
    look = _Lookups(address) if lookups else None
    time.sleep(0.3)
    c0, th0 = bench._cpu_s(pid), _threads(pid)
    t0 = time.perf_counter()
    finishes = 0
    for k in range(n):
        bench.wait_until(t0 + k / rate)
        sid, start, end, count, rids, new, ctx, prm, done = w.steps(1)
        em.emit_step(sid[0], start[0], end[0], rids, new, ctx, prm)
        finishes += len(done)
        for r in done:
            em.emit_done(r, lifetime)
            if look is not None:
                look.ask(r)
    # the last messages handled: a micro-batch nothing waits for closes within step_wait_ms
    time.sleep(SETTLE_S)
    cpu, th1, wall = bench._cpu_s(pid) - c0, _threads(pid), time.perf_counter() - t0
    messages = em.stats().sent_messages if hold_s else n
    em.close(2.0)  # after the reading: a bare server acks only when a message comes
    out = {"messages": messages, "steps": n, "finishes": finishes, "cpu_s": cpu, "cpu_us_per_message": cpu / max(messages, 1) * 1e6,
           "cpu_us_per_step": cpu / n * 1e6, "wall_s": wall, "threads": _thread_cpu(th0, th1, wall)}
    if look is not None:
        look.close()
        out["lookups_found"], out["lookups_missed"] = look.found, look.missed
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one short run per server (a smoke test, not for the results)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per server (default 3)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each run (default 10 s)")
    ap.add_argument("--rate", type=float, default=100.0, help="one-step messages per second (default 100)")
    ap.add_argument("--out", default=str(bench.RESULTS), help="results folder")
    ap.add_argument("--serve", choices=[s for s in SERVERS if s.startswith("bare")], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        _serve_bare(args.serve)
        return 0
    repeat, seconds = (1, 3.0) if args.quick else (args.repeat, args.seconds)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0] if len(cpus) > 1 else None
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="llmco2-floor-"))
    res = {"machine": bench.machine(), "server_cpu_pinned": server_cpu, "rate_messages_per_s": args.rate,
           "seconds_per_run": seconds, "settle_s": SETTLE_S, "repeat": repeat, "servers": {}}
    for mode in SERVERS:
        runs = []
        for i in range(repeat):
            proc, address = _start(mode, tmp, server_cpu)
            try:
                time.sleep(1.0)
                runs.append(_paced(address, args.rate, seconds, proc.pid, lookups=mode.endswith("-lookups")))
            finally:
                proc.terminate()
                proc.wait(30)
            print(f"{mode} run {i + 1}/{repeat}: {runs[-1]['cpu_us_per_message']:,.0f} us per message", flush=True)
        per = sorted(r["cpu_us_per_message"] for r in runs)
        res["servers"][mode] = {"runs": runs, "median_us": per[len(per) // 2], "min_us": per[0], "max_us": per[-1]}
    # the emitter's defaults (steps alone held up to 50 ms, a finish sent at once): the bare server and
    # the sidecar, per step
    from llmco2_sidecar.client import EmitterConfig

    hold_s = EmitterConfig().steps_hold_s
    res["held"] = {"steps_hold_s": hold_s, "servers": {}}
    for mode in ("bare-aio-iomgr", "sidecar-default", "bare-lookups", "sidecar-lookups"):
        runs = []
        for i in range(repeat):
            proc, address = _start(mode, tmp, server_cpu)
            try:
                time.sleep(1.0)
                runs.append(_paced(address, args.rate, seconds, proc.pid, hold_s, lookups=mode.endswith("-lookups")))
            finally:
                proc.terminate()
                proc.wait(30)
            print(f"{mode}, emitter defaults, run {i + 1}/{repeat}: {runs[-1]['cpu_us_per_step']:,.0f} us per step "
                  f"({runs[-1]['messages']} messages)", flush=True)
        per = sorted(r["cpu_us_per_step"] for r in runs)
        res["held"]["servers"][mode] = {"runs": runs, "median_us_per_step": per[len(per) // 2], "min_us": per[0],
                                        "max_us": per[-1],
                                        "messages_per_s": runs[0]["messages"] / max(runs[0]["wall_s"], 1e-9)}
    res["load_average_1m_after"] = os.getloadavg()[0]
    res["command"] = "python benchmarks/grpc_floor.py" + (" --quick" if args.quick else "")
    bench.write_results(Path(args.out), "grpc_floor", res, render)
    return 0


LABELS = {
    "bare-aio-iomgr": "bare grpc.aio servicer, iomgr I/O stack (`llmco2 serve`'s)",
    "bare-aio": "bare grpc.aio servicer, gRPC's default EventEngine stack",
    "bare-sync": "bare synchronous gRPC servicer (thread pool), iomgr stack",
    "bare-lookups": "bare grpc.aio servicer (iomgr) answering a lookup per finished request at once",
    "sidecar-receive": "`llmco2 serve`, receive side only (a benchmark shim drops each message after ingest: gRPC, "
                       "journal, ingest, Acks; no prediction or records)",
    "sidecar-roofline": "`llmco2 serve --predictor roofline`",
    "sidecar-default": "`llmco2 serve` (shipped GNN predictor), nothing waiting for records (log and metrics only)",
    "sidecar-lookups": "`llmco2 serve` (shipped GNN predictor), a waiting lookup per finished request (the vLLM "
                       "hook's held responses)",
    "sidecar-prompt": "`llmco2 serve --prompt-records` (shipped GNN predictor; every finish closes its micro-batch)",
    "sidecar-inline": "`llmco2 serve`, the pipeline's work on the event loop's thread (a benchmark shim: no thread hand-off)",
}


def _lookup_floor(bare: dict, bl: dict, held: dict) -> str:
    """What the lookups add to the bare servicer, one step per message and with the emitter's defaults;
    said as within the swing where the two bare servers' runs overlap."""
    out = []
    d = bl["median_us"] - bare["median_us"]
    if bl["min_us"] > bare["max_us"]:
        out.append(f"the bare servicer {d:,.0f} us more per one-step message ({4 * d:,.0f} us per lookup)")
    else:
        out.append(f"at one step per message the bare servicer's runs with and without lookups overlap "
                   f"({bare['min_us']:,.0f}-{bare['max_us']:,.0f} against {bl['min_us']:,.0f}-{bl['max_us']:,.0f} us: "
                   "this VM's swing)")
    hb, hl = held.get("bare-aio-iomgr"), held.get("bare-lookups")
    if hb and hl:
        d = hl["median_us_per_step"] - hb["median_us_per_step"]
        out.append(f"with the emitter's defaults, {d:,.0f} us more per step ({4 * d:,.0f} us per lookup)")
    return "; ".join(out) + "."


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# The gRPC floor under the sidecar's CPU per message", "",
        f"Command: `{r['command']}` ({r['date_utc']} UTC). Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, "
        f"Python {m['python']}, grpcio {m['grpcio']}; 1-minute load average {m['load_average_1m_at_start']:.2f} at "
        f"the start, {r['load_average_1m_after']:.2f} at the end (other work shares this machine). Each server "
        f"is pinned to CPU {r['server_cpu_pinned']}; the shipped emitter sends {r['rate_messages_per_s']:.0f} one-step "
        f"messages a second from the other core (16 request slices per step, a finish every 4 steps) for "
        f"{r['seconds_per_run']:.0f} s; the server's CPU (user + system) from the first message to "
        f"{r.get('settle_s', 0.3):g} s after "
        "the last, per message, "
        f"{r['repeat']} run(s) each.", "",
        "| server | CPU per message, median (range) |", "|---|---|",
    ]
    for mode, s in r["servers"].items():
        lines.append(f"| {LABELS.get(mode, mode)} | {s['median_us']:,.0f} us ({s['min_us']:,.0f}-{s['max_us']:,.0f}) |")
    if all(s["runs"] and "threads" in s["runs"][0] for s in r["servers"].values()):
        lines += ["", "Where it goes, per thread (the median run of each server; CPU ms per second of wall time, user + "
                  "system; `main`: the main thread (the event loop); threads of one name summed, their count in "
                  "brackets; busiest first):", "",
                  "| server | threads |", "|---|---|"]
        for mode, s in r["servers"].items():
            run = sorted(s["runs"], key=lambda x: x["cpu_us_per_message"])[len(s["runs"]) // 2]
            cells = []
            for t in run["threads"]:
                count = f" ({t['threads']})" if t["threads"] > 1 else ""
                cells.append(f"{t['thread']}{count}: {t['user_ms_per_s']:.0f} + {t['system_ms_per_s']:.0f}")
            lines.append(f"| {LABELS.get(mode, mode)} | " + "; ".join(cells) + " |")
    held = r.get("held")
    if held:
        lines += ["", f"With the emitter's defaults (steps alone held up to {held['steps_hold_s'] * 1e3:.0f} ms, a finish sent at "
                  f"once: about {next(iter(held['servers'].values()))['messages_per_s']:.0f} messages a second for "
                  f"{r['rate_messages_per_s']:.0f} steps), CPU per step, median (range):", "",
                  "| server | CPU per step |", "|---|---|"]
        for mode, s in held["servers"].items():
            lines.append(f"| {LABELS.get(mode, mode)} | {s['median_us_per_step']:,.0f} us ({s['min_us']:,.0f}-{s['max_us']:,.0f}) |")
    bare = r["servers"].get("bare-aio-iomgr")
    side = r["servers"].get("sidecar-default")
    look = r["servers"].get("sidecar-lookups")
    prompt = r["servers"].get("sidecar-prompt")
    if bare and side:
        own = f"about {side['median_us'] - bare['median_us']:,.0f} us with nothing waiting for records"
        if look:
            own += f", {look['median_us'] - bare['median_us']:,.0f} us with a waiting lookup per finished request"
        lines += ["", f"The sidecar's own work per message (journal, ingest, prediction, attribution, records, metrics, "
                  f"its timers) is the difference from the bare servicer: {own}; the issue's target for the whole "
                  "is 500 us per step."]
        bl = r["servers"].get("bare-lookups")
        if look and bl:
            lines += ["", "A lookup per finished request (a unary RPC; 25 a second here, one per 4 steps): " +
                      _lookup_floor(bare, bl, (r.get("held") or {}).get("servers", {})) +
                      f" The sidecar with lookups is {look['median_us'] - bl['median_us']:,.0f} us per message above the "
                      "bare servicer with lookups."]
        if look:
            runs = look["runs"]
            lines += ["", f"The sidecar's lookups found {sum(x.get('lookups_found', 0) for x in runs):,} records and missed "
                      f"{sum(x.get('lookups_missed', 0) for x in runs):,} over the {len(runs)} run(s)."]
        recv = r["servers"].get("sidecar-receive")
        if recv:
            if side["min_us"] > recv["max_us"]:
                shared = f"{side['median_us'] - recv['median_us']:,.0f} us"
            else:  # the two servers' runs overlap: no difference this run can show
                shared = (f"within the runs' swing ({side['min_us']:,.0f}-{side['max_us']:,.0f} against "
                          f"{recv['min_us']:,.0f}-{recv['max_us']:,.0f} us for the receive side alone)")
            parts = [f"the receive side alone (gRPC, journal, ingest, Acks) takes {recv['median_us']:,.0f} us; the "
                     f"pipeline (prediction, attribution, records, sinks) the rest: {shared} with finishes sharing "
                     "prediction calls (nothing waits)"]
            if prompt:
                parts.append(f"{prompt['median_us'] - recv['median_us']:,.0f} us with a micro-batch per finish, every 4 "
                             "steps here (`--prompt-records`)")
            lines += ["", "Per message, " + ", ".join(parts) + "."]
        inline = r["servers"].get("sidecar-inline")
        ref = prompt or side
        if inline:
            gap = ref["median_us"] - inline["median_us"]
            apart = inline["max_us"] < ref["min_us"]  # every inline run cheaper than every handed-off one
            if gap > 0.15 * ref["median_us"] and apart:
                verdict = f"the hand-offs cost about {gap:,.0f} us per message"
            elif gap > 0:
                verdict = (f"{gap:,.0f} us less at the median, but the runs' ranges overlap (this VM swings about "
                           "+-15% between runs): no clear cost of the thread hand-offs; the work is where the time goes")
            else:
                verdict = "no cheaper: the thread hand-offs are not where the time goes, the work is"
            lines += ["", f"Doing the pipeline's work on the event loop's thread at every finish instead of handing it "
                      f"to the pipeline thread: {inline['median_us']:,.0f} us ({inline['min_us']:,.0f}-"
                      f"{inline['max_us']:,.0f}) against {ref['median_us']:,.0f} us ({LABELS.get('sidecar-prompt' if prompt else 'sidecar-default')}), {verdict}."]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
