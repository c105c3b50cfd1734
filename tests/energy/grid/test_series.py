"""IntensitySeries: hourly CSV files, lookups by time, errors naming the line and field."""

from __future__ import annotations

import pytest

from llmco2_sidecar.energy.grid.series import IntensityReading, IntensitySeries, parse_timestamp

T0 = 1796551200.0  # 2026-12-06T10:00:00Z


def write(tmp_path, text, name="grid.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_iso_and_unix_timestamps():
    assert parse_timestamp("2026-12-06T10:00:00Z") == T0
    assert parse_timestamp("2026-12-06T10:00Z") == T0
    assert parse_timestamp("2026-12-06 10:00") == T0  # no offset: UTC
    assert parse_timestamp("2026-12-06T11:00:00+01:00") == T0
    assert parse_timestamp(str(int(T0))) == T0
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")


def test_hourly_csv_lookup_and_mean(tmp_path):
    p = write(tmp_path, "timestamp,g_per_kwh\n# a comment\n2026-12-06T10:00:00Z,200\n\n"
                        "2026-12-06T11:00:00Z,300\n2026-12-06T12:00:00Z,100.5\n")
    s = IntensitySeries.from_csv(p)
    assert len(s) == 3
    r = s.at(T0 + 1800)
    assert r == IntensityReading(200.0, "location", "csv:grid.csv", T0)
    assert s.at(T0 + 3600).g_per_kwh == 300.0  # a period starts at its timestamp
    assert s.at(T0 + 3599.9).g_per_kwh == 200.0
    assert s.at(T0 + 2 * 3600 + 3599).g_per_kwh == 100.5  # the last row holds for one step (1 h)
    assert s.mean_g_per_kwh() == pytest.approx((200 + 300 + 100.5) / 3)
    assert s.step_s == 3600.0
    with pytest.raises(ValueError, match="outside the series"):
        s.at(T0 + 3 * 3600)
    with pytest.raises(ValueError, match="outside the series"):
        s.at(T0 - 1)
    assert s.at(T0 - 1, clamp=True).g_per_kwh == 200.0
    assert s.at(T0 + 10 * 3600, clamp=True).g_per_kwh == 100.5


def test_marginal_kind_and_source(tmp_path):
    p = write(tmp_path, f"{T0:.0f},420\n{T0 + 3600:.0f},410\n")
    s = IntensitySeries.from_csv(p, kind="marginal", source="watttime:CAISO_NORTH history")
    r = s.at(T0 + 10)
    assert (r.kind, r.source, r.g_per_kwh) == ("marginal", "watttime:CAISO_NORTH history", 420.0)
    with pytest.raises(ValueError, match="kind"):
        IntensitySeries.from_csv(p, kind="market")


@pytest.mark.parametrize("text, where", [
    ("timestamp,g_per_kwh\n2026-12-06T10:00Z,200\n2026-12-06T11:00Z,abc\n", "line 3: g_per_kwh"),
    ("2026-12-06T10:00Z,200\nnot-a-time,300\n", "line 2: timestamp"),
    ("2026-12-06T10:00Z,200\n2026-12-06T10:00Z,300\n", "line 2: timestamp"),  # not increasing
    ("2026-12-06T11:00Z,200\n2026-12-06T10:00Z,300\n", "line 2: timestamp"),
    ("2026-12-06T10:00Z,-5\n", "line 1: g_per_kwh"),
    ("2026-12-06T10:00Z,2500\n", "line 1: g_per_kwh"),
    ("2026-12-06T10:00Z,nan\n", "line 1: g_per_kwh"),
    ("2026-12-06T10:00Z,200,extra\n", "line 1"),
    ("timestamp,carbon\n2026-12-06T10:00Z,200\n", "line 1"),
])
def test_bad_rows_name_line_and_field(tmp_path, text, where):
    p = write(tmp_path, text)
    with pytest.raises(ValueError) as info:
        IntensitySeries.from_csv(p)
    assert where in str(info.value)
    assert str(p) in str(info.value)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        IntensitySeries.from_csv(write(tmp_path, "timestamp,g_per_kwh\n"))
    with pytest.raises(ValueError, match="cannot read"):
        IntensitySeries.from_csv(tmp_path / "nope.csv")
