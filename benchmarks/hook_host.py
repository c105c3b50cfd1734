"""The machine side of benchmarks/hook_overhead.py: waiting for servers to go quiet, finding the
plugin's auto-started sidecar, per-thread scheduler statistics, pinning processes to cores, metric
counters, and what kind of machine and scheduler this is."""

from __future__ import annotations

import os
import time
from pathlib import Path

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


def _schedstat(pid: int) -> tuple[float, float]:
    """The main thread of ``pid`` (a sidecar's event loop): (seconds it ran, seconds it was runnable
    but waiting for a CPU), from ``/proc/PID/task/PID/schedstat``; zeros when unreadable."""
    try:
        run_ns, wait_ns, _ = open(f"/proc/{pid}/task/{pid}/schedstat").read().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


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
