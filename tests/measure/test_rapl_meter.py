"""RaplMeter against a fake powercap tree in a tmp dir (real files, a real writer thread)."""

from __future__ import annotations

import builtins
import os
import time
import warnings

import pytest

from llmco2_sidecar.measure import MeterSampler, RAPLPermissionError, RAPLUnavailable, open_meters
from llmco2_sidecar.measure import rapl as rapl_mod
from llmco2_sidecar.measure.fake_powercap import FakePowercap, FakeZone, PowercapWriter
from llmco2_sidecar.measure.rapl import RaplMeter, discover_zones


def test_discovers_packages_and_dram_core_subzones(tmp_path):
    FakePowercap.two_socket(tmp_path)
    (tmp_path / "intel-rapl:0:2").mkdir()
    (tmp_path / "intel-rapl:0:2" / "name").write_text("gpu\n")  # not a kept subzone
    domains = [d for d, _, _ in discover_zones(tmp_path)]
    assert domains == ["package-0", "core-0", "dram-0", "package-1", "core-1", "dram-1"]
    assert RaplMeter(tmp_path).domains() == domains


def test_counts_deltas_and_wraparound(tmp_path):
    tree = FakePowercap(tmp_path, [FakeZone("intel-rapl:0", "package-0", max_range_uj=1_000_000, energy_uj=990_000),
                                   FakeZone("intel-rapl:0:0", "dram", max_range_uj=500_000, energy_uj=10)])
    meter = RaplMeter(tmp_path, clock=lambda: 42.0)
    assert meter.read().energy_j == {"package-0": 0.0, "dram-0": 0.0}
    tree.add_energy("intel-rapl:0", 30_000)  # 990000 + 30000 wraps to 20000
    tree.add_energy("intel-rapl:0:0", 250_000)
    assert (tmp_path / "intel-rapl:0" / "energy_uj").read_text() == "20000\n"
    reading = meter.read()
    assert reading.energy_j == {"package-0": pytest.approx(0.03), "dram-0": pytest.approx(0.25)}
    assert reading.timestamp_s == 42.0
    assert meter.wraps == {"package-0": 1, "dram-0": 0}


def test_writer_thread_during_measurement_with_wraps(tmp_path):
    """A writer advances the counters every 5 ms while a 100 Hz sampler reads; package-0 wraps several times.

    No reader can see more than one wrap between two of its readings (nor can one on real hardware):
    when the loaded box delays the threads enough for that (the writer's record says when it wrote,
    the sampler's when it read), the meter must still agree to the µJ modulo the counter's range;
    otherwise it must hold every µJ written and count every wrap."""
    range_uj = 8_000_000  # 8 J range: at 40 W it wraps every 200 ms
    start_uj = range_uj - 100_000
    tree = FakePowercap(tmp_path, [FakeZone("intel-rapl:0", "package-0", range_uj, start_uj),
                                   FakeZone("intel-rapl:0:0", "dram", 10**12, 0)])
    t_open = time.time()
    meter = RaplMeter(tmp_path)
    writer = PowercapWriter(tree, {"intel-rapl:0": 40.0, "intel-rapl:0:0": 7.0}, period_s=0.005).start()
    sampler = MeterSampler([meter], hz=100)
    t0 = time.time()
    time.sleep(1.3)
    writer.stop()
    sampler.close()
    final = meter.read()  # after the writer stopped
    times = [t_open, *sampler.reading_times("rapl"), final.timestamp_s]
    # the most package-0 energy that can have been added between two consecutive readings
    most = max(writer.written_at_most_j(times[i], times[i + 2] if i + 2 < len(times) else float("inf"),
                                        ["intel-rapl:0"]) for i in range(len(times) - 1))
    aliased = most * 1e6 >= range_uj
    written = writer.total_uj["intel-rapl:0"]
    seen_uj = round(final.energy_j["package-0"] * 1e6)
    assert seen_uj % range_uj == written % range_uj  # exact, whatever the scheduling
    assert final.energy_j["dram-0"] == pytest.approx(writer.total_uj["intel-rapl:0:0"] / 1e6, abs=1e-6)
    assert writer.updates > 20 and sampler.errors["rapl"] == 0
    if aliased:
        warnings.warn(f"the box was too loaded for every wrap to be seen (up to {most:.1f} J between readings, "
                      f"range {range_uj / 1e6:.0f} J): package-0 checked modulo its range only")
        return
    assert seen_uj == written  # every µJ written, every wrap counted
    assert meter.wraps["package-0"] == (start_uj + written) // range_uj >= 5
    # the sampler's window over the run holds what the writer put in the counters over that interval,
    # given when the sampler read them (exact bounds, however late either thread ran on a loaded box)
    w = sampler.window(t0 + 0.05, t0 + 1.25)
    assert w.complete
    for dom, zone in (("package-0", "intel-rapl:0"), ("dram-0", "intel-rapl:0:0")):
        lo, hi = writer.window_bounds_j(times[1:-1], t0 + 0.05, t0 + 1.25, [zone])
        assert lo - 1e-6 <= w.energy_j[dom] <= hi + 1e-6, (dom, w.energy_j, lo, hi)


def _deny_energy_uj(monkeypatch):
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(rapl_mod, "open", fake_open, raising=False)


def test_permission_error_names_the_fix(tmp_path, monkeypatch):
    FakePowercap.two_socket(tmp_path)
    _deny_energy_uj(monkeypatch)
    with pytest.raises(RAPLPermissionError) as info:
        RaplMeter(tmp_path)
    text = str(info.value)
    assert "permission denied" in text and "intel-rapl:0/energy_uj" in text
    assert "CVE-2020-8694" in text and "sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj" in text
    assert "udev" in text
    reasons: dict[str, str] = {}
    assert open_meters("rapl", rapl_root=tmp_path, skip_unavailable=True, reasons=reasons) == []
    assert "chmod o+r" in reasons["rapl"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files; the monkeypatched test covers it")
def test_permission_error_from_file_mode(tmp_path):  # pragma: no cover - CI runs as root here
    tree = FakePowercap.two_socket(tmp_path)
    tree.chmod_energy("intel-rapl:0", 0o000)
    with pytest.raises(RAPLPermissionError, match="chmod o\\+r"):
        RaplMeter(tmp_path)


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(RAPLUnavailable, match="does not exist"):
        RaplMeter(tmp_path / "nope")
    with pytest.raises(RAPLUnavailable, match="no intel-rapl zone"):
        RaplMeter(tmp_path)


def test_garbage_counter_is_a_read_error(tmp_path):
    FakePowercap.two_socket(tmp_path)
    meter = RaplMeter(tmp_path)
    (tmp_path / "intel-rapl:1:1" / "energy_uj").write_text("garbage\n")
    with pytest.raises(rapl_mod.RAPLReadError, match="expected an integer"):
        meter.read()


def test_writer_window_bounds_are_exact_and_catch_a_wrong_reading(tmp_path):
    """The bounds tests use in place of watts x duration: a tick seen late or early moves them, a
    reader that scales, shifts or drops energy falls outside."""
    tree = FakePowercap(tmp_path, [FakeZone("intel-rapl:0", "package-0", 10**12, 0)])
    writer = PowercapWriter(tree, {"intel-rapl:0": 1.0})
    # ticks begun at 1.0 and 2.0 (files written 10 ms later), 1 J each; readings stamped 0.5, 1.5, 2.5
    writer.history = [(0.0, 0.0, {"intel-rapl:0": 0}), (1.0, 1.01, {"intel-rapl:0": 1_000_000}),
                      (2.0, 2.01, {"intel-rapl:0": 2_000_000})]
    times = [0.5, 1.5, 2.5]
    assert writer.window_bounds_j(times, 0.5, 2.5) == (1.0, 2.0)  # 0..1 J seen at 0.5, 2 J at 2.5
    assert writer.window_bounds_j(times, 1.5, 2.5) == (0.0, 1.0)
    assert writer.window_bounds_j(times, 1.5, 1.5) == (0.0, 1.0)
    assert writer.written_at_most_j(0.5, 2.5) == 2.0 and writer.written_at_most_j(1.005, 2.0) == 2.0
    assert writer.written_at_most_j(1.02, 1.9) == 0.0
