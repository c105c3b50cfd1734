"""The runner's idle measurement: idle power and the energy counter's update period, read from a
counter that moves in steps like NVML's (about every 100 ms on recent GPUs)."""

from __future__ import annotations

import time

import pytest

from llmco2_sidecar.measure.fake_nvml import FakeNVML, constant_power_gpu
from llmco2_sidecar.profile.runner import WINDOW_UPDATES, Device, _temperature_reader, effective_min_window, measure_idle


def stepped_counter(watts: float, step_s: float):
    """Cumulative joules at ``watts`` that only change every ``step_s`` (as NVML's counter does)."""
    t0 = time.perf_counter()

    def read_j() -> float:
        steps = int((time.perf_counter() - t0) / step_s)
        return 1000.0 + watts * steps * step_s
    return read_j


def device(read_j) -> Device:
    return Device("cuda", "cuda:0", "test GPU", "999.0", "nvml:counter", read_j, lambda: None)


@pytest.mark.parametrize("step_s", [0.02, 0.1])
def test_idle_power_and_the_counter_step_are_measured(step_s):
    idle_w, period = measure_idle(device(stepped_counter(70.0, step_s)), seconds=1.0)
    assert period == pytest.approx(step_s, rel=0.15)
    assert idle_w == pytest.approx(70.0, rel=0.25)  # the window's two ends are each off by up to one step


def test_a_counter_that_never_moves_has_no_period():
    idle_w, period = measure_idle(device(lambda: 5.0), seconds=0.3)
    assert period is None and idle_w == 0.0


def test_windows_span_five_counter_steps_where_the_counter_is_coarse():
    assert WINDOW_UPDATES == 5
    assert effective_min_window(0.5, 0.1) == pytest.approx(0.5)  # NVML's usual 100 ms step: 0.5 s is five steps
    assert effective_min_window(0.5, 0.2) == pytest.approx(1.0)  # a coarser counter: raised
    assert effective_min_window(0.5, 0.02) == pytest.approx(0.5)  # a finer one: the planned window stays
    assert effective_min_window(0.1, None) == pytest.approx(0.1)  # no period seen (null meter): as planned


def test_the_temperature_reader_never_raises():
    nvml = FakeNVML([constant_power_gpu(100.0)])
    nvml.nvmlInit()
    assert _temperature_reader(nvml, 0)() == 50.0  # the fake: 30 C + 0.2 C/W x 100 W
    assert _temperature_reader(nvml, 3)() is None  # no such GPU
    nvml.nvmlShutdown()
    assert _temperature_reader(nvml, 0)() is None  # NVML shut down
