"""Local HTTP servers on loopback speaking the grid APIs' documented JSON (see docs/grid.md and the
operators' reference): Electricity Maps v3, WattTime v3 (login + forecast), UK Carbon Intensity.

Each route's answer is programmable (status, body, delay) so that tests can drive errors,
timeouts and bad payloads; every request is recorded (path, query, headers)."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeApi:
    def __init__(self):
        self.routes: dict[str, tuple[int, object, float]] = {}  # path -> (status, body, delay_s)
        self.requests: list[dict] = []
        self.users = {"alice": "s3cret"}
        self.tokens: set[str] = set()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                api.requests.append({"path": url.path, "query": query, "headers": {k.lower(): v for k, v in self.headers.items()}})
                status, body, delay = api.answer(url.path, query, self.headers)
                if delay:
                    time.sleep(delay)
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def set(self, path: str, status: int, body, delay_s: float = 0.0) -> None:
        self.routes[path] = (status, body, delay_s)

    def answer(self, path, query, headers):
        if path in self.routes:
            return self.routes[path]
        if path == "/login":  # WattTime: HTTP Basic -> token
            auth = headers.get("Authorization", "")
            if auth.startswith("Basic "):
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                if self.users.get(user) == pw:
                    tok = f"tok{len(self.tokens)}"
                    self.tokens.add(tok)
                    return 200, {"token": tok}, 0.0
            return 403, {"error": "Unauthorized", "message": "bad credentials"}, 0.0
        return 404, {"status": "error", "message": f"no route {path}"}, 0.0

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# documented shapes (values are our own)
EM_LATEST = {"zone": "DE", "carbonIntensity": 322, "datetime": "2026-12-06T10:00:00.000Z",
             "updatedAt": "2026-12-06T10:04:51.002Z", "createdAt": "2026-12-03T09:58:02.772Z",
             "emissionFactorType": "lifecycle", "isEstimated": True, "estimationMethod": "TIME_SLICER_AVERAGE",
             "temporalGranularity": "hourly"}
WT_FORECAST = {"data": [{"point_time": "2026-12-06T10:00:00+00:00", "value": 912.0},
                        {"point_time": "2026-12-06T10:05:00+00:00", "value": 905.0}],
               "meta": {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh",
                        "data_point_period_seconds": 300, "model": {"date": "2023-03-01"},
                        "generated_at": "2026-12-06T10:00:00+00:00", "generated_at_period_seconds": 300,
                        "warnings": []}}
UK_NATIONAL = {"data": [{"from": "2026-12-06T10:00Z", "to": "2026-12-06T10:30Z",
                         "intensity": {"forecast": 182, "actual": None, "index": "moderate"}}]}
UK_REGIONAL = {"data": [{"regionid": 13, "dnoregion": "UKPN London", "shortname": "London",
                         "data": [{"from": "2026-12-06T10:00Z", "to": "2026-12-06T10:30Z",
                                   "intensity": {"forecast": 201, "index": "moderate"},
                                   "generationmix": [{"fuel": "gas", "perc": 38.5}, {"fuel": "wind", "perc": 30.1}]}]}]}


T10 = 1796551200.0  # 2026-12-06T10:00:00Z: the period the documented payloads above start at


def fresh(payload, now: float | None = None):
    """A copy of ``payload`` (one of the above) with every timestamp moved by the same whole number of
    hours so that its first reading's period began in the current hour: what a live API answers now
    (a live source counts a reading hours old as a failed poll). :func:`fresh_ts` is that period's start."""
    import copy
    import re
    from datetime import datetime, timedelta, timezone

    delta = timedelta(seconds=_shift_s(now))
    stamp = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d)")

    def move(x):
        if isinstance(x, dict):
            return {k: move(v) for k, v in x.items()}
        if isinstance(x, list):
            return [move(v) for v in x]
        if isinstance(x, str) and stamp.match(x):
            t = datetime.strptime(x[:16], "%Y-%m-%dT%H:%M").replace(tzinfo=timezone.utc) + delta
            return t.strftime("%Y-%m-%dT%H:%M") + x[16:]
        return x

    return move(copy.deepcopy(payload))


def fresh_ts(now: float | None = None) -> float:
    """Unix time of the first reading of a :func:`fresh` payload made at ``now``."""
    return T10 + _shift_s(now)


def _shift_s(now: float | None) -> float:
    now = time.time() if now is None else now
    return (now - T10) // 3600 * 3600
