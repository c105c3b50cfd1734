"""Clients of the grid carbon-intensity APIs: one HTTP call (or two) each, returning a reading.

Each ``fetch_*`` function does one poll with the standard library's HTTP client and returns an
:class:`IntensityReading`, or raises :class:`GridFetchError` with a one-line reason (HTTP status
and the API's own error message, a timeout, a payload that is not what the API documents). The
formats followed (documented JSON, auth and units) are summarised in ``docs/grid.md``:

* Electricity Maps v3: ``GET {base}/carbon-intensity/latest?zone=ZONE`` with header
  ``auth-token``; ``carbonIntensity`` gCO2eq/kWh (location-based, lifecycle by default), ``datetime``.
* WattTime v3: ``GET {base}/login`` (HTTP Basic) -> ``token`` (30 min), then ``GET
  {base}/v3/forecast?region=R&signal_type=co2_moer&horizon_hours=0`` with ``Authorization: Bearer``;
  the first point is the current 5-minute period; MOER in lbs CO2/MWh x 0.45359237 = gCO2/kWh
  (marginal).
* UK Carbon Intensity (no key): ``GET {base}/intensity`` (national: ``actual``, else ``forecast``)
  or ``GET {base}/regional/regionid/{1..17}`` / ``/regional/postcode/{outward}`` (``forecast``).
"""

from __future__ import annotations

import base64
import json
import math
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .series import IntensityReading, check_g_per_kwh, parse_timestamp

ELECTRICITYMAPS_URL = "https://api.electricitymaps.com/v3"
WATTTIME_URL = "https://api.watttime.org"
UKCI_URL = "https://api.carbonintensity.org.uk"
LBS_PER_MWH_TO_G_PER_KWH = 0.45359237
WATTTIME_TOKEN_S = 25 * 60.0  # tokens last 30 min: log in again a little before
USER_AGENT = "llmco2-sidecar (grid intensity)"


class GridFetchError(RuntimeError):
    """A poll failed; the message says why in one line."""


def _get(url: str, headers: dict[str, str], timeout_s: float) -> tuple[int, Any]:
    """GET ``url``; returns (status, parsed JSON or None). Raises GridFetchError for transport
    failures and for bodies that are not JSON on a 200."""
    req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": USER_AGENT, **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, raw = resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read(1 << 16) if exc.fp is not None else b""
    except (socket.timeout, TimeoutError):
        raise GridFetchError(f"timed out after {timeout_s:g} s ({_safe(url)})") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise GridFetchError(f"timed out after {timeout_s:g} s ({_safe(url)})") from None
        raise GridFetchError(f"cannot reach {_safe(url)}: {reason}") from None
    except (OSError, ValueError) as exc:  # connection reset, bad URL, ...
        raise GridFetchError(f"cannot reach {_safe(url)}: {exc}") from None
    try:
        body = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        if status == 200:
            raise GridFetchError(f"{_safe(url)} answered 200 with a body that is not JSON") from None
        body = None
    return status, body


def _safe(url: str) -> str:
    """The URL without its query (no secrets in logs)."""
    return url.split("?", 1)[0]


def _api_error(status: int, body: Any) -> str:
    """The API's own error text: {"error": "...", "message": "..."} or {"error": {"code", "message"}}."""
    msg = ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = " ".join(str(err[k]) for k in ("code", "message") if err.get(k))
        else:
            msg = " ".join(str(body[k]) for k in ("error", "message") if body.get(k))
    return f"HTTP {status}" + (f": {msg}" if msg else "")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GridFetchError(f"bad payload: {what} is {value!r}, not a number")
    try:
        return check_g_per_kwh(float(value), what)
    except ValueError as exc:
        raise GridFetchError(f"bad payload: {exc}") from None


def _time(value: Any, what: str) -> float:
    if not isinstance(value, str):
        raise GridFetchError(f"bad payload: {what} is {value!r}, not a timestamp")
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise GridFetchError(f"bad payload: {what}: {exc}") from None


# ---- Electricity Maps --------------------------------------------------------------------------
def fetch_electricitymaps(zone: str, api_key: str | None, base_url: str | None = None,
                          timeout_s: float = 10.0) -> IntensityReading:
    base = (base_url or ELECTRICITYMAPS_URL).rstrip("/")
    url = f"{base}/carbon-intensity/latest?" + urllib.parse.urlencode({"zone": zone})
    headers = {"auth-token": api_key} if api_key else {}
    status, body = _get(url, headers, timeout_s)
    if status != 200:
        raise GridFetchError(f"electricitymaps {zone}: {_api_error(status, body)}")
    if not isinstance(body, dict):
        raise GridFetchError(f"electricitymaps {zone}: bad payload: not a JSON object")
    g = _number(body.get("carbonIntensity"), "carbonIntensity")
    ts = _time(body.get("datetime"), "datetime")
    factor = body.get("emissionFactorType")
    est = " estimated" if body.get("isEstimated") else ""
    src = f"electricitymaps:{body.get('zone') or zone}" + (f" ({factor}{est})" if factor else (f" ({est.strip()})" if est else ""))
    return IntensityReading(g, "location", src, ts)


# ---- WattTime ----------------------------------------------------------------------------------
class WattTimeClient:
    """Logs in (HTTP Basic) for a bearer token, keeps it ~25 min, logs in again on a 401."""

    def __init__(self, region: str, user: str | None, password: str | None, base_url: str | None = None,
                 timeout_s: float = 10.0, clock=time.monotonic):
        self.region = region
        self.user, self.password = user, password
        self.base = (base_url or WATTTIME_URL).rstrip("/")
        self.timeout_s = timeout_s
        self.clock = clock
        self._token: str | None = None
        self._token_at = -math.inf
        self.logins = 0

    def _login(self) -> str:
        if not self.user or not self.password:
            raise GridFetchError("watttime: no credentials (set WATTTIME_USER and WATTTIME_PASSWORD)")
        basic = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        status, body = _get(f"{self.base}/login", {"Authorization": f"Basic {basic}"}, self.timeout_s)
        if status != 200:
            raise GridFetchError(f"watttime login: {_api_error(status, body)}")
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise GridFetchError("watttime login: bad payload: no token")
        self._token, self._token_at = token, self.clock()
        self.logins += 1
        return token

    def fetch(self) -> IntensityReading:
        if self._token is None or self.clock() - self._token_at > WATTTIME_TOKEN_S:
            self._login()
        q = urllib.parse.urlencode({"region": self.region, "signal_type": "co2_moer", "horizon_hours": 0})
        url = f"{self.base}/v3/forecast?{q}"
        status, body = _get(url, {"Authorization": f"Bearer {self._token}"}, self.timeout_s)
        if status == 401:  # token expired early: log in once more
            self._login()
            status, body = _get(url, {"Authorization": f"Bearer {self._token}"}, self.timeout_s)
        if status != 200:
            raise GridFetchError(f"watttime {self.region}: {_api_error(status, body)}")
        if not isinstance(body, dict) or not isinstance(body.get("data"), list) or not body["data"]:
            raise GridFetchError(f"watttime {self.region}: bad payload: no data points")
        meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
        units = meta.get("units")
        if units != "lbs_co2_per_mwh":
            raise GridFetchError(f"watttime {self.region}: bad payload: units {units!r} (expected lbs_co2_per_mwh)")
        point = body["data"][0]
        if not isinstance(point, dict):
            raise GridFetchError(f"watttime {self.region}: bad payload: data[0] is not an object")
        value = point.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise GridFetchError(f"watttime {self.region}: bad payload: data[0].value is {value!r}")
        g = _number(float(value) * LBS_PER_MWH_TO_G_PER_KWH, "data[0].value (as gCO2/kWh)")
        ts = _time(point.get("point_time"), "data[0].point_time")
        return IntensityReading(g, "marginal", f"watttime:{meta.get('region') or self.region} (co2_moer)", ts)


# ---- UK Carbon Intensity -----------------------------------------------------------------------
def fetch_ukci(region: str | None, base_url: str | None = None, timeout_s: float = 10.0) -> IntensityReading:
    base = (base_url or UKCI_URL).rstrip("/")
    if not region:
        url, where = f"{base}/intensity", "national"
    elif region.isdigit():
        url, where = f"{base}/regional/regionid/{int(region)}", f"region {int(region)}"
    else:
        url, where = f"{base}/regional/postcode/{urllib.parse.quote(region.upper())}", f"postcode {region.upper()}"
    status, body = _get(url, {}, timeout_s)
    if status != 200:
        raise GridFetchError(f"ukci {where}: {_api_error(status, body)}")
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict):  # some regional answers hold one object, not a list
        data = [data]
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise GridFetchError(f"ukci {where}: bad payload: no data")
    item = data[0]
    if region:  # regional: data[0] is the region, its own data[] the half hours
        inner = item.get("data")
        if not isinstance(inner, list) or not inner or not isinstance(inner[0], dict):
            raise GridFetchError(f"ukci {where}: bad payload: no half-hour data for the region")
        where = f"{where} {item.get('shortname', '')}".strip()
        item = inner[0]
    intensity = item.get("intensity")
    if not isinstance(intensity, dict):
        raise GridFetchError(f"ukci {where}: bad payload: no intensity")
    actual = intensity.get("actual")
    if actual is not None and not region:
        g, what = _number(actual, "intensity.actual"), "actual"
    else:
        g, what = _number(intensity.get("forecast"), "intensity.forecast"), "forecast"
    ts = _time(item.get("from"), "from")
    return IntensityReading(g, "location", f"ukci:{where} ({what})", ts)
