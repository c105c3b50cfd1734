"""Our own idle readings: a profiling run's provenance line -> rows of idle_readings.csv -> the
catalog rule, where they replace the public readings of their GPU and context."""

from __future__ import annotations

import shutil

import pytest

from llmco2_sidecar.errors import InputError
from llmco2_sidecar.hardware.idle import READINGS, add_measured, catalog_idle, idle_from_readings, load_readings, main
from llmco2_sidecar.hardware.idle_measured import readings_from_measurement
from llmco2_sidecar.profile.idle_state import GPUState, IdleMeasurement
from llmco2_sidecar.profile.plan import smoke_plan
from llmco2_sidecar.profile.runner import Device, provenance_line

VERSIONS = {"cuda": "12.4", "torch": "2.5.1", "transformers": "4.46.0", "nvidia-ml-py": "12.560.30", "python": "3.11.7"}


def run_file(tmp_path, name="h100.csv", gpu="NVIDIA H100 80GB HBM3", meter="nvml:counter", bare_w=84.2, ctx_w=118.6,
             bare_state=GPUState("P0", 0.0, 1.0, 700.0, 0), ctx_state=GPUState("P0", 0.0, 520.0, 700.0, 1)):
    """A measurement CSV whose first line is what the harness writes (runner.provenance_line)."""
    dev = Device("cuda", "cuda:0", gpu, "550.127.05", meter, lambda: 0.0, lambda: None)
    plan = smoke_plan(5, 0.5)
    bare = None if bare_w is None else IdleMeasurement(bare_w, 5.0, bare_state, "energy counter")
    line = provenance_line(dev, VERSIONS, plan, "llmco2 profile --out h100.csv", ctx_w, 0.1, 0.5, bare, ctx_state)
    path = tmp_path / name
    path.write_text(line + "\ngpu_name,driver\n")
    return path


def test_a_run_gives_a_bare_and_a_context_reading(tmp_path):
    bare, ctx = readings_from_measurement(run_file(tmp_path))
    assert (bare.gpu, bare.watts, bare.context, bare.perf_state, bare.util_pct, bare.power_cap_w) == \
        ("H100-SXM5-80GB", 84.2, "none", "P0", 0.0, 700.0)
    assert (ctx.watts, ctx.context, ctx.memory_used_mib) == (118.6, "cuda", 520.0)
    assert bare.source_url == "data/measurements/h100.csv" and len(bare.date) == 10
    assert "before the harness created its CUDA context" in bare.note and "550.127.05" in bare.note


def test_a_run_without_the_bare_window_gives_the_context_reading_only(tmp_path):
    (ctx,) = readings_from_measurement(run_file(tmp_path, bare_w=None))
    assert ctx.context == "cuda"


@pytest.mark.parametrize("kwargs, field", [
    ({"meter": "fake-nvml:counter 150 W (smoke, not a measurement)"}, "provenance.meter"),
    ({"gpu": "NVIDIA Quantum Q9000"}, "provenance.gpu"),
    ({"bare_state": GPUState("P0", 0.0, 300.0, 700.0, 1)}, "idle_bare_state"),  # somebody else on the GPU
    ({"bare_state": GPUState("P0", 0.0, 1.0, 700.0, None)}, "idle_bare_state"),  # nobody can tell
    ({"ctx_state": GPUState("P0", 35.0, 520.0, 700.0, 1)}, "idle_ctx_state"),  # not idle
    ({"ctx_state": GPUState()}, "idle_ctx_state"),
])
def test_a_reading_that_is_not_idle_or_not_ours_is_refused_naming_the_field(tmp_path, kwargs, field):
    with pytest.raises(InputError) as err:
        readings_from_measurement(run_file(tmp_path, **kwargs))
    assert field in str(err.value)


def test_add_measured_appends_once_and_own_readings_replace_the_public_ones(tmp_path):
    readings = tmp_path / "idle_readings.csv"
    shutil.copy(READINGS, readings)
    before = catalog_idle("H100-SXM5-80GB", 700.0, "hopper", load_readings(readings))
    assert "public readings" in before.idle_w_source
    f = run_file(tmp_path)
    assert add_measured([f], readings) == 2
    assert add_measured([f], readings) == 0  # already there
    rows = load_readings(readings)  # the file stays valid, and reads back what was written
    assert rows[-2:] == readings_from_measurement(f)
    assert len(rows) == len(load_readings(READINGS)) + 2
    after = catalog_idle("H100-SXM5-80GB", 700.0, "hopper", rows)
    assert (after.idle_w, after.idle_ctx_w) == (84.2, 118.6)
    assert after.idle_w_source.startswith("MEASURED by this project") and "one run" in after.idle_w_source
    assert (after.n_bare, after.n_ctx) == (1, 1)  # the figures rest on our run alone (the public rows stay in the file)
    # another GPU's figures do not move
    assert catalog_idle("B200", 1000.0, "blackwell", rows) == catalog_idle("B200", 1000.0, "blackwell", load_readings(READINGS))


def test_two_own_runs_give_their_median(tmp_path):
    own = readings_from_measurement(run_file(tmp_path, "a.csv", bare_w=80.0, ctx_w=110.0)) + \
        readings_from_measurement(run_file(tmp_path, "b.csv", bare_w=90.0, ctx_w=120.0))
    public = [r for r in load_readings(READINGS) if r.gpu == "H100-SXM5-80GB"]
    fig = idle_from_readings(public + own, 700.0, "hopper")
    assert (fig.idle_w, fig.idle_ctx_w) == (85.0, 115.0) and "median of 2 runs" in fig.idle_ctx_w_source


def test_cli_add_measured_reports_and_a_bad_file_exits_2(tmp_path, capsys):
    readings = tmp_path / "idle_readings.csv"
    shutil.copy(READINGS, readings)
    code = main(["--readings", str(readings), "--add-measured", str(run_file(tmp_path))])
    out = capsys.readouterr().out
    assert "added 2 readings" in out and code == 1  # the catalog now differs for H100 (until --write)
    bad = run_file(tmp_path, "bad.csv", meter="null (no energy meter)")
    assert main(["--readings", str(readings), "--add-measured", str(bad)]) == 2
    assert "provenance.meter" in capsys.readouterr().err
