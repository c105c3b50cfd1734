"""Kill the sidecar (SIGKILL) mid-stream, restart it: every request whose events it acknowledged gets
exactly one record in the carbon log (write-ahead journal + replay, torn-line repair)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys

import grpc
import pytest
from sidecar_testkit import identity, steps_message

from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.service.carbon_log import read_records

pytestmark = pytest.mark.timeout(120)


def start_sidecar(tmp_path, *extra: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "llmco2_sidecar.cli.main", "serve", "--port", "0", "--log",
           str(tmp_path / "carbon.jsonl"), "--predictor", "roofline", "--log-level", "WARNING", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"sidecar did not start: {line!r} {proc.stderr.read()}")
    return proc, line.split("listening on ")[1].split()[0]


def _run(tmp_path, extra=(), n_messages=40, per_message=6) -> None:
    proc, address = start_sidecar(tmp_path, "--micro-batch-ms", "400", *extra)
    channel = grpc.insecure_channel(address)
    stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
    q: queue.Queue = queue.Queue()
    call = stub.StreamEvents(iter(q.get, None))
    q.put(identity("engine-k"))
    assert next(call).stream_id == "engine-k"
    acked_done: list[str] = []
    step = 0
    t = 0.0
    for m in range(n_messages):
        steps = []
        done = []
        for k in range(per_message):
            rid = f"m{m}-r{k}"
            step += 1
            steps.append((step, t, t + 0.02, [(rid, 64 + k, 0, 64 + k)]))
            t += 0.03
            step += 1
            steps.append((step, t, t + 0.01, [(rid, 1, 64 + k, 64 + k)]))
            t += 0.02
            done.append((rid, 2))
        q.put(steps_message(m + 1, steps, done))
        ack = next(call)
        assert ack.done_accepted == per_message
        acked_done.extend(r for r, _ in done)
    os.kill(proc.pid, signal.SIGKILL)  # the pipeline is still waiting to fill its micro-batch
    proc.wait(10)
    call.cancel()
    channel.close()
    before = {r["request_id"] for r in read_records(tmp_path / "carbon.jsonl")} if (tmp_path / "carbon.jsonl").exists() else set()
    assert len(before) < len(acked_done), "the kill came too late to test anything"
    with open(tmp_path / "carbon.jsonl", "ab") as fh:  # and the crash tore a line
        fh.write(b'{"type": "request", "ts": 1.0, "request_id": "m0-r0", "energy')
    proc, address = start_sidecar(tmp_path, *extra)
    try:
        recs = read_records(tmp_path / "carbon.jsonl")
        ids = [r["request_id"] for r in recs]
        assert sorted(ids) == sorted(acked_done)  # every acknowledged request, exactly once
        assert all(r["energy_j"]["total"] > 0 and r["output_tokens"] == 2 for r in recs)
        # the restarted sidecar still takes the same engine, and rejects what it already has
        channel = grpc.insecure_channel(address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        q = queue.Queue()
        call = stub.StreamEvents(iter(q.get, None))
        q.put(identity("engine-k"))
        next(call)
        q.put(steps_message(1, [(step, t, t + 0.01, [("again", 5, 0, 5)])]))
        assert next(call).steps_rejected == 1  # duplicate step id survives the restart
        q.put(steps_message(2, [(step + 1, t, t + 0.01, [("after", 5, 0, 5)])], [("after", 1)]))
        assert next(call).done_accepted == 1
        q.put(None)
        list(call)
        channel.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    ids = [r["request_id"] for r in read_records(tmp_path / "carbon.jsonl")]
    assert ids.count("after") == 1 and len(ids) == len(acked_done) + 1
    # a third start replays the journal again and writes nothing twice
    proc, address = start_sidecar(tmp_path, *extra)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert sorted(r["request_id"] for r in read_records(tmp_path / "carbon.jsonl")) == sorted(ids)


def test_sigkill_loses_no_acknowledged_record(tmp_path):
    _run(tmp_path)


def test_sigkill_with_journal_checkpoints(tmp_path):
    # tiny segments: the journal rolls and checkpoints many times; old segments are deleted
    _run(tmp_path, extra=("--journal-max-bytes", "3000"))
    journal = tmp_path / "carbon.jsonl.journal"
    segments = sorted(journal.glob("journal-*.wal"))
    ckpt = json.loads((journal / "checkpoint.json").read_text())
    assert ckpt["segment"] > 3 and len(segments) <= 2
    assert all(int(p.stem.split("-")[1]) >= ckpt["segment"] for p in segments)
