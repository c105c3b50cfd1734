"""NvmlMeter against recorded readings replayed through FakeNVML (no GPU here), and the real pynvml."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llmco2_sidecar.measure import (MeterSampler, NVMLPermissionError, NVMLReadError, NVMLUnavailable,
                                    open_meters)
from llmco2_sidecar.measure.fake_nvml import FakeNVML, RecordedGPU, constant_power_gpu
from llmco2_sidecar.measure.nvml import NvmlMeter

DATA = Path(__file__).with_name("data")


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_counter_path_two_gpus_with_a_reset():
    clock = Clock(0.0)
    fake = FakeNVML.from_recording(DATA / "nvml_2gpu_counter_reset.json", clock=clock)
    meter = NvmlMeter(nvml=fake, clock=clock)
    assert meter.domains() == ["gpu0", "gpu1"]
    assert meter.modes == {"gpu0": "counter", "gpu1": "counter"}
    assert meter.driver_version == "550.54.15"
    seen = {}
    for t in (0.1, 0.2, 0.3, 0.4, 0.5):
        clock.t = t
        seen[t] = meter.read()
    assert seen[0.2].energy_j["gpu0"] == pytest.approx(42.1)
    assert seen[0.5].energy_j["gpu0"] == pytest.approx(91.3)
    assert seen[0.3].energy_j["gpu1"] == pytest.approx(30.0)
    # restart at 0.35: the counter then holds 2 J (since the restart); +5 J by 0.4, +10 J by 0.5
    assert seen[0.4].energy_j["gpu1"] == pytest.approx(37.0)
    assert seen[0.5].energy_j["gpu1"] == pytest.approx(47.0)
    assert meter.resets == {"gpu0": 0, "gpu1": 1}
    assert seen[0.5].timestamp_s == 0.5
    # cumulative readings never decrease, reset or not
    for dom in ("gpu0", "gpu1"):
        values = [seen[t].energy_j[dom] for t in sorted(seen)]
        assert values == sorted(values)
    meter.close()
    assert fake.initialised == 0  # nvmlShutdown balanced nvmlInit


def test_gpu_subset():
    clock = Clock(0.0)
    fake = FakeNVML.from_recording(DATA / "nvml_2gpu_counter_reset.json", clock=clock)
    meter = NvmlMeter(nvml=fake, gpu_indices=[1], clock=clock)
    clock.t = 0.2
    assert meter.read().energy_j == {"gpu1": pytest.approx(20.0)}
    with pytest.raises(NVMLUnavailable, match="out of range"):
        NvmlMeter(nvml=FakeNVML.from_recording(DATA / "nvml_2gpu_counter_reset.json", clock=clock), gpu_indices=[2])


def test_power_path_trapezoid_on_replayed_samples():
    clock = Clock(0.0)
    fake = FakeNVML.from_recording(DATA / "nvml_power_only.json", clock=clock)
    meter = NvmlMeter(nvml=fake, clock=clock, start_thread=False)
    assert meter.modes == {"gpu0": "power"}
    for k in range(1, 8):
        clock.t = k / 10
        meter.sample_power()
    clock.t = 0.8
    reading = meter.read()
    # 60 W for 0.2 s + 250 W for 0.4 s + 60 W for 0.2 s = 124 J; trapezoids over 0.1 s samples give the same
    assert reading.energy_j["gpu0"] == pytest.approx(124.0)
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1  # probed once, then never again


def test_power_path_background_thread_integrates_live_power():
    gpu = constant_power_gpu(250.0, counter=False)
    meter = NvmlMeter(nvml=FakeNVML([gpu]), power_sample_hz=100.0)
    try:
        start = meter.read()
        time.sleep(0.3)
        end = meter.read()
    finally:
        meter.close()
    joules = end.energy_j["gpu0"] - start.energy_j["gpu0"]
    assert joules == pytest.approx(250.0 * (end.timestamp_s - start.timestamp_s), rel=1e-6)
    assert meter._gpus[0].samples > 10  # the thread sampled in between


def test_mixed_counter_and_power_gpus():
    clock = Clock(0.0)
    fake = FakeNVML([RecordedGPU(energy_mj=[(0.0, 5000), (1.0, 105000)], power_mw=[(0.0, 1)]),
                     RecordedGPU(energy_mj=None, power_mw=[(0.0, 100000)])], clock=clock)
    meter = NvmlMeter(nvml=fake, clock=clock, start_thread=False)
    clock.t = 1.0
    assert meter.read().energy_j == {"gpu0": pytest.approx(100.0), "gpu1": pytest.approx(100.0)}


@pytest.mark.parametrize("kind", ["DriverNotLoaded", "LibraryNotFound"])
def test_init_errors_map_to_unavailable(kind):
    fake = FakeNVML([RecordedGPU(energy_mj=[(0, 0)])], init_error=kind)
    with pytest.raises(NVMLUnavailable, match="NVML init"):
        NvmlMeter(nvml=fake)


def test_no_permission_maps_to_permission_error():
    fake = FakeNVML([RecordedGPU(energy_mj=[(0, 0)], errors=[("nvmlDeviceGetTotalEnergyConsumption", 0, 1e12, "NoPermission")])],
                    clock=lambda: 1.0)
    with pytest.raises(NVMLPermissionError, match="root"):
        NvmlMeter(nvml=fake, clock=lambda: 1.0)
    assert fake.initialised == 0  # shut down after the failed open


def test_gpu_with_neither_counter_nor_power_is_unavailable():
    fake = FakeNVML([RecordedGPU(energy_mj=None, power_mw=None)])
    with pytest.raises(NVMLUnavailable, match="neither"):
        NvmlMeter(nvml=fake)


def test_read_error_mid_run_is_typed_and_recoverable():
    clock = Clock(0.0)
    fake = FakeNVML([RecordedGPU(energy_mj=[(0.0, 0), (1.0, 1000), (2.0, 2000), (3.0, 3000)],
                                 errors=[("nvmlDeviceGetTotalEnergyConsumption", 1.5, 2.5, "GpuIsLost")])], clock=clock)
    meter = NvmlMeter(nvml=fake, clock=clock)
    clock.t = 1.0
    assert meter.read().energy_j["gpu0"] == pytest.approx(1.0)
    clock.t = 2.0
    with pytest.raises(NVMLReadError, match="GPU 0"):
        meter.read()
    clock.t = 3.0
    assert meter.read().energy_j["gpu0"] == pytest.approx(3.0)  # nothing lost: the counter is cumulative


def test_sampler_survives_nvml_errors():
    clock = Clock(0.0)
    fake = FakeNVML([RecordedGPU(energy_mj=[(0.0, 0), (1.0, 1000), (2.0, 2000), (3.0, 3000)],
                                 errors=[("nvmlDeviceGetTotalEnergyConsumption", 1.5, 2.5, "Unknown")])], clock=clock)
    meter = NvmlMeter(nvml=fake, clock=clock)
    sampler = MeterSampler([meter], start=False)
    for t in (1.0, 2.0, 3.0):
        clock.t = t
        sampler.sample_now()
    assert sampler.errors["nvml"] == 1
    assert sampler.energy_between(0.0, 3.0)["gpu0"] == pytest.approx(3.0)


def test_real_pynvml_without_a_driver_is_unavailable(pynvml_without_driver):
    """This machine has nvidia-ml-py but no NVIDIA driver: the real binding must map to NVMLUnavailable."""
    with pytest.raises(NVMLUnavailable):
        NvmlMeter()
    reasons: dict[str, str] = {}
    assert open_meters("nvml", skip_unavailable=True, reasons=reasons) == []
    assert reasons["nvml"].startswith("NVML init")
