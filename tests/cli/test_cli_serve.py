"""``llmco2 serve`` as a subprocess: its predictor's intra-op threads do not follow an inherited
``OMP_NUM_THREADS`` (the serving engine's value): beside a busy engine, an OpenMP team of one thread
per core made every prediction wait (cli/serve.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from llmco2_sidecar._proto import sidecar_pb2 as spb
from llmco2_sidecar._proto import sidecar_pb2_grpc


# gRPC's own pools grow and shrink with load ("event_engine", "grpc_global_tim"): counting them made the
# comparison flaky on a busy box; OpenMP workers carry the process's name like every other thread.
_GRPC_THREAD_PREFIXES = ("event_engine", "grpc_")


def _threads_not_grpcs(pid: int) -> int:
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            names.append(Path(f"/proc/{pid}/task/{task}/comm").read_text().strip())
        except OSError:  # the thread ended while we looked
            continue
    return sum(1 for n in names if not n.startswith(_GRPC_THREAD_PREFIXES))


def _threads_after_a_prediction(tmp_path: Path, omp: str) -> int:
    sock = tmp_path / f"s{omp}.sock"
    out = tmp_path / f"serve{omp}.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCO2_", "OMP_", "MKL_", "KMP_"))}
    env["OMP_NUM_THREADS"] = omp
    with open(out, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "llmco2_sidecar.cli.main", "serve", "--unix", str(sock),
                                 "--log", str(tmp_path / f"c{omp}.jsonl"), "--fsync", "never"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        while "listening on" not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        assert "predictor llmco2-gnn" in out.read_text()
        with grpc.insecure_channel(f"unix:{sock}") as ch:
            stub = sidecar_pb2_grpc.CarbonSidecarStub(ch)
            for batch in (1, 8, 64):  # the GNN runs (each query is a batch of many steps)
                reply = stub.Estimate(spb.EstimateRequest(model="meta-llama/Llama-2-7b-hf", gpu="A100-SXM4-80GB",
                                                          batch=batch, prompt_len=512, output_len=64), timeout=60)
                assert reply.result["energy_j"]["total"] > 0
        return _threads_not_grpcs(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not os.path.isdir("/proc/self/task"),
                    reason="needs 2+ cores (OpenMP's default team is one thread per core) and /proc")
def test_serve_keeps_one_intra_op_thread_whatever_the_engine_set(tmp_path):
    pinned = _threads_after_a_prediction(tmp_path, "1")
    inherited = _threads_after_a_prediction(tmp_path, str(max(4, os.cpu_count() or 2)))
    # an inherited OpenMP team would add (OMP_NUM_THREADS - 1) >= 3 threads; the default executor that runs
    # Estimate calls may start one thread more or less depending on timing, hence the tolerance of one
    assert abs(inherited - pinned) <= 1, f"{inherited} threads with OMP_NUM_THREADS inherited vs {pinned} pinned"
