"""Bare idle power (before the harness's CUDA context exists) and the GPU state beside each idle
reading, against the fake NVML (same function names and return shapes as pynvml)."""

from __future__ import annotations

import pytest

from llmco2_sidecar.measure.fake_nvml import FakeNVML, RecordedGPU, constant_power_gpu
from llmco2_sidecar.profile.idle_state import GPUState, gpu_state, measure_bare_idle


def test_bare_idle_from_the_energy_counter_of_every_gpu():
    nvml = FakeNVML([constant_power_gpu(85.0), constant_power_gpu(61.0)])
    out = measure_bare_idle(nvml, seconds=0.3, settle_s=0.0)
    assert sorted(out) == [0, 1]
    assert out[0].watts == pytest.approx(85.0, rel=0.03) and out[1].watts == pytest.approx(61.0, rel=0.03)
    assert out[0].source == "energy counter" and out[0].seconds >= 0.3
    assert out[0].state == GPUState("P0", 0.0, 0.0, 700.0, 0)
    assert nvml.initialised == 0  # NVML shut down again: the harness opens its own meter afterwards


def test_bare_idle_from_power_samples_where_the_gpu_has_no_counter():
    gpu = constant_power_gpu(72.0, counter=False)
    out = measure_bare_idle(FakeNVML([gpu]), seconds=0.2, settle_s=0.0, poll_s=0.01)
    assert out[0].watts == pytest.approx(72.0) and out[0].source == "power samples"


def test_state_says_who_else_is_on_the_gpu_and_leaves_unknowns_unknown():
    busy = RecordedGPU(energy_mj=[(0.0, 0.0)], power_mw=[(0.0, 90_000.0)], perf_state=2, util_pct=0,
                       memory_used_bytes=512 * 2**20, power_limit_mw=400_000, process_pids=[4242])
    bare = RecordedGPU(energy_mj=[(0.0, 0.0)], perf_state=None, util_pct=None, memory_used_bytes=None,
                       power_limit_mw=None, process_pids=None)
    nvml = FakeNVML([busy, bare])
    nvml.nvmlInit()
    s = gpu_state(nvml, 0)
    assert s == GPUState("P2", 0.0, 512.0, 400.0, 1)
    assert s.text() == "P2/util 0%/mem 512 MiB/cap 400 W/1 processes"
    assert gpu_state(nvml, 1) == GPUState()  # every query NotSupported: all unknown, nothing raised
    assert GPUState().text() == "?/?/?/?/?"


@pytest.mark.parametrize("state", [GPUState("P0", 0.0, 1.0, 700.0, 0), GPUState("P8", 3.0, 0.5, 300.0, 2), GPUState(),
                                   GPUState(perf_state="P0", processes=1)])
def test_state_text_round_trips(state):
    assert GPUState.parse(state.text()) == state
    assert ";" not in state.text()  # a provenance value never holds the item separator


def test_init_failure_is_raised_for_the_caller_to_report():
    with pytest.raises(Exception):
        measure_bare_idle(FakeNVML([RecordedGPU()], init_error="DriverNotLoaded"), seconds=0.1, settle_s=0.0)


def test_without_a_driver_the_run_goes_on_without_the_bare_figure(capsys, pynvml_without_driver):
    """The real nvidia-ml-py on a machine without the NVIDIA driver: nvmlInit fails; the harness logs it
    and measures the rest (the bare figure is then n/a in the provenance line)."""
    import argparse

    from llmco2_sidecar.cli.profile import _bare_idle

    assert _bare_idle("nvml", argparse.Namespace(idle_seconds=0.1)) == {}
    assert "bare idle power not measured" in capsys.readouterr().err
    assert _bare_idle("null", argparse.Namespace(idle_seconds=0.1)) == {}
