"""--grid sources: parsing, static/csv, and live polling with stale keeping and static fallback."""

from __future__ import annotations

import copy
import logging
import time

import pytest
from prometheus_client import generate_latest

from llmco2_sidecar.energy.grid.sources import (
    CsvSource, GridSpec, LiveSource, open_source, parse_grid, reading_once, static_reading)
from llmco2_sidecar.errors import InputError
from llmco2_sidecar.service.metrics import SidecarMetrics

from grid_fakes import EM_LATEST, T10, UK_NATIONAL, WT_FORECAST, FakeApi


@pytest.fixture(autouse=True)
def wall_at_the_payloads_time(monkeypatch):
    """The documented payloads' readings begin 2026-12-06T10:00Z: judge their age from 10:05 that day."""
    monkeypatch.setattr(LiveSource, "wall", staticmethod(lambda: T10 + 300))


@pytest.fixture
def api():
    a = FakeApi()
    yield a
    a.close()


def test_parse_grid():
    assert parse_grid(None) == GridSpec("static", "world")
    assert parse_grid("static:DE") == GridSpec("static", "de")
    assert parse_grid("electricitymaps:DE", "http://127.0.0.1:9/v3") == GridSpec("electricitymaps", "DE", "http://127.0.0.1:9/v3")
    assert parse_grid("ukci") == GridSpec("ukci", "")
    assert parse_grid("ukci:13").arg == "13"
    assert parse_grid("csv:/tmp/x.csv").arg == "/tmp/x.csv"
    for bad, field in [("solar:XX", "grid"), ("static:atlantis", "region"), ("electricitymaps", "grid"),
                       ("ukci:99", "grid"), ("watttime:", "grid")]:
        with pytest.raises(InputError) as info:
            parse_grid(bad)
        assert info.value.field == field, bad
    with pytest.raises(InputError, match="grid_url"):
        parse_grid("static:de", "http://x")
    with pytest.raises(InputError, match="grid_url"):
        parse_grid("ukci", "ftp://x")
    with pytest.raises(InputError, match="grid_url: a base URL needs an API source"):
        parse_grid(None, "http://127.0.0.1:9")


def test_static_reading_names_table_source():
    r = open_source("static:de").reading()
    assert r.kind == "location" and r.source.startswith("static:de (") and r.g_per_kwh > 0
    assert r == static_reading("de")


def test_csv_source_falls_back_outside_series(tmp_path, caplog):
    p = tmp_path / "g.csv"
    p.write_text("timestamp,g_per_kwh\n2026-12-06T10:00Z,100\n2026-12-06T11:00Z,300\n")
    src = open_source(f"csv:{p}", fallback_region="fr")
    assert isinstance(src, CsvSource)
    t10 = 1796551200.0
    assert src.reading(t10 + 4000).g_per_kwh == 300.0
    with caplog.at_level(logging.WARNING, "llmco2.grid"):
        r = src.reading(t10 - 10)
        src.reading(t10 - 20)
    assert r.g_per_kwh == static_reading("fr").g_per_kwh
    assert "fallback: outside csv:g.csv" in r.source
    assert sum("does not cover" in m for m in caplog.messages) == 1  # said once


def test_live_stale_then_fallback_then_recovery(api, caplog):
    clock = [1000.0]
    api.set("/intensity", 200, UK_NATIONAL)
    src = open_source(parse_grid("ukci", api.url), fallback_region="world", ttl_s=60, stale_s=600)
    assert isinstance(src, LiveSource)
    src.clock = lambda: clock[0]
    metrics = SidecarMetrics()
    src.bind_metrics(metrics)
    assert src.state == "starting" and "not read yet" in src.reading().source  # before the first poll: static
    src.poll_once()
    assert src.state == "live" and src.reading().g_per_kwh == 182.0
    # the API starts failing: the last good value is kept for stale_s
    api.set("/intensity", 500, {"error": {"code": "500 Internal Server Error", "message": "down"}})
    clock[0] += 60
    with caplog.at_level(logging.INFO, "llmco2.grid"):
        src.poll_once()
        r = src.reading()
        assert src.state == "stale" and r.g_per_kwh == 182.0 and "stale: polls failing since" in r.source
        clock[0] += 400
        src.poll_once()
        assert src.state == "stale"
        clock[0] += 201  # 661 s since the last good poll > stale_s: the static region
        assert src.reading().g_per_kwh == static_reading("world").g_per_kwh  # noticed on read, no poll needed
        assert src.state == "fallback" and "fallback: ukci failing since" in src.reading().source
        src.poll_once()
        assert src.state == "fallback"
        text = generate_latest(metrics.registry).decode()
        assert "llmco2_grid_fallback 1.0" in text
        assert 'llmco2_grid_polls_total{outcome="error"} 3.0' in text
        assert 'state="fallback"' in text
        # it answers again
        api.set("/intensity", 200, UK_NATIONAL)
        src.poll_once()
    assert src.state == "live" and src.reading().source == "ukci:national (forecast)"
    text = generate_latest(metrics.registry).decode()
    assert "llmco2_grid_fallback 0.0" in text and "llmco2_grid_intensity_g_per_kwh 182.0" in text
    assert "llmco2_grid_reading_timestamp_seconds 1.7965512e+09" in text
    msgs = "\n".join(caplog.messages)
    assert "keeping the reading of 2026-12-06T10:00:00Z (182 gCO2e/kWh) for up to 540 s more, then static:world" in msgs
    assert "older than 600 s: using static:world" in msgs and "answers again" in msgs
    assert msgs.count("keeping the reading") == 1  # each change said once, not per poll


def test_live_never_read_goes_to_fallback(api):
    api.set("/v3/carbon-intensity/latest", 401, {"error": "Invalid auth-token"})
    src = open_source(parse_grid("electricitymaps:DE", api.url + "/v3"), env={"ELECTRICITYMAPS_API_KEY": "k"})
    src.poll_once()
    assert src.state == "fallback" and src.last_error == "electricitymaps DE: HTTP 401: Invalid auth-token"
    assert src.reading().g_per_kwh == static_reading(None).g_per_kwh


def test_live_thread_polls_in_background_and_slow_api_never_blocks_reading(api):
    api.set("/v3/carbon-intensity/latest", 200, EM_LATEST)
    src = open_source(parse_grid("electricitymaps:DE", api.url + "/v3"), ttl_s=0.05, timeout_s=2.0,
                      env={"ELECTRICITYMAPS_API_KEY": "k"}).start()
    try:
        assert src.wait_first(5.0)
        assert src.reading().g_per_kwh == 322.0
        changed = copy.deepcopy(EM_LATEST)
        changed["carbonIntensity"] = 123
        api.set("/v3/carbon-intensity/latest", 200, changed, delay_s=1.0)  # a slow API
        t0 = time.perf_counter()
        for _ in range(1000):
            src.reading()
        assert time.perf_counter() - t0 < 0.5  # readers never wait for the poll
        deadline = time.monotonic() + 5
        while src.reading().g_per_kwh != 123.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert src.reading().g_per_kwh == 123.0
        assert api.requests[0]["headers"]["auth-token"] == "k"
    finally:
        src.stop()


def test_watttime_source_reads_env_credentials(api):
    api.set("/v3/forecast", 200, WT_FORECAST)
    src = open_source(parse_grid("watttime:CAISO_NORTH", api.url),
                      env={"WATTTIME_USER": "alice", "WATTTIME_PASSWORD": "s3cret"})
    src.poll_once()
    r = src.reading()
    assert r.kind == "marginal" and r.g_per_kwh == pytest.approx(413.676, abs=1e-3)


def test_reading_once_polls_in_the_caller(api):
    api.set("/intensity", 200, UK_NATIONAL)
    assert reading_once(parse_grid("ukci", api.url)).g_per_kwh == 182.0
    api.set("/intensity", 200, b"garbage")
    r = reading_once(parse_grid("ukci", api.url), fallback_region="de")
    assert r.g_per_kwh == static_reading("de").g_per_kwh and "fallback" in r.source


def test_bad_timing_settings():
    with pytest.raises(InputError, match="grid_ttl_s"):
        open_source("ukci", ttl_s=0)


def _info_sources(metrics) -> set[str]:
    """The ``source`` label values of every llmco2_grid_source_info series exposed so far."""
    import re

    text = generate_latest(metrics.registry).decode()
    return set(re.findall(r'llmco2_grid_source_info\{[^}]*source="([^"]*)"', text))


def test_the_metric_label_names_the_source_not_its_moment(api):
    """A failure episode's time (or an API's per-reading flag) goes in the records, never in a label
    value: the source label keeps one value per source, whatever happens; the state says the rest."""
    clock = [1000.0]
    api.set("/intensity", 200, UK_NATIONAL)
    src = open_source(parse_grid("ukci", api.url), fallback_region="world", ttl_s=60, stale_s=600)
    src.clock = lambda: clock[0]
    metrics = SidecarMetrics()
    src.bind_metrics(metrics)
    seen = set(_info_sources(metrics))
    src.poll_once()
    seen |= _info_sources(metrics)
    api.set("/intensity", 500, {"error": {"code": "500", "message": "down"}})
    for _ in range(3):  # failure episodes at different times
        clock[0] += 60
        src.poll_once()
        seen |= _info_sources(metrics)
        assert "failing since" in src.reading().source  # the records still say when
        clock[0] += 700
        src.reading()
        src.poll_once()
        seen |= _info_sources(metrics)
        api.set("/intensity", 200, UK_NATIONAL)
        src.poll_once()
        seen |= _info_sources(metrics)
        api.set("/intensity", 500, {"error": {"code": "500", "message": "down"}})
    assert seen == {"ukci", static_reading("world").source}
    assert 'state="live"' in generate_latest(metrics.registry).decode()


def test_an_answer_hours_old_counts_as_a_failed_poll(api, monkeypatch, caplog):
    """An API that keeps answering 200 with a frozen point is not live: a reading whose period began
    more than stale_s + one hour ago fails the poll (the stale, then fallback path of any failure)."""
    api.set("/intensity", 200, UK_NATIONAL)
    src = open_source(parse_grid("ukci", api.url), fallback_region="world", ttl_s=60, stale_s=600)
    src.poll_once()
    assert src.state == "live"
    monkeypatch.setattr(LiveSource, "wall", staticmethod(lambda: T10 + 600 + 3600 - 1))  # just within
    src.poll_once()
    assert src.state == "live" and src.polls == {"ok": 2, "error": 0}
    monkeypatch.setattr(LiveSource, "wall", staticmethod(lambda: T10 + 3 * 3600))  # the same answer, 3 h on
    with caplog.at_level(logging.WARNING, "llmco2.grid"):
        src.poll_once()
    assert src.state == "stale" and src.polls["error"] == 1
    assert src.last_error == "it answers with a reading of 2026-12-06T10:00:00Z, 3.0 h old"
    assert "3.0 h old" in caplog.text
    fresh = reading_once(parse_grid("ukci", api.url))  # a first poll with old data: the static region
    assert fresh.source.startswith(static_reading(None).source) and "3.0 h old" not in fresh.source
