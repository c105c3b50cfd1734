"""The grid API clients against local HTTP servers speaking each API's documented JSON."""

from __future__ import annotations

import copy

import pytest

from llmco2_sidecar.energy.grid.apis import GridFetchError, WattTimeClient, fetch_electricitymaps, fetch_ukci

from grid_fakes import EM_LATEST, UK_NATIONAL, UK_REGIONAL, WT_FORECAST, FakeApi

T10 = 1796551200.0  # 2026-12-06T10:00:00Z


@pytest.fixture
def api():
    a = FakeApi()
    yield a
    a.close()


# ---- Electricity Maps -------------------------------------------------------------------------
def test_electricitymaps_latest(api):
    api.set("/v3/carbon-intensity/latest", 200, EM_LATEST)
    r = fetch_electricitymaps("DE", "k123", api.url + "/v3")
    assert (r.g_per_kwh, r.kind, r.ts) == (322.0, "location", T10)
    assert r.source == "electricitymaps:DE (lifecycle estimated)"
    req = api.requests[-1]
    assert req["query"] == {"zone": "DE"}
    assert req["headers"]["auth-token"] == "k123"


@pytest.mark.parametrize("status, body, match", [
    (401, {"error": "Invalid auth-token", "message": "Please provide a valid authentication header."},
     "HTTP 401: Invalid auth-token Please provide"),
    (404, {"status": "error", "message": "No recent data for zone XX"}, "HTTP 404: No recent data"),
    (500, b"<html>oops</html>", "HTTP 500"),
])
def test_electricitymaps_errors(api, status, body, match):
    api.set("/v3/carbon-intensity/latest", status, body)
    with pytest.raises(GridFetchError, match=match):
        fetch_electricitymaps("XX", "k", api.url + "/v3")


@pytest.mark.parametrize("patch, match", [
    ({"carbonIntensity": None}, "carbonIntensity is None"),
    ({"carbonIntensity": "322"}, "carbonIntensity is '322'"),
    ({"carbonIntensity": -3}, "out of range"),
    ({"datetime": "soon"}, "datetime"),
    ({"datetime": None}, "datetime"),
])
def test_electricitymaps_bad_payloads(api, patch, match):
    api.set("/v3/carbon-intensity/latest", 200, {**EM_LATEST, **patch})
    with pytest.raises(GridFetchError, match=match):
        fetch_electricitymaps("DE", "k", api.url + "/v3")


def test_not_json_and_not_object(api):
    api.set("/v3/carbon-intensity/latest", 200, b"not json{")
    with pytest.raises(GridFetchError, match="not JSON"):
        fetch_electricitymaps("DE", "k", api.url + "/v3")
    api.set("/v3/carbon-intensity/latest", 200, [1, 2])
    with pytest.raises(GridFetchError, match="not a JSON object"):
        fetch_electricitymaps("DE", "k", api.url + "/v3")


def test_timeout_and_unreachable(api):
    api.set("/v3/carbon-intensity/latest", 200, EM_LATEST, delay_s=1.0)
    with pytest.raises(GridFetchError, match="timed out after 0.2 s"):
        fetch_electricitymaps("DE", "k", api.url + "/v3", timeout_s=0.2)
    port = api.server.server_address[1]
    api.close()
    with pytest.raises(GridFetchError, match="cannot reach"):
        fetch_electricitymaps("DE", "k", f"http://127.0.0.1:{port}/v3", timeout_s=1.0)


def test_no_key_in_error_messages(api):
    api.set("/v3/carbon-intensity/latest", 401, {"error": "Invalid auth-token"})
    with pytest.raises(GridFetchError) as info:
        fetch_electricitymaps("DE", "supersecretkey", api.url + "/v3")
    assert "supersecretkey" not in str(info.value)


# ---- WattTime ---------------------------------------------------------------------------------
def test_watttime_login_and_moer(api):
    api.set("/v3/forecast", 200, WT_FORECAST)
    c = WattTimeClient("CAISO_NORTH", "alice", "s3cret", api.url)
    r = c.fetch()
    assert r.kind == "marginal"
    assert r.g_per_kwh == pytest.approx(912.0 * 0.45359237)
    assert r.ts == T10
    assert r.source == "watttime:CAISO_NORTH (co2_moer)"
    fq = api.requests[-1]
    assert fq["path"] == "/v3/forecast"
    assert fq["query"] == {"region": "CAISO_NORTH", "signal_type": "co2_moer", "horizon_hours": "0"}
    assert fq["headers"]["authorization"] == "Bearer tok0"
    c.fetch()
    assert c.logins == 1  # the token is reused


def test_watttime_relogin_on_401_and_token_age(api):
    clock = [0.0]
    c = WattTimeClient("CAISO_NORTH", "alice", "s3cret", api.url, clock=lambda: clock[0])
    api.set("/v3/forecast", 200, WT_FORECAST)
    c.fetch()
    clock[0] = 26 * 60.0  # older than 25 min: log in again before the call
    c.fetch()
    assert c.logins == 2
    api.set("/v3/forecast", 401, {"error": "Unauthorized", "message": "token expired"})
    with pytest.raises(GridFetchError, match="HTTP 401: Unauthorized token expired"):
        c.fetch()
    assert c.logins == 3  # one more login was tried


@pytest.mark.parametrize("user, pw, match", [(None, None, "no credentials"), ("alice", "wrong", "login: HTTP 403")])
def test_watttime_login_failures(api, user, pw, match):
    with pytest.raises(GridFetchError, match=match):
        WattTimeClient("CAISO_NORTH", user, pw, api.url).fetch()


def test_watttime_errors_and_payloads(api):
    c = WattTimeClient("PJM", "alice", "s3cret", api.url)
    api.set("/v3/forecast", 403, {"error": "Invalid scope", "message": "Invalid scope. You do not have sufficient access",
                                  "docs": "https://docs.watttime.org/"})
    with pytest.raises(GridFetchError, match="HTTP 403: Invalid scope"):
        c.fetch()
    api.set("/v3/forecast", 429, {"error": "Too Many Requests"})
    with pytest.raises(GridFetchError, match="429"):
        c.fetch()
    pct = copy.deepcopy(WT_FORECAST)
    pct["meta"]["units"] = "percentile"
    api.set("/v3/forecast", 200, pct)
    with pytest.raises(GridFetchError, match="units 'percentile'"):
        c.fetch()
    api.set("/v3/forecast", 200, {"data": [], "meta": WT_FORECAST["meta"]})
    with pytest.raises(GridFetchError, match="no data points"):
        c.fetch()
    bad = copy.deepcopy(WT_FORECAST)
    bad["data"][0]["value"] = "912"
    api.set("/v3/forecast", 200, bad)
    with pytest.raises(GridFetchError, match="value"):
        c.fetch()


# ---- UK Carbon Intensity ----------------------------------------------------------------------
def test_ukci_national_forecast_and_actual(api):
    api.set("/intensity", 200, UK_NATIONAL)
    r = fetch_ukci(None, api.url)
    assert (r.g_per_kwh, r.kind, r.ts, r.source) == (182.0, "location", T10, "ukci:national (forecast)")
    actual = copy.deepcopy(UK_NATIONAL)
    actual["data"][0]["intensity"]["actual"] = 175
    api.set("/intensity", 200, actual)
    r = fetch_ukci(None, api.url)
    assert (r.g_per_kwh, r.source) == (175.0, "ukci:national (actual)")
    assert "authorization" not in api.requests[-1]["headers"] and "auth-token" not in api.requests[-1]["headers"]


def test_ukci_regional(api):
    api.set("/regional/regionid/13", 200, UK_REGIONAL)
    r = fetch_ukci("13", api.url)
    assert (r.g_per_kwh, r.source, r.ts) == (201.0, "ukci:region 13 London (forecast)", T10)
    api.set("/regional/postcode/SW1", 200, UK_REGIONAL)
    r = fetch_ukci("sw1", api.url)
    assert r.source == "ukci:postcode SW1 London (forecast)"


def test_ukci_errors(api):
    api.set("/intensity", 400, {"error": {"code": "400 Bad Request", "message": "Please enter a valid date"}})
    with pytest.raises(GridFetchError, match="HTTP 400: 400 Bad Request Please enter a valid date"):
        fetch_ukci(None, api.url)
    api.set("/intensity", 200, {"data": []})
    with pytest.raises(GridFetchError, match="no data"):
        fetch_ukci(None, api.url)
    api.set("/regional/regionid/2", 200, {"data": [{"regionid": 2, "data": []}]})
    with pytest.raises(GridFetchError, match="no half-hour data"):
        fetch_ukci("2", api.url)
    api.set("/intensity", 200, {"data": [{"from": "2026-12-06T10:00Z", "intensity": {"forecast": None, "actual": None}}]})
    with pytest.raises(GridFetchError, match="intensity.forecast is None"):
        fetch_ukci(None, api.url)
