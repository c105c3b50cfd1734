"""``LLMCO2_SIDECAR=auto``: start ``llmco2 serve`` beside vLLM and stop it with the server.

The first vLLM process that loads the plugin (the API server) starts the sidecar on a Unix socket
in a private temporary directory and rewrites ``LLMCO2_SIDECAR`` to ``unix:PATH`` before vLLM
spawns its EngineCore and workers, so they inherit the concrete address. The sidecar is stopped
(SIGTERM, then SIGKILL) when that process exits; on Linux it also receives SIGTERM if the process
dies without running its exit handlers (``PR_SET_PDEATHSIG``). The sidecar runs in a process group
of its own within the server's session, so a Ctrl-C in the terminal stops vLLM first and the
sidecar only after vLLM's engine has sent its last events (no record lost, no gRPC stream aborted
under the engine, nothing competing with vLLM's own shutdown). The sidecar's own settings come
from its ``LLMCO2_*`` variables (``LLMCO2_LOG`` for the carbon log, ``LLMCO2_PUE``, ...).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile

log = logging.getLogger("vllm.llmco2")

_children: list[subprocess.Popen] = []
_folders: list[str] = []


def resolve_target(env: "os._Environ[str] | dict[str, str] | None" = None) -> str:
    """The sidecar address; starts one first when the switch says ``auto``. '' when none can be had."""
    env = os.environ if env is None else env
    target = env.get("LLMCO2_SIDECAR", "").strip()
    if target.lower() != "auto":
        return target
    try:
        proc, address = start_sidecar()
    except Exception as exc:
        log.warning("llmco2: could not start a sidecar for LLMCO2_SIDECAR=auto (%r); running unhooked", exc)
        env.pop("LLMCO2_SIDECAR", None)
        return ""
    env["LLMCO2_SIDECAR"] = address
    log.info("llmco2: started sidecar pid %d on %s", proc.pid, address)
    return address


def start_sidecar(extra_args: list[str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``llmco2 serve --unix PATH`` and register its stop at exit; returns (process, address)."""
    folder = tempfile.mkdtemp(prefix="llmco2-")
    path = os.path.join(folder, "sidecar.sock")
    cmd = [sys.executable, "-m", "llmco2_sidecar.cli.main", "serve", "--unix", path, *(extra_args or [])]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,  # noqa: PLW1509
                            start_new_session=False)
    _children.append(proc)
    _folders.append(folder)
    if len(_children) == 1:
        atexit.register(stop_sidecars)
    return proc, "unix:" + path


def stop_sidecars(timeout_s: float = 5.0) -> None:
    """Stop the sidecars this process started (SIGTERM: they flush their records; then SIGKILL) and
    remove their socket folders."""
    while _children:
        proc = _children.pop()
        if proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    while _folders:
        shutil.rmtree(_folders.pop(), ignore_errors=True)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # A process group of its own (same session: the scheduler's autogroup still counts it with the
    # engine): a terminal's Ctrl-C (SIGINT to the foreground group) then reaches vLLM only, and the
    # sidecar keeps receiving the engine's last events while vLLM shuts down; stop_sidecars() stops
    # it after that, at the API server's exit (SIGTERM: records flushed, socket removed).
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
