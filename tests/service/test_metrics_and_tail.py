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


def test_finish_lag_maps_the_engine_clock_to_the_sidecar_clock(tmp_path):
    """A finish stamped 0.3 s ago on the engine's clock arrives with a lag of about 0.3 s; a finish
    without a time, and one from an engine whose clocks make no sense (lag of years), are not observed."""
    port = _free_port()
    engine_now = 1000.0  # the engine's clock at open; its wall clock is the sidecar's (one host)
    with SidecarThread(make_config(tmp_path, metrics_port=port)) as sc:
        channel = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        opened = time.time()
        msg = steps_message(1, [(1, engine_now - 0.5, engine_now - 0.4, [("a", 100, 0, 100), ("b", 100, 0, 100)]),
                                (2, engine_now - 0.39, engine_now - 0.31, [("a", 1, 100, 100), ("b", 1, 100, 100),
                                                                           ("c", 50, 0, 50)])])
        msg.events.done.add(request_id="a", output_tokens=2, time_s=engine_now - 0.3)
        msg.events.done.add(request_id="b", output_tokens=2)  # no time: not observed
        acks = list(stub.StreamEvents(iter([identity(engine_clock_at_open_s=engine_now, wall_clock_at_open_s=opened),
                                            msg])))
        assert acks[-1].done_accepted == 2
        other = steps_message(1, [(1, 5.0, 5.1, [("d", 10, 0, 10)])])
        other.events.done.add(request_id="d", output_tokens=1, time_s=5.2)
        list(stub.StreamEvents(iter([identity(instance_id="engine-2", engine_clock_at_open_s=5.0,
                                              wall_clock_at_open_s=1_000.0), other])))  # wall clock of 1970
        sc.flush()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        channel.close()
    assert _value(text, "llmco2_finish_lag_seconds_count") == 1
    lag = _value(text, "llmco2_finish_lag_seconds_sum")
    assert 0.3 <= lag < 0.3 + (time.time() - opened)
    assert _value(text, "llmco2_finish_lag_seconds_bucket", '{le="0.2"}') == 0
    assert _value(text, "llmco2_finish_lag_seconds_bucket", '{le="2.0"}') == 1


def test_event_loop_lag_shows_a_blocked_loop(tmp_path):
    """A callback that blocks the sidecar's event loop for 0.6 s shows as one lag observation of
    0.35-0.6 s (it began somewhere in a 0.25 s sleep); otherwise the loop wakes on time."""
    port = _free_port()
    with SidecarThread(make_config(tmp_path, metrics_port=port)) as sc:
        time.sleep(0.6)
        scrape = lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: E731
        before = scrape()
        sc._loop.call_soon_threadsafe(time.sleep, 0.6)  # longer than the 0.25 s sample period
        time.sleep(1.0)
        after = scrape()
    n0 = _value(before, "llmco2_event_loop_lag_seconds_count")
    n1 = _value(after, "llmco2_event_loop_lag_seconds_count")
    assert n0 >= 2 and n1 > n0  # four a second
    late0 = n0 - _value(before, "llmco2_event_loop_lag_seconds_bucket", '{le="0.2"}')
    late1 = n1 - _value(after, "llmco2_event_loop_lag_seconds_bucket", '{le="0.2"}')
    assert late0 == 0 and late1 == 1
    assert _value(after, "llmco2_event_loop_lag_seconds_sum") - _value(before, "llmco2_event_loop_lag_seconds_sum") >= 0.3
