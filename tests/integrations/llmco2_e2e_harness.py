"""Real processes for the vLLM end-to-end test and the hook benchmark: the e2e venv, a tiny model,
a real ``llmco2 serve`` and a real vLLM OpenAI server, plus small HTTP helpers (stdlib only).

Everything listens on 127.0.0.1 or a Unix socket under a temporary directory, and every process
started here is stopped by the ``stop()`` of its object (the test and the benchmark use ``with``).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VLLM_ENV_SCRIPT = ROOT / "tools" / "vllm_env.sh"


class HarnessError(RuntimeError):
    pass


def ensure_vllm_env(timeout_s: float = 900.0) -> Path:
    """Create or reuse ``.venv-vllm`` (tools/vllm_env.sh); return its python. Raises HarnessError."""
    try:
        proc = subprocess.run(["bash", str(VLLM_ENV_SCRIPT)], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"tools/vllm_env.sh did not finish in {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        tail = "\n".join(line for line in (proc.stderr + proc.stdout).splitlines() if "is ignored" not in line)[-4000:]
        raise HarnessError(f"tools/vllm_env.sh failed (exit {proc.returncode}):\n{tail}")
    python = Path(proc.stdout.strip().splitlines()[-1])
    if not python.exists():
        raise HarnessError(f"tools/vllm_env.sh printed {python}, which does not exist")
    return python


def build_tiny_model(python: Path, out_dir: Path, hidden_size: int | None = None, num_layers: int = 2,
                     arch: str = "llama") -> Path:
    """The tiny random-weight LLaMA (tests/integrations/tiny_llama.py) built with the e2e venv's python;
    ``hidden_size``/``num_layers`` for a larger one; ``arch`` "mixtral" or "qwen3_moe" for a tiny MoE."""
    size = [] if hidden_size is None and arch == "llama" else [str(hidden_size or 128), str(num_layers)]
    if arch != "llama":
        size.append(arch)
    proc = subprocess.run([str(python), str(HERE / "tiny_llama.py"), str(out_dir), *size], capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        raise HarnessError(f"tiny model build failed:\n{proc.stderr[-3000:]}")
    return out_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout_s)


class Sidecar:
    """``llmco2 serve --unix SOCK --log LOG [--log-steps]`` as a subprocess in a process group of its own
    (killable as a whole). It stays in the caller's session unless ``own_session``: this kernel's
    scheduler autogroup shares CPU between sessions first, and a sidecar alone in its session starves
    beside a vLLM server (benchmarks/hook_overhead.py measures both)."""

    def __init__(self, workdir: Path, python: str = sys.executable, extra: list[str] | None = None,
                 log_steps: bool = True, own_session: bool = False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sock = self.workdir / "sidecar.sock"
        self.log = self.workdir / "carbon.jsonl"
        self.python = python
        self.extra = (["--log-steps"] if log_steps else []) + (extra or [])
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.own_session = own_session

    @property
    def address(self) -> str:
        return f"unix:{self.sock}"

    def start(self) -> "Sidecar":
        self.starts += 1
        out = open(self.workdir / f"serve.{self.starts}.out", "w")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCO2_")}
        self.proc = subprocess.Popen(
            [self.python, "-m", "llmco2_sidecar.cli.main", "serve", "--unix", str(self.sock), "--log", str(self.log),
             "--fsync", "never", *self.extra],
            cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            **({"start_new_session": True} if self.own_session else {"process_group": 0}))
        out.close()
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        out = self.workdir / f"serve.{self.starts}.out"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "listening on" in out.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise HarnessError(f"sidecar exited ({self.proc.returncode}):\n{out.read_text()[-3000:]}")
            time.sleep(0.2)
        raise HarnessError(f"sidecar not ready in {timeout_s:.0f} s:\n{out.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: a crash, no flushing."""
        _stop(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM)

    def records(self, kind: str = "request") -> list[dict]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("type", "request") == kind:
                out.append(rec)
        return out


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 with the tiny model (own process group)."""

    def __init__(self, python: Path, model_dir: Path, workdir: Path, env: dict[str, str] | None = None,
                 max_num_batched_tokens: int = 32, max_model_len: int = 256):
        self.python = python
        self.model_dir = model_dir
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.extra_env = env or {}
        self.args = ["--max-num-batched-tokens", str(max_num_batched_tokens), "--max-model-len", str(max_model_len)]
        self.proc: subprocess.Popen | None = None
        self.out = self.workdir / f"vllm.{self.port}.out"

    def start(self) -> "VllmServer":
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCO2_")}
        env.update({"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                    "VLLM_LOGGING_LEVEL": "INFO", "TOKENIZERS_PARALLELISM": "false"})
        env.update(self.extra_env)
        cmd = [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
               "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32",
               "--enforce-eager", *self.args]
        with open(self.out, "w") as fh:
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 480.0) -> None:  # 240 s was too short on a 2-core box at load 30+
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"vLLM exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                status, _, _ = http_request(self.port, "GET", "/health", None, timeout_s=2.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise HarnessError(f"vLLM not ready in {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        return self.out.read_text(errors="replace")[-n:] if self.out.exists() else ""

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM, timeout_s=30.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (psutil; 0.0 if it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def http_request(port: int, method: str, path: str, body: dict | None, headers: dict | None = None,
                 timeout_s: float = 120.0) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 exchange on 127.0.0.1:port; returns (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"content-type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload
    finally:
        conn.close()


def sse_events(payload: bytes) -> list:
    """The ``data:`` payloads of a server-sent-events body, JSON-decoded (``[DONE]`` kept as the string)."""
    out = []
    for block in payload.decode("utf-8", errors="replace").split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                text = line[len("data: "):]
                out.append(text if text == "[DONE]" else json.loads(text))
    return out
