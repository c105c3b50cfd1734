"""The CPU smoke run: a tiny random-weight model through every code path of the harness, as a real
subprocess writing a real CSV (the fake NVML meter draws a constant 150 W, so J/s must be 150)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from llmco2_sidecar.profile.runner import COLUMNS, CsvSink  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONTRACT = ("gpu_name", "driver", "torch_version", "transformers_version", "model", "layers", "batch", "prompt",
            "output", "tp", "prefill_j", "decode_j", "prefill_s", "decode_s", "idle_w", "repetitions", "spread")


def test_smoke_run_writes_a_valid_csv(tmp_path):
    out = tmp_path / "smoke.csv"
    proc = subprocess.run([sys.executable, "-m", "llmco2_sidecar.profile", "--device", "cpu", "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text().splitlines()
    prov = text[0]
    assert prov.startswith("# provenance: gpu=CPU")
    fields = dict(item.split("=", 1) for item in prov[len("# provenance: "):].split("; "))
    for key in ("gpu", "driver", "date", "torch", "transformers", "nvidia-ml-py", "meter", "command"):
        assert fields[key], key
    assert "not a measurement" in fields["meter"]
    # idle twice: bare (before the context; nobody on the fake GPU) and with this process's context
    assert float(fields["idle_bare_w"]) == pytest.approx(150.0, rel=0.05)
    assert fields["idle_bare_state"].endswith("/0 processes") and fields["idle_ctx_state"].endswith("/1 processes")
    assert "bare idle power of GPU 0" in proc.stderr
    rows = list(csv.DictReader(text[1:]))
    assert tuple(rows[0].keys()) == COLUMNS and COLUMNS[:len(CONTRACT)] == CONTRACT
    assert [(r["batch"], r["prompt"], r["output"]) for r in rows] == [("1", "16", "4"), ("2", "32", "8"), ("4", "8", "1")]
    for r in rows:
        assert r["model"] == "smoke/llama-tiny" and r["layers"] == "2" and r["tp"] == "1" and r["repetitions"] == "5"
        assert float(r["idle_w"]) == pytest.approx(150.0, rel=0.05)
        pre_j, pre_s = float(r["prefill_j"]), float(r["prefill_s"])
        assert pre_s > 0 and pre_j / pre_s == pytest.approx(150.0, rel=0.25)  # energy and time windows line up
        assert int(r["prefill_inner"]) >= 1 and float(r["spread"]) >= 0
        assert float(r["temp_start_c"]) == float(r["temp_end_c"]) == 60.0  # the fake GPU: 30 C + 0.2 C/W x 150 W
        if int(r["output"]) > 1:
            dec_j, dec_s = float(r["decode_j"]), float(r["decode_s"])
            assert int(r["decode_steps"]) == int(r["output"]) - 1 and int(r["decode_inner"]) >= 1
            assert dec_s > 0 and dec_j / dec_s == pytest.approx(150.0, rel=0.25)
        else:
            assert float(r["decode_j"]) == 0.0 and r["decode_inner"] == "0"
    progress = [ln for ln in proc.stderr.splitlines() if ln.startswith("[profile")]
    assert any("3/3" in ln for ln in progress) and any("idle power" in ln for ln in progress)


def test_rows_are_flushed_as_written(tmp_path):
    path = tmp_path / "partial.csv"
    with open(path, "w", newline="") as fh:
        sink = CsvSink(fh, "# provenance: gpu=x")
        sink.write({c: "1" for c in COLUMNS})
        # another reader sees the row before the file is closed (a run killed now keeps it)
        seen = path.read_text().splitlines()
        assert seen[0] == "# provenance: gpu=x" and len(seen) == 3


def test_measure_point_counts_inner_repetitions():
    """In-process: a phase shorter than the minimum window is repeated inside it and divided back."""
    from llmco2_sidecar.profile.hf_model import build_model
    from llmco2_sidecar.profile.plan import PlanPoint, smoke_spec
    from llmco2_sidecar.profile.runner import Device, measure_point

    reads = []

    def read_j() -> float:
        reads.append(1)
        return float(len(reads))  # +1 J per read

    dev = Device("cpu", "cpu", "cpu", "", "test", read_j, lambda: None)
    lm = build_model(smoke_spec(), 2, "cpu", "float32")
    r = measure_point(lm, dev, PlanPoint("m", 2, 1, 8, 3, "smoke"), repetitions=3, min_window_s=0.05)
    assert len(reads) == 3 * 3  # three reads per repetition
    assert r.prefill_inner > 1 and r.decode_inner >= 1
    assert r.prefill_j == pytest.approx(1.0 / r.prefill_inner)
    assert r.decode_j == pytest.approx(1.0 / r.decode_inner)
    assert r.prefill_s * r.prefill_inner >= 0.05 * 0.3  # the window reached (most of) the minimum
    assert r.spread == pytest.approx(0.0)
