"""``llmco2 measure`` as a real subprocess over a fake powercap tree changed by a writer thread."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmco2_sidecar.cli.measure import measure
from llmco2_sidecar.measure.fake_nvml import FakeNVML
from llmco2_sidecar.measure.fake_powercap import FakePowercap, PowercapWriter

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).with_name("data")


def _llmco2(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmco2_sidecar.cli.main", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_measure_json_over_fake_tree(tmp_path):
    tree = FakePowercap.two_socket(tmp_path)
    watts = {"intel-rapl:0": 80.0, "intel-rapl:0:1": 12.0, "intel-rapl:1": 60.0}
    with PowercapWriter(tree, watts, period_s=0.005) as writer:
        launched = time.time()
        proc = _llmco2("measure", "--seconds", "1", "--rapl-root", str(tmp_path), "--json")
        exited = time.time()
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"seconds", "rapl", "nvml"}
    assert out["seconds"] == 1 and out["nvml"] is None
    assert set(out["rapl"]) == {"package-0", "core-0", "dram-0", "package-1", "core-1", "dram-1"}
    for dom, zone in (("package-0", "intel-rapl:0"), ("dram-0", "intel-rapl:0:1"), ("package-1", "intel-rapl:1")):
        # never more than the writer put in the counter while the command ran (exact, whatever the
        # load), and at least half of watts x the 1 s asked (the writer thread can stall on a loaded
        # box; the sampler's arithmetic is bounded exactly in test_rapl_meter/test_measured)
        assert watts[zone] * 0.5 <= out["rapl"][dom] <= writer.written_at_most_j(launched, exited, [zone]) + 1e-6, dom
    assert out["rapl"]["core-1"] == 0.0  # that counter never moved
    # no NVIDIA driver here: one line on stderr says why nvml is null
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith("llmco2 measure: nvml unavailable: NVML init")


def test_measure_table_and_bad_input(tmp_path):
    FakePowercap.two_socket(tmp_path)
    proc = _llmco2("measure", "--seconds", "0.2", "--rapl-root", str(tmp_path), "--meters", "rapl")
    assert proc.returncode == 0, proc.stderr
    assert "avg_power_w" in proc.stdout and "package-1" in proc.stdout and proc.stderr == ""
    bad = _llmco2("measure", "--seconds", "0", "--json")
    assert bad.returncode == 2 and "seconds" in bad.stderr and bad.stdout == ""
    bad = _llmco2("measure", "--meters", "nvml,joulemeter")
    assert bad.returncode == 2 and "unknown meter 'joulemeter'" in bad.stderr


def test_measure_missing_tree_reports_reason(tmp_path):
    proc = _llmco2("measure", "--seconds", "0.1", "--rapl-root", str(tmp_path / "none"), "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["rapl"] is None
    assert "rapl unavailable: RAPL: powercap root" in proc.stderr


def test_measure_nvml_keys_are_gpu_indices(tmp_path):
    """In-process, with replayed NVML (live-clock offset so the recording spans the measurement)."""
    import time

    fake = FakeNVML.from_recording(DATA / "nvml_2gpu_counter_reset.json", time_offset_s=time.time())
    result, reasons = measure(0.6, "nvml", nvml=fake)
    assert result["rapl"] is None and reasons == {"rapl": "not requested (--meters)"}
    assert set(result["nvml"]) == {"0", "1"}
    assert result["nvml"]["0"] == pytest.approx(91.3, abs=8.0)  # whole recording, up to one 0.1 s step
    assert result["nvml"]["1"] == pytest.approx(47.0, abs=11.0)
