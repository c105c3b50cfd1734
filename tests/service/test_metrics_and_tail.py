"""Prometheus endpoint (real HTTP scrape) and ``llmco2 tail`` (filters, follow across rotation)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
from sidecar_testkit import identity, make_config, steps_message

from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.cli.main import main
from llmco2_sidecar.cli.tail import follow
from llmco2_sidecar.service.carbon_log import CarbonLog
from llmco2_sidecar.service.server import SidecarThread


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _value(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert m, f"{name}{labels} missing"
    return float(m.group(1))


def test_prometheus_endpoint(tmp_path):
    port = _free_port()
    with SidecarThread(make_config(tmp_path, metrics_port=port)) as sc:
        assert sc.listening.metrics_port == port
        channel = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        msgs = [identity(),
                steps_message(1, [(1, 0.0, 0.05, [("secret-request-id", 100, 0, 100)]),
                                  (2, 0.06, 0.07, [("secret-request-id", 1, 100, 100)]),
                                  (2, 0.08, 0.09, [("secret-request-id", 1, 101, 100)])],  # duplicate id
                              done=[("secret-request-id", 2)])]
        acks = list(stub.StreamEvents(iter(msgs)))
        assert acks[1].steps_rejected == 1
        sc.flush()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        channel.close()
    assert _value(text, "llmco2_energy_joules_total", '{phase="prefill",source="predicted"}') > 0
    assert _value(text, "llmco2_energy_joules_total", '{phase="decode",source="predicted"}') > 0
    assert _value(text, "llmco2_energy_joules_total", '{phase="serving",source="predicted"}') > 0
    assert _value(text, "llmco2_carbon_grams_total", '{kind="operational"}') > 0
    assert _value(text, "llmco2_carbon_grams_total", '{kind="embodied"}') > 0
    assert _value(text, "llmco2_request_energy_joules_count") == 1
    assert _value(text, "llmco2_request_tokens_sum", '{kind="output"}') == 2
    assert _value(text, "llmco2_ingest_steps_total", '{outcome="accepted"}') == 2
    assert _value(text, "llmco2_ingest_steps_total", '{outcome="rejected"}') == 1
    assert _value(text, "llmco2_ingest_rejections_total", '{field="steps.step_id"}') == 1
    assert "secret-request-id" not in text and "request_id=" not in text  # no request ids as labels


def _write(log: CarbonLog, i: int, model: str = "m-a", carbon: float = 0.01) -> None:
    log.write_records([{"type": "request", "ts": 1.7e9 + i, "request_id": f"req-{i}", "model": model, "gpu": "A100",
                        "prompt_tokens": 10, "output_tokens": 5, "energy_j": {"total": 1.5},
                        "carbon_g": {"total": carbon}, "source": "predicted"}])


def test_tail_once_with_filters(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    log = CarbonLog(path).open()
    for i in range(10):
        _write(log, i, model="m-a" if i % 2 else "m-b", carbon=0.001 * i)
    log.close()
    assert main(["tail", str(path), "--once", "-n", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("time") and [ln.split()[2] for ln in lines[1:]] == ["req-7", "req-8", "req-9"]
    assert main(["tail", str(path), "--once", "--model", "m-b", "--min-carbon-g", "0.003", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [__import__("json").loads(ln)["request_id"] for ln in out] == ["req-4", "req-6", "req-8"]
    assert main(["tail", str(tmp_path / "missing.jsonl"), "--once"]) == 2


def test_tail_follows_across_rotation(tmp_path):
    path = tmp_path / "c.jsonl"
    log = CarbonLog(path, max_bytes=600, backups=3).open()
    _write(log, 0)
    gen = follow(str(path), 0.01, start_at_end=True)
    assert next(gen) is None  # nothing new yet
    seen = []
    for i in range(1, 12):  # several rotations happen meanwhile
        _write(log, i)
        for rec in gen:
            if rec is None:
                break
            seen.append(rec["request_id"])
    assert seen == [f"req-{i}" for i in range(1, 12)]
    assert path.with_name("c.jsonl.1").exists()


def test_tail_subprocess_follows_live(tmp_path):
    path = tmp_path / "c.jsonl"
    log = CarbonLog(path).open()
    proc = subprocess.Popen([sys.executable, "-m", "llmco2_sidecar.cli.main", "tail", str(path), "--interval-s", "0.02"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("time")
        time.sleep(0.3)
        _write(log, 42)
        assert "req-42" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(10)
