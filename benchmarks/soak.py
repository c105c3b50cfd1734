"""Soak: a real ``llmco2 serve`` under 5,000 engine steps/s from 4 engines for N minutes, killed with
SIGKILL half way and restarted (issue 13 item 6). A benchmark, not a test.

What runs:
* the sidecar: ``python -m llmco2_sidecar.cli.main serve --unix SOCK --log LOG`` with its defaults
  (shipped predictor, journal fsync every second, journal segments checkpointed beyond
  ``--journal-max-bytes``, carbon log rotated beyond ``--log-max-bytes`` with ``--log-backups``
  kept, ledger of 100,000 finished requests; the values are in the results); nothing pinned;
* 4 engines, each a process of its own with the real :class:`~llmco2_sidecar.client.Emitter`,
  paced at ``--rate / --engines`` steps/s (1,250 each by default) on the engine clock. Each is a
  Sarathi-style continuous batcher: up to ``--seqs`` requests running (16), a token budget of 512 per
  step (decodes first, then prefill chunks, then admissions); request prompt and output lengths are
  drawn from the Azure LLM inference trace 2023 (conversation, ``llmco2_sidecar/data/``; requests
  over Llama-2-7B's 4,096-token context left out), each engine with its own seed. Steps are emitted
  in small groups (whatever is due every few milliseconds), each step with its own start and end;
* at ``--kill-at`` (half the run) the sidecar gets SIGKILL and is started again at once on the same
  log and journal; the engines' emitters buffer and resend (their acknowledged messages are in the
  journal, the rest is sent again).

What it measures, every ``--sample-s`` seconds: the sidecar's resident memory (VmRSS), the journal
directory's size, the carbon log's size (with its rotations), records written, requests finished.
At the end: records = finished requests (lost and duplicated ids; the log and its rotations are
followed by inode while they rotate), the step-end to record latency (from the ``emit_done`` right
after a request's last step, in the engine process, to the record's arrival on a ``WatchFinished``
stream, both on CLOCK_MONOTONIC) p50/p99/max, outside the outage and overall; RSS growth after
warm-up (``--warmup-min``, per phase: before the kill, after the restart).

Writes benchmarks/results/soak.json, soak.md and soak.png (RSS, journal and log size, latency over
time). ``python benchmarks/soak.py --minutes 2`` is a short look; the committed run used the default 30.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak_engine import CHUNK, GPU, MAX_CONTEXT, MODEL, engine_main  # noqa: E402
from soak_records import PREFIX, LogFollower, recheck, watch_records  # noqa: E402
from soak_report import plot, render  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


# ---- the sidecar ----------------------------------------------------------------------------------
class Sidecar:
    def __init__(self, work: Path, extra: list[str]):
        self.work = work
        self.sock = work / "sidecar.sock"
        self.log = work / "carbon.jsonl"
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"unix:{self.sock}"

    def start(self, timeout_s: float = 600.0) -> float:
        """Start and wait for 'listening on' (after its journal replay); returns the seconds it took."""
        self.starts += 1
        out = self.work / f"serve.{self.starts}.out"
        t0 = time.monotonic()
        with open(out, "w") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llmco2_sidecar.cli.main", "serve", "--unix", str(self.sock), "--log",
                 str(self.log), "--log-level", "WARNING", *self.extra],
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.work)
        while time.monotonic() - t0 < timeout_s:
            if "listening on" in out.read_text(errors="replace"):
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                raise RuntimeError(f"sidecar exited {self.proc.returncode}:\n{out.read_text()[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"sidecar not ready in {timeout_s:.0f} s")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def rss_mb(self) -> float | None:
        try:
            with open(f"/proc/{self.proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def cpu_s(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return 0.0

    def journal_bytes(self) -> int:
        d = Path(str(self.log) + ".journal")
        return sum(p.stat().st_size for p in d.glob("*") if p.is_file()) if d.exists() else 0

    def log_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.work.glob("carbon.jsonl*") if p.is_file())


def run(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="llmco2-soak-"))
    at_start = machine()  # the commit and load average when the run began
    sidecar = Sidecar(work, args.sidecar_arg or [])
    first_ready_s = sidecar.start()
    duration = args.minutes * 60.0
    kill_at = duration * args.kill_at
    ctx = mp.get_context("spawn")
    progress = [ctx.Array("q", 2, lock=False) for _ in range(args.engines)]
    t_start = time.monotonic() + 8.0  # the engine processes import and connect first
    t_stop = t_start + duration
    procs = []
    for i in range(args.engines):
        p = ctx.Process(target=engine_main, args=(i, sidecar.address, args.rate / args.engines, args.seqs, t_start,
                                                   t_stop, str(work / f"engine{i}"), progress[i]))
        p.start()
        procs.append(p)
    arrivals: dict[str, float] = {}
    stop_watch = threading.Event()
    watcher = threading.Thread(target=watch_records, args=(sidecar.address, arrivals, stop_watch), daemon=True)
    watcher.start()
    follower = LogFollower(sidecar.log)
    samples = []
    killed = {}
    next_sample = t_start
    cpu_base = 0.0
    print(f"soak: {args.engines} engines x {args.rate / args.engines:,.0f} steps/s for {args.minutes:g} min; "
          f"SIGKILL at {kill_at / 60:.1f} min; work dir {work}", flush=True)
    while True:
        now = time.monotonic()
        if not killed and now - t_start >= kill_at:
            cpu_base += sidecar.cpu_s()
            rss_before = sidecar.rss_mb()
            t_kill = time.monotonic()
            sidecar.kill()
            ready_s = sidecar.start()
            killed = {"at_s": t_kill - t_start, "restart_ready_s": ready_s, "rss_before_mb": rss_before,
                      "ready_at_s": time.monotonic() - t_start}
            print(f"soak: SIGKILL at {killed['at_s']:.0f} s; restarted, listening after {ready_s:.1f} s "
                  "(journal replayed)", flush=True)
            now = time.monotonic()
            next_sample = now  # no samples while it restarted: none are made up for that time
        if now >= next_sample:
            follower.poll()
            steps = sum(int(p[0]) for p in progress)
            finished = sum(int(p[1]) for p in progress)
            s = {"t_s": round(now - t_start, 2), "rss_mb": sidecar.rss_mb(), "journal_bytes": sidecar.journal_bytes(),
                 "log_bytes": sidecar.log_bytes(), "records": len(follower.ids), "finished": finished, "steps": steps,
                 "sidecar_cpu_s": round(cpu_base + sidecar.cpu_s(), 2), "load_1m": os.getloadavg()[0]}
            samples.append(s)
            if len(samples) % max(1, int(60 / args.sample_s)) == 0:
                print(f"soak: {s['t_s'] / 60:5.1f} min  steps {steps:,}  finished {finished:,}  records "
                      f"{s['records']:,}  rss {s['rss_mb'] or 0:.0f} MB  journal {s['journal_bytes'] / 2**20:.0f} MB  "
                      f"log {s['log_bytes'] / 2**20:.0f} MB  load {s['load_1m']:.1f}", flush=True)
            next_sample += args.sample_s
        if now >= t_stop:
            break
        time.sleep(max(0.0, min(0.2, next_sample - time.monotonic())))
    for p in procs:
        p.join(240)
    engines = []
    done_ids, done_t = [], {}
    for i in range(args.engines):
        info = json.loads((work / f"engine{i}.json").read_text())
        engines.append(info)
        z = np.load(work / f"engine{i}.npz")
        for n, t in zip(z["done_n"].tolist(), z["done_t"].tolist()):
            rid = f"{PREFIX}{i}-{n}"
            done_ids.append(rid)
            done_t[rid] = t
    # every finished request's record, or give up when none came for a while
    deadline, last_n, last_change = time.monotonic() + 600, -1, time.monotonic()
    while time.monotonic() < deadline:
        follower.poll()
        missing = sum(1 for r in done_ids if r not in follower.ids)
        if missing == 0:
            break
        if len(follower.ids) != last_n:
            last_n, last_change = len(follower.ids), time.monotonic()
        elif time.monotonic() - last_change > 60:
            break
        time.sleep(1.0)
    settle_s = time.monotonic() - t_stop
    final = {"t_s": round(time.monotonic() - t_start, 2), "rss_mb": sidecar.rss_mb(),
             "journal_bytes": sidecar.journal_bytes(), "log_bytes": sidecar.log_bytes(), "records": len(follower.ids),
             "finished": len(done_ids), "steps": sum(e["steps"] for e in engines),
             "sidecar_cpu_s": round(cpu_base + sidecar.cpu_s(), 2), "load_1m": os.getloadavg()[0]}
    samples.append(final)
    stop_watch.set()
    sidecar.stop()
    print("soak: checking records = finished again from the files on disk", flush=True)
    rechecked = recheck(work, args.engines)
    files_after_stop = {"journal_bytes": sidecar.journal_bytes(), "log_bytes": sidecar.log_bytes(),
                        "log_files": sorted(p.name for p in work.glob("carbon.jsonl*") if p.is_file())}
    serve_logs = {p.name: p.read_text(errors="replace")[-4000:] for p in sorted(work.glob("serve.*.out"))}

    # ---- figures ----
    lost = [r for r in done_ids if r not in follower.ids]
    lat_t, lat_ms = [], []
    outage = (killed.get("at_s", 1e18) - 1.0, killed.get("ready_at_s", -1e18) + 30.0)
    steady = []
    for rid, t in done_t.items():
        a = arrivals.get(rid)
        if a is None:
            continue
        ms = (a - t) * 1e3
        rel = t - t_start
        lat_t.append(rel)
        lat_ms.append(ms)
        if not (outage[0] <= rel <= outage[1]):
            steady.append(ms)
    lat_ms_arr = np.array(lat_ms)
    steady_arr = np.array(steady)

    def pct(a, q):
        return float(np.percentile(a, q)) if a.size else None

    def binned(width_s: float) -> list[dict]:
        out = []
        if not lat_t:
            return out
        t_arr = np.array(lat_t)
        for b in range(int(np.ceil(t_arr.max() / width_s)) + 1):
            sel = lat_ms_arr[(t_arr >= b * width_s) & (t_arr < (b + 1) * width_s)]
            if sel.size:
                out.append({"from_s": b * width_s, "n": int(sel.size), "p50_ms": pct(sel, 50), "p99_ms": pct(sel, 99),
                            "max_ms": float(sel.max())})
        return out

    per_min = [{"minute": int(x["from_s"] // 60), **{k: v for k, v in x.items() if k != "from_s"}} for x in binned(60.0)]
    bin_s = max(5.0, duration / 60.0)
    per_bin = binned(bin_s)
    warm = args.warmup_min * 60.0

    def growth(t0, t1):
        pts = [s for s in samples if s["rss_mb"] and t0 <= s["t_s"] <= t1]
        if len(pts) < 2:
            return None
        first, last = pts[0]["rss_mb"], pts[-1]["rss_mb"]
        return {"from_s": pts[0]["t_s"], "to_s": pts[-1]["t_s"], "rss_start_mb": first, "rss_end_mb": last,
                "rss_max_mb": max(p["rss_mb"] for p in pts), "growth_pct": (last - first) / first * 100.0}

    k_at = killed.get("at_s", duration)
    phases = {"before_kill": growth(warm, k_at - 0.1),
              "after_restart": growth(killed.get("ready_at_s", 0) + warm, duration)}
    return {
        "command": " ".join(["python benchmarks/soak.py", *sys.argv[1:]]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": at_start,
        "settings": {"minutes": args.minutes, "engines": args.engines, "rate_steps_per_s": args.rate,
                     "max_running_per_engine": args.seqs, "chunk_tokens": CHUNK, "model": MODEL, "gpu": GPU,
                     "kill_at_fraction": args.kill_at, "warmup_min": args.warmup_min, "sample_s": args.sample_s,
                     "sidecar_args": args.sidecar_arg or [], "trace": "Azure LLM inference trace 2023, conversation "
                     f"(requests with prompt + output <= {MAX_CONTEXT} tokens)"},
        "sidecar_defaults": sidecar_defaults(),
        "first_start_ready_s": first_ready_s,
        "kill": killed,
        "engines": engines,
        "steps_emitted": sum(e["steps"] for e in engines),
        "steps_per_s_achieved": sum(e["steps"] for e in engines) / duration,
        "finished": len(done_ids),
        "records": len(set(done_ids) & follower.ids),
        "lost": len(lost),
        "lost_examples": lost[:10],
        "recheck": rechecked,
        "duplicate_records": follower.duplicates,
        "error_records": follower.errors,
        "window_records": follower.windows,
        "settle_s": settle_s,
        "latency": {"records_timed": int(lat_ms_arr.size), "p50_ms": pct(lat_ms_arr, 50), "p99_ms": pct(lat_ms_arr, 99),
                    "max_ms": float(lat_ms_arr.max()) if lat_ms_arr.size else None,
                    "outside_outage": {"n": int(steady_arr.size), "p50_ms": pct(steady_arr, 50),
                                       "p99_ms": pct(steady_arr, 99), "p999_ms": pct(steady_arr, 99.9),
                                       "max_ms": float(steady_arr.max()) if steady_arr.size else None,
                                       "excluded_window_s": [round(outage[0], 1), round(outage[1], 1)]},
                    "per_minute": per_min, "bin_s": bin_s, "per_bin": per_bin},
        "rss_growth_after_warmup": phases,
        "journal_max_bytes": max(s["journal_bytes"] for s in samples),
        "log_max_bytes": max(s["log_bytes"] for s in samples),
        "files_after_stop": files_after_stop,
        "samples": samples,
        "sidecar_output_tail": serve_logs,
    }


def sidecar_defaults() -> dict:
    from llmco2_sidecar.config import SidecarConfig

    f = SidecarConfig.__dataclass_fields__
    return {k: f[k].default for k in ("journal_max_bytes", "log_max_bytes", "log_backups", "fsync",
                                      "ledger_max_finished", "predictor", "max_pending_steps")}


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "load_average_1m_at_start": os.getloadavg()[0],
            "python": platform.python_version(), "platform": platform.platform(), "commit": commit,
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the load")
    ap.add_argument("--rate", type=float, default=5000.0, help="engine steps per second, all engines together")
    ap.add_argument("--engines", type=int, default=4, help="engine processes, each with its own emitter and stream")
    ap.add_argument("--seqs", type=int, default=16, help="requests running at most per engine")
    ap.add_argument("--kill-at", type=float, default=0.5, help="SIGKILL the sidecar at this fraction of the run")
    ap.add_argument("--warmup-min", type=float, default=5.0,
                    help="minutes after a start before RSS growth is measured (the ledger of 100,000 finished "
                         "requests fills in about 5 minutes at this load)")
    ap.add_argument("--sample-s", type=float, default=5.0, help="sampling period of RSS and file sizes")
    ap.add_argument("--sidecar-arg", action="append", help="extra `llmco2 serve` argument (repeatable)")
    ap.add_argument("--out", default=str(RESULTS), help="results folder (soak.json, soak.md, soak.png)")
    ap.add_argument("--rerender", metavar="JSON", help="only write soak.md and soak.png again from a soak.json")
    ap.add_argument("--recheck", metavar="WORK", help="only check records = finished again in the work folder a run "
                                                      "left (printed as JSON; --engines must match the run)")
    args = ap.parse_args(argv)
    if args.recheck:
        print(json.dumps(recheck(Path(args.recheck), args.engines), indent=2))
        return 0
    if args.rerender:
        r = json.loads(Path(args.rerender).read_text())
        out = Path(args.out)
        (out / "soak.md").write_text(render(r))
        plot(r, out / "soak.png")
        print(render(r))
        return 0
    for name in ("minutes", "rate", "sample_s"):
        if not getattr(args, name) > 0:
            print(f"soak: --{name.replace('_', '-')} must be positive", file=sys.stderr)
            return 2
    if args.engines < 1 or args.seqs < 1 or not (0 < args.kill_at < 1):
        print("soak: --engines and --seqs must be >= 1, --kill-at in (0, 1)", file=sys.stderr)
        return 2
    r = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / "soak.md").write_text(render(r))
    plot(r, out / "soak.png")
    print(render(r))
    return 0 if r["lost"] == 0 and r["recheck"]["missing"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
