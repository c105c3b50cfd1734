"""Grid intensity sources: ``--grid SOURCE`` parsed, opened, and read without ever blocking.

``SOURCE`` is one of (default ``static:`` + the table's default region):

==========================  =============================================================  ==========
``static:REGION``           the bundled annual table (``llmco2 catalog regions``)           location
``csv:PATH``                an hourly ``timestamp,g_per_kwh`` file (:mod:`.series`)         location
``electricitymaps:ZONE``    Electricity Maps v3 latest (key: ``ELECTRICITYMAPS_API_KEY``)  location
``watttime:REGION``         WattTime v3 MOER (``WATTTIME_USER``, ``WATTTIME_PASSWORD``)    marginal
``ukci[:REGION]``           UK Carbon Intensity API, national or region id 1-17/postcode   location
==========================  =============================================================  ==========

Every source answers :meth:`GridSource.reading` from memory. The live ones (the three APIs) are
polled by a background thread every ``ttl_s``; a failed poll keeps the last good reading for
``stale_s`` (stated in the log and in each record's ``carbon_intensity_source``), after that the
source answers with the static region (``fallback_region``) until a poll succeeds again. A poll
whose answer is itself old (its reading's period began more than ``stale_s`` + ``MAX_PERIOD_S`` ago:
an API that keeps answering with a frozen point) counts as a failed poll. The state is exported as
metrics (:meth:`GridSource.bind_metrics`) and each change is logged once.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from ...errors import InputError
from .apis import GridFetchError, WattTimeClient, fetch_electricitymaps, fetch_ukci
from .series import IntensityReading, IntensitySeries
from ...threadnames import name_os_thread

log = logging.getLogger("llmco2.grid")

KINDS = ("static", "csv", "electricitymaps", "watttime", "ukci")
LIVE = ("electricitymaps", "watttime", "ukci")
DEFAULT_TTL_S = 300.0
DEFAULT_STALE_S = 3600.0
DEFAULT_TIMEOUT_S = 10.0
MAX_PERIOD_S = 3600.0  # the longest period a live source's reading covers (Electricity Maps: hourly)
SYNTAX = "static:REGION, csv:PATH, electricitymaps:ZONE, watttime:REGION, ukci[:REGION]"
ENV_KEYS = {"electricitymaps": ("ELECTRICITYMAPS_API_KEY", "ELECTRICITY_MAPS_API_KEY"),
            "watttime": ("WATTTIME_USER", "WATTTIME_PASSWORD")}


@dataclass(frozen=True)
class GridSpec:
    kind: str  # one of KINDS
    arg: str  # region, path, zone ("" for national ukci)
    url: str | None = None  # base URL override (--grid-url)

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


def parse_grid(text: str | None, url: str | None = None, default_region: str | None = None) -> GridSpec:
    """``--grid`` text to a spec; ``None``/empty: ``static:`` the default region. InputError on bad text."""
    from .. import carbon

    if not text:
        if url is not None:
            raise InputError("grid_url", "a base URL needs an API source in --grid", ", ".join(LIVE))
        reg = carbon.region(default_region)
        return GridSpec("static", reg.code, None)
    kind, _, arg = str(text).strip().partition(":")
    kind = kind.lower()
    if kind not in KINDS:
        raise InputError("grid", f"unknown source {text!r}", SYNTAX)
    arg = arg.strip()
    if kind == "static":
        arg = carbon.region(arg or default_region).code  # raises for unknown regions, naming them
    elif kind == "ukci":
        if arg and not (arg.isdigit() and 1 <= int(arg) <= 17) and not (arg.isalnum() and arg[0].isalpha() and 2 <= len(arg) <= 4):
            raise InputError("grid", f"ukci region {arg!r} is neither a region id 1-17 nor an outward postcode",
                             "ukci, ukci:13, ukci:SW1")
    elif not arg:
        raise InputError("grid", f"{kind} needs a {'path' if kind == 'csv' else 'zone/region'} after the colon", SYNTAX)
    if url is not None:
        if kind not in LIVE:
            raise InputError("grid_url", f"only the API sources take a base URL, not {kind}", ", ".join(LIVE))
        if not url.startswith(("http://", "https://")):
            raise InputError("grid_url", f"{url!r} is not an http(s) URL")
    return GridSpec(kind, arg, url)


class GridSource:
    """Base: a constant reading (``static:`` and ``--carbon-intensity-g-per-kwh``)."""

    live = False

    def __init__(self, reading: IntensityReading):
        self._reading = reading
        self.state = "static"

    def reading(self, unix_s: float | None = None) -> IntensityReading:
        """The reading to use for energy at ``unix_s`` (now when None). Never blocks, never raises."""
        return self._reading

    def start(self) -> "GridSource":
        return self

    def stop(self) -> None:
        pass

    def wait_first(self, timeout_s: float) -> bool:
        return True

    def bind_metrics(self, metrics) -> None:
        self._metrics = metrics
        self._publish(self.reading())

    def _publish(self, r: IntensityReading) -> None:
        m = getattr(self, "_metrics", None)
        if m is None or not hasattr(m, "grid_intensity"):
            return
        m.grid_intensity.set(r.g_per_kwh)
        m.grid_fallback.set(1.0 if self.state == "fallback" else 0.0)
        m.grid_info.info({"kind": r.kind, "source": self._metric_source(r), "state": self.state})

    def _metric_source(self, r: IntensityReading) -> str:
        """The ``source`` label of ``llmco2_grid_source_info``: a value that names the source, not its
        moment (a time or an API's per-reading flag in a label value would make a new series each time;
        the records keep the full description)."""
        return r.source

    def describe(self) -> str:
        r = self.reading()
        return f"{r.g_per_kwh:g} gCO2e/kWh ({r.kind}, {r.source})"


def static_reading(region_code: str | None) -> IntensityReading:
    from .. import carbon

    reg = carbon.region(region_code)
    year_start = datetime(max(reg.year, 1970), 1, 1, tzinfo=timezone.utc).timestamp() if reg.year else 0.0
    return IntensityReading(reg.g_per_kwh, "location", f"static:{reg.code} ({reg.source}, {reg.year})", year_start)


def configured_reading(g_per_kwh: float) -> IntensityReading:
    from .. import carbon

    return IntensityReading(carbon.check_carbon_intensity(g_per_kwh), "location", "configured", 0.0)


class CsvSource(GridSource):
    """An hourly series; times outside it get the static region (logged once, state ``fallback``)."""

    def __init__(self, series: IntensitySeries, fallback: IntensityReading):
        super().__init__(fallback)
        self.series = series
        self.fallback = fallback
        self.state = "series"
        self._warned = False

    def reading(self, unix_s: float | None = None) -> IntensityReading:
        t = time.time() if unix_s is None else unix_s
        if self.series.covers(t):
            return self.series.at(t)
        if not self._warned:
            self._warned = True
            log.warning("grid: %s does not cover %s (it spans %s to %s): using %s for such times",
                        self.series.readings[0].source, _iso(t), _iso(self.series.start_s), _iso(self.series.end_s),
                        self.fallback.source)
            self.state = "fallback"
            self._publish(self.fallback)
        return IntensityReading(self.fallback.g_per_kwh, self.fallback.kind,
                                f"{self.fallback.source} (fallback: outside {self.series.readings[0].source})",
                                self.fallback.ts)


class LiveSource(GridSource):
    """Polls ``fetch`` every ``ttl_s`` on a daemon thread; see the module docstring for failures."""

    live = True
    wall = staticmethod(time.time)  # the wall clock an answer's age is judged by (tests replace it)

    def __init__(self, name: str, fetch: Callable[[], IntensityReading], fallback: IntensityReading,
                 ttl_s: float = DEFAULT_TTL_S, stale_s: float = DEFAULT_STALE_S, clock=time.monotonic):
        super().__init__(fallback)
        self.name = name
        self.fetch = fetch
        self.fallback = fallback
        self.ttl_s = float(ttl_s)
        self.stale_s = float(stale_s)
        self.clock = clock
        self.state = "starting"  # starting -> live <-> stale -> fallback
        self.last_good: IntensityReading | None = None
        self.last_good_at = -math.inf  # clock() of the last good poll
        self.failing_since: float | None = None  # time.time() of the first failure of a run of them
        self.last_error: str | None = None
        self.polls = {"ok": 0, "error": 0}
        self._current = IntensityReading(fallback.g_per_kwh, fallback.kind,
                                         f"{fallback.source} (fallback: {name} not read yet)", fallback.ts)
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None

    def _metric_source(self, r: IntensityReading) -> str:
        # live and stale: the configured source (its state says which); else the fallback in use
        return self.name if self.state in ("live", "stale") else self.fallback.source

    def reading(self, unix_s: float | None = None) -> IntensityReading:
        cur = self._current
        if self.state == "stale" and self.clock() - self.last_good_at > self.stale_s:
            self._to_fallback()  # the poller is slow to notice (a hung call): the record must not wait
            cur = self._current
        return cur

    def start(self) -> "LiveSource":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llmco2-grid", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def wait_first(self, timeout_s: float) -> bool:
        return self._first.wait(timeout_s)

    def _run(self) -> None:
        name_os_thread("llmco2-grid")
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.ttl_s)

    def poll_once(self) -> None:
        """One poll (the thread's loop body; tests call it directly)."""
        try:
            r = self.fetch()
        except GridFetchError as exc:
            self._failed(str(exc))
        except Exception as exc:  # a bug in a client must not stop the poller
            self._failed(f"{type(exc).__name__}: {exc}")
        else:
            age = self.wall() - r.ts
            if r.ts > 0 and age > self.stale_s + MAX_PERIOD_S:
                self._failed(f"it answers with a reading of {_iso(r.ts)}, {age / 3600:.1f} h old")
            else:
                self._good(r)
        finally:
            self._first.set()

    def _good(self, r: IntensityReading) -> None:
        self.polls["ok"] += 1
        if self.state in ("stale", "fallback"):
            log.warning("grid: %s answers again after failing since %s: %g gCO2e/kWh", self.name,
                        _iso(self.failing_since or time.time()), r.g_per_kwh)
        elif self.state == "starting":
            log.info("grid: %s: %g gCO2e/kWh (%s, reading of %s)", self.name, r.g_per_kwh, r.kind, _iso(r.ts))
        self.last_good, self.last_good_at = r, self.clock()
        self.failing_since, self.last_error = None, None
        self.state = "live"
        self._current = r
        self._count("ok")
        self._publish(r)

    def _failed(self, why: str) -> None:
        self.polls["error"] += 1
        self.last_error = why
        first = self.failing_since is None
        if first:
            self.failing_since = time.time()
        self._count("error")
        age = self.clock() - self.last_good_at
        if self.last_good is not None and age <= self.stale_s:
            if self.state != "stale":
                log.warning("grid: %s poll failed (%s); keeping the reading of %s (%g gCO2e/kWh) for up to %.0f s "
                            "more, then %s", self.name, why, _iso(self.last_good.ts),
                            self.last_good.g_per_kwh, self.stale_s - age, self.fallback.source)
            self.state = "stale"
            g = self.last_good
            self._current = IntensityReading(g.g_per_kwh, g.kind, f"{g.source} (stale: polls failing since "
                                             f"{_iso(self.failing_since)})", g.ts)
            self._publish(self._current)
        else:
            if self.state != "fallback":
                log.warning("grid: %s poll failed (%s); using %s (%g gCO2e/kWh) until it answers",
                            self.name, why, self.fallback.source, self.fallback.g_per_kwh)
            elif first:
                log.info("grid: %s still failing: %s", self.name, why)
            self._to_fallback()

    def _to_fallback(self) -> None:
        if self.state != "fallback" and self.state != "starting":
            log.warning("grid: %s has failed since %s and its last reading is older than %.0f s: using %s",
                        self.name, _iso(self.failing_since or time.time()), self.stale_s, self.fallback.source)
        self.state = "fallback"
        f = self.fallback
        self._current = IntensityReading(f.g_per_kwh, f.kind, f"{f.source} (fallback: {self.name} failing since "
                                         f"{_iso(self.failing_since or time.time())})", f.ts)
        self._publish(self._current)

    def _count(self, outcome: str) -> None:
        m = getattr(self, "_metrics", None)
        if m is not None and hasattr(m, "grid_polls"):
            m.grid_polls.labels(outcome).inc()
            if outcome == "ok":
                m.grid_reading_ts.set(self._current.ts if self.last_good is None else self.last_good.ts)


def open_source(spec: GridSpec | str | None, fallback_region: str | None = None, ttl_s: float = DEFAULT_TTL_S,
                stale_s: float = DEFAULT_STALE_S, timeout_s: float = DEFAULT_TIMEOUT_S,
                env: dict | None = None) -> GridSource:
    """The source of a spec (not started: call ``start()``; static and csv need no thread)."""
    if not isinstance(spec, GridSpec):
        spec = parse_grid(spec, None, fallback_region)
    env = os.environ if env is None else env
    if spec.kind == "static":
        return GridSource(static_reading(spec.arg))
    fallback = static_reading(fallback_region)
    if spec.kind == "csv":
        return CsvSource(IntensitySeries.from_csv(spec.arg), fallback)
    for name, v in (("grid_ttl_s", ttl_s), ("grid_stale_s", stale_s), ("grid_timeout_s", timeout_s)):
        if not (v > 0) or not math.isfinite(v):
            raise InputError(name, f"must be positive, got {v!r}", "> 0")
    if spec.kind == "electricitymaps":
        key = next((env[k] for k in ENV_KEYS["electricitymaps"] if env.get(k)), None)
        if not key:
            log.warning("grid: no ELECTRICITYMAPS_API_KEY in the environment: polling %s without a key", spec)

        def fetch() -> IntensityReading:
            return fetch_electricitymaps(spec.arg, key, spec.url, timeout_s)
    elif spec.kind == "watttime":
        client = WattTimeClient(spec.arg, env.get("WATTTIME_USER"), env.get("WATTTIME_PASSWORD"), spec.url, timeout_s)
        fetch = client.fetch
    else:  # ukci

        def fetch() -> IntensityReading:
            return fetch_ukci(spec.arg or None, spec.url, timeout_s)
    return LiveSource(str(spec), fetch, fallback, ttl_s, stale_s)


def reading_once(spec: GridSpec | str | None, fallback_region: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 env: dict | None = None, at_unix_s: float | None = None) -> IntensityReading:
    """One reading now (``llmco2 estimate``): a live source is polled once, in this thread; a failed
    poll gives the static region, its source naming the failure."""
    src = open_source(spec, fallback_region, timeout_s=timeout_s, env=env)
    if isinstance(src, LiveSource):
        src.poll_once()
        return src.reading()
    return src.reading(at_unix_s)


def _iso(unix_s: float) -> str:
    try:
        return datetime.fromtimestamp(unix_s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError, TypeError):
        return repr(unix_s)
