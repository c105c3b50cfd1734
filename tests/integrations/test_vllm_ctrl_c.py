"""Ctrl-C of a real vLLM (CPU build 0.32) with the switch on (``LLMCO2_SIDECAR=auto``), as a terminal
sends it: SIGINT to the server's whole process group, the server idle after serving a request.

Expected, as with the switch off: vLLM exits by itself with status 0, its output has no ERROR line
(except vLLM's own shutdown race, see :func:`without_vllms_own_shutdown_race`); the sidecar the
plugin started is stopped after vLLM (it runs in a process group of its own, so the engine's gRPC
stream is not cut under it: no "Aborting method" warning, which the sidecar's own SIGINT used to
cause), and its socket and private folder are removed. Also checked on the way: the response carries its carbon
and the note that a CPU engine's figures are not a GPU's.

Not asserted: Ctrl-C with streamed requests still in flight. vLLM 0.32 itself then logs ``ERROR ...
AsyncLLM output_handler failed`` / ``EngineDeadError`` for each of them, with the switch off as well
(seen here: 8 streams, SIGINT 0.2 s after they started, switch off: 396 ERROR lines).

Skipped with LLMCO2_SKIP_E2E=1 (like test_vllm_e2e.py); fails when the vLLM environment cannot be built.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest

from llmco2_e2e_harness import HarnessError, VllmServer, build_tiny_model, http_request

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


def _auto_sidecar(server_pid: int) -> tuple[psutil.Process, str]:
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "llmco2_sidecar.cli.main" in cmd and "serve" in cmd and "--unix" in cmd:
            return child, cmd[cmd.index("--unix") + 1]
    raise AssertionError("the plugin started no sidecar")


def without_vllms_own_shutdown_race(lines: list[str]) -> list[str]:
    """The error lines less vLLM 0.32's own Ctrl-C race, when it is the whole of them: the API
    server's output handler logging ``AsyncLLM output_handler failed`` and a traceback ending in
    ``EngineDeadError`` while its engine client is torn down. It happens with the switch off too (on
    this box: 1 of 3 idle switch-off runs, 8 lines, the same block), so it is vLLM's, not the plugin's;
    any other error line, or this block from any other place, still fails the test."""
    race = [ln for ln in lines if "[async_llm.py:" in ln]
    if race and "AsyncLLM output_handler failed." in race[0] and race[-1].rstrip().endswith(
            "EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause."):
        return [ln for ln in lines if ln not in race]
    return lines


def test_the_race_filter_keeps_every_other_error():
    block = ["(APIServer pid=1) ERROR 12-06 18:35:09 [async_llm.py:906] AsyncLLM output_handler failed.",
             "(APIServer pid=1) ERROR 12-06 18:35:09 [async_llm.py:906] Traceback (most recent call last):",
             "(APIServer pid=1) ERROR 12-06 18:35:09 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: "
             "EngineCore encountered an issue. See stack trace (above) for the root cause."]
    other = "(EngineCore pid=2) ERROR 12-06 18:35:09 [core.py:1512] EngineCore encountered a fatal error."
    assert without_vllms_own_shutdown_race(block) == []
    assert without_vllms_own_shutdown_race([*block, other]) == [other]
    assert without_vllms_own_shutdown_race(block[:2]) == block[:2]  # not ending in EngineDeadError: kept


def test_ctrl_c_stops_vllm_and_its_sidecar_cleanly(vllm_python: Path, tmp_path: Path) -> None:
    model = build_tiny_model(vllm_python, tmp_path / "tiny")
    log = tmp_path / "carbon.jsonl"
    server = VllmServer(vllm_python, model, tmp_path, env={
        "LLMCO2_SIDECAR": "auto", "LLMCO2_GPU": "A100-SXM4-80GB", "LLMCO2_LOG": str(log)})
    server.start()
    try:
        server.wait_ready()
        status, headers, _ = http_request(server.port, "POST", "/v1/completions",
                                          {"model": "tiny", "prompt": "Hello", "max_tokens": 8, "ignore_eos": True},
                                          {"x-request-id": "before-ctrl-c"})
        assert status == 200 and headers["x-llmco2-carbon-status"] == "final", headers
        assert "not a GPU's" in headers["x-llmco2-note"]
        sidecar, sock = _auto_sidecar(server.proc.pid)
        assert os.path.exists(sock)

        time.sleep(1.0)  # the request's record is written; the server idles, as when a user stops it
        os.killpg(server.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        rc = server.proc.wait(timeout=120)
        output = server.log_tail(10**7)
        assert rc == 0, output[-4000:]
        bad = [ln for ln in output.splitlines() if re.search(r"\bERROR\b|EngineDeadError|Traceback", ln)]
        bad = without_vllms_own_shutdown_race(bad)
        assert not bad, "\n".join(bad[:20])
        assert "Aborting method" not in output  # the engine's stream was not cut by a sidecar stopping first
        deadline = time.monotonic() + 10
        while sidecar.is_running() and sidecar.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not sidecar.is_running() or sidecar.status() == psutil.STATUS_ZOMBIE, "the sidecar outlived vLLM"
        assert not os.path.exists(sock) and not os.path.exists(os.path.dirname(sock))
        ids = [json.loads(line).get("request_id", "") for line in log.read_text().splitlines() if line.strip()]
        assert any(r.startswith("cmpl-before-ctrl-c-0-") for r in ids), ids  # flushed before the sidecar stopped
    except HarnessError as exc:
        pytest.fail(str(exc))
    finally:
        server.stop()
