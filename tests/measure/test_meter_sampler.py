"""MeterSampler windows: interpolation between cumulative readings, fresh reads, eviction, failures."""

from __future__ import annotations

import pytest

from llmco2_sidecar.errors import InputError
from llmco2_sidecar.measure import EnergyMeter, MeterReading, MeterSampler, NullMeter, open_meters, parse_meter_spec


class ScriptedMeter(EnergyMeter):
    """Power ``watts`` per domain from t=0; time comes from a settable clock."""

    name = "scripted"

    def __init__(self, clock, watts):
        self.clock, self.watts, self.fail = clock, watts, False

    def domains(self):
        return list(self.watts)

    def read(self):
        if self.fail:
            raise RuntimeError("boom")
        t = self.clock[0]
        return MeterReading(t, {d: w * t for d, w in self.watts.items()})


def test_window_interpolates_between_readings():
    clock = [0.0]
    meter = ScriptedMeter(clock, {"gpu0": 300.0, "package-0": 100.0})
    s = MeterSampler([meter], start=False)
    for t in (0.1, 0.2, 0.3, 0.4):
        clock[0] = t
        s.sample_now()
    w = s.window(0.125, 0.375)  # both ends between readings
    assert w.complete and w.meters == ("scripted",)
    assert w.energy_j == {"gpu0": pytest.approx(75.0), "package-0": pytest.approx(25.0)}
    assert w.total_j == pytest.approx(100.0) and w.duration_s == pytest.approx(0.25)
    assert s.energy_between(0.0, 0.4) == {"gpu0": pytest.approx(120.0), "package-0": pytest.approx(40.0)}


def test_total_leaves_out_contained_domains():
    clock = [0.0]
    s = MeterSampler([ScriptedMeter(clock, {"package-0": 100.0, "core-0": 60.0, "dram-0": 10.0, "gpu0": 300.0})], start=False)
    clock[0] = 1.0
    w = s.window(0.0, 1.0)
    assert w.energy_j["core-0"] == pytest.approx(60.0)
    assert w.total_j == pytest.approx(410.0)  # core-0 is inside package-0


def test_window_ending_after_last_reading_reads_fresh():
    clock = [0.0]
    meter = ScriptedMeter(clock, {"gpu0": 10.0})
    s = MeterSampler([meter], start=False)
    clock[0] = 2.0  # no sample since t=0; the window end triggers one
    w = s.window(0.5, 2.0)
    assert w.complete and w.energy_j["gpu0"] == pytest.approx(15.0)
    w = s.window(1.0, 5.0)  # the future cannot be measured: clamped, marked incomplete
    assert not w.complete and w.covered_end_s == 2.0 and w.energy_j["gpu0"] == pytest.approx(10.0)


def test_ring_is_bounded_and_evicted_start_is_incomplete():
    clock = [0.0]
    s = MeterSampler([ScriptedMeter(clock, {"gpu0": 1.0})], capacity=5, start=False)
    for k in range(1, 20):
        clock[0] = float(k)
        s.sample_now()
    assert len(s._rings[0].times) == 5
    w = s.window(2.0, 19.0)
    assert not w.complete and w.covered_start_s == 15.0 and w.energy_j["gpu0"] == pytest.approx(4.0)
    with pytest.raises(ValueError):
        s.window(3.0, 2.0)


def test_failing_meter_is_counted_not_fatal():
    clock = [0.0]
    bad = ScriptedMeter(clock, {"gpu0": 5.0})
    good = ScriptedMeter(clock, {"package-0": 1.0})
    good.name = "good"
    s = MeterSampler([bad, good], start=False)
    bad.fail = True
    clock[0] = 1.0
    s.sample_now()
    bad.fail = False
    clock[0] = 2.0
    s.sample_now()
    assert s.errors == {"scripted": 1, "good": 0} and s.last_error["scripted"] == "boom"
    assert s.energy_between(0.0, 2.0) == {"gpu0": pytest.approx(10.0), "package-0": pytest.approx(2.0)}


def test_thread_samples_periodically():
    import time

    s = MeterSampler([NullMeter()], hz=50)
    time.sleep(0.25)
    s.close()
    assert 6 <= s.samples <= 20


def test_meter_spec_errors():
    assert parse_meter_spec(" NVML , rapl") == ["nvml", "rapl"]
    with pytest.raises(InputError, match="unknown meter 'gpu'"):
        open_meters("nvml,gpu")
    with pytest.raises(InputError, match="named twice"):
        parse_meter_spec("rapl,rapl")
    with pytest.raises(InputError, match="no meter"):
        parse_meter_spec(" , ")
    assert [m.name for m in open_meters("null")] == ["null"]
