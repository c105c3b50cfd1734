"""Configuration of the sidecar (``llmco2 serve``): defaults < TOML file < environment < flags.

Every setting is a field of :class:`SidecarConfig`. The TOML file holds them at the top level or
under a ``[sidecar]`` table, with the field names below (``log_max_bytes = 1048576``); the
environment variable of a field is ``LLMCO2_`` + its upper-case name (``LLMCO2_PUE=1.2``); the flag
is ``--`` + its name with dashes (``--pue 1.2``). :func:`add_arguments` lists them all in
``--help``; :func:`resolve` merges the four layers. ``None`` means "the library default" (for
example the carbon module's ``DEFAULT_PUE``), resolved where the value is used.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

from .errors import InputError

ENV_PREFIX = "LLMCO2_"
FSYNC_POLICIES = ("always", "interval", "never")


def _f(default: Any, help_text: str, choices: tuple | None = None):
    return field(default=default, metadata={"help": help_text, "choices": choices})


@dataclass
class SidecarConfig:
    """All settings of the sidecar. Units in names."""

    # ---- listening -------------------------------------------------------------------------
    host: str = _f("127.0.0.1", "address to listen on (loopback by default)")
    port: int = _f(50551, "TCP port (0 picks a free port and prints it)")
    unix: str | None = _f(None, "listen on this Unix socket path instead of TCP")
    tls_cert: str | None = _f(None, "PEM certificate: serve TLS (needs --tls-key)")
    tls_key: str | None = _f(None, "PEM private key for --tls-cert")
    token: str | None = _f(None, "require 'authorization: Bearer TOKEN' metadata on every call")
    metrics_port: int = _f(0, "Prometheus endpoint port on --host (0: off; 9464 is the usual choice)")
    # ---- sinks -----------------------------------------------------------------------------
    log: str = _f("llmco2-carbon.jsonl", "carbon log path (JSON lines, one record per finished request)")
    log_max_bytes: int = _f(64 * 1024 * 1024, "rotate the carbon log beyond this size (0: never)")
    log_backups: int = _f(5, "rotated carbon logs kept (log.1 ... log.N)")
    log_steps: bool = _f(False, "also write one 'step' record per engine step")
    log_windows: bool = _f(True, "write one 'window' record per accounting window")
    window_s: float = _f(10.0, "accounting window (engine clock seconds) for window records")
    journal: str | None = _f(None, "write-ahead journal directory (default: LOG + '.journal')")
    fsync: str = _f("interval", "journal fsync policy: every message, every --fsync-interval-s, or never",
                    FSYNC_POLICIES)
    fsync_interval_s: float = _f(1.0, "journal fsync period for --fsync interval")
    journal_max_bytes: int = _f(32 * 1024 * 1024, "checkpoint and start a new journal segment beyond this size; "
                                                   "older segments are deleted once their records are on disk, so a "
                                                   "restart replays about this much at most")
    ledger_max_finished: int = _f(100_000, "finished requests kept for lookups (LRU)")
    ledger_ttl_s: float = _f(3600.0, "finished requests older than this are dropped from lookups")
    # ---- accounting ------------------------------------------------------------------------
    predictor: str = _f("default", "step energy predictor: 'default' (best shipped) or 'roofline'")
    region: str | None = _f(None, "carbon-intensity region of the bundled table (default: the table's default)")
    carbon_intensity_g_per_kwh: float | None = _f(None, "location-based grid intensity; overrides --region")
    grid: str | None = _f(None, "grid intensity source: static:REGION (the bundled table; default static:--region), "
                                "csv:PATH (hourly timestamp,g_per_kwh), electricitymaps:ZONE (key in "
                                "ELECTRICITYMAPS_API_KEY), watttime:REGION (marginal MOER; WATTTIME_USER, "
                                "WATTTIME_PASSWORD), ukci[:REGION] (UK Carbon Intensity API, no key)")
    grid_url: str | None = _f(None, "base URL of the --grid API (a proxy, a test server)")
    grid_ttl_s: float = _f(300.0, "poll a live --grid API this often (seconds)")
    grid_stale_s: float = _f(3600.0, "after a failed poll keep the last good reading this long, then use the static "
                                     "--region until the API answers again")
    grid_timeout_s: float = _f(10.0, "timeout of one --grid API call (seconds)")
    otlp: str | None = _f(None, "export metrics and one log record per finished request over OTLP/gRPC to this "
                                "endpoint (http://host:4317 plaintext, https:// TLS; needs the [otel] extra)")
    otlp_interval_s: float = _f(10.0, "OTLP metric export interval (seconds)")
    otlp_timeout_s: float = _f(5.0, "timeout of one OTLP export; at exit the last export waits at most about this long")
    pue: float | None = _f(None, "power usage effectiveness of the data centre (default: carbon module's)")
    host_idle_w_per_gpu: float | None = _f(None, "host (CPU, DRAM, fans) idle power per GPU in W "
                                                 "(default: the catalog server's host idle / GPUs per node, else 60)")
    formation_j: float | None = _f(None, "dynamic energy of forming one batch (default: the serving module's)")
    lifetime_years: float | None = _f(None, "GPU lifetime for embodied carbon amortisation (default: embodied module's)")
    hardware: str | None = _f(None, "extra hardware catalog TOML (GPUs, servers)")
    # 1024: a backlog drains in fewer, cheaper predictor calls (benchmarks/results/sidecar_micro_batch.md,
    # 2026-12-06 23:50, three rounds: median 19,019 / 20,917 step events/s on 1 / 8 streams at 256,
    # 26,555 / 23,716 at 1024); a micro-batch closes when its finish's wait (micro_batch_ms) or its
    # steps' wait (step_wait_ms) is over, so only a sidecar already behind makes the larger ones
    micro_batch_steps: int = _f(1024, "predict at most this many steps at once")
    micro_batch_ms: float = _f(1.0, "wait at most this long to fill a micro-batch that holds a finish (a record waits on it)")
    # 1000 (250 until 2026-12-08, 100 before 2026-12-07): at low step rates with few finishes (a lightly
    # loaded engine) each prediction call pays its fixed cost with the caches cold (~3 ms for 25 steps,
    # benchmarks/results/pipeline_cold.md), so one call a second instead of four: at 100 one-step
    # messages a second with nothing waiting, 560-650 -> 460-600 us per message in alternating scratch
    # runs (2026-12-08, about 02:45), grpc_floor.md for the committed figures. Only a record nobody waits for
    # (log, metrics, OTLP) comes later, within a second; an awaited one is not delayed (its finish, or
    # the waiter's arrival, closes the micro-batch within micro_batch_ms)
    step_wait_ms: float = _f(1000.0, "a micro-batch that no record waits on (steps alone, or finishes nobody waits "
                                    "for: see --prompt-records) waits at most this long for more, so that few-step "
                                    "messages share a prediction call (a finish someone waits for, or a waiter "
                                    "arriving, closes it within micro_batch_ms)")
    # records on demand (2026-12-07): at 100 steps a second and a finish every 4 steps, the pipeline's CPU
    # per step fell from 514 to 119 us without a waiter, in process (benchmarks/results/pipeline_cold.md)
    prompt_records: bool = _f(False, "write every request's record within micro_batch_ms of its finish; by default "
                                     "a finish that no lookup (a held response) or WatchFinished watcher is waiting "
                                     "for, with no lookup in the last 10 s, waits with the steps (at most "
                                     "step_wait_ms), so that finishes share prediction calls, and one arriving "
                                     "waiter closes the micro-batch at once")
    max_pending_steps: int = _f(16384, "accepted steps waiting for the predictor before ingest stops reading "
                                       "(backpressure: the engine's emitter buffers meanwhile); reading resumes "
                                       "when half of them are predicted")
    ack_interval_ms: float = _f(50.0, "an emitter that takes cumulative acks (this project's) gets one ack for the "
                                      "messages of up to this long (0: one ack per message, as for other emitters)")
    ingest_hold_ms: float = _f(50.0, "with cumulative acks, a message of steps alone (no finish, abort or static "
                                     "batch: no record waits on it) is held up to this long (at most --ack-interval-ms) "
                                     "and journaled and ingested with the next ones (few wake-ups at low step rates; "
                                     "0: each at once)")
    log_backlog_max_records: int = _f(100_000, "records kept in memory while the carbon log cannot be written; "
                                           "beyond, messages are not acknowledged until it can")
    predictor_threads: int = _f(1, "torch threads of a learned predictor (1 keeps the sidecar on one core)")
    # ---- measurement -----------------------------------------------------------------------
    measure: str | None = _f(None, "energy meters to read beside the predictions: nvml, rapl (e.g. 'nvml,rapl'); "
                                   "'null' reads nothing (a dry run of the measuring path)")
    rapl_root: str | None = _f(None, "powercap root for RAPL (default /sys/class/powercap)")
    calibrate: bool = _f(False, "spread each window's measured energy over its requests (records say 'measured')")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise InputError("fsync", f"unknown policy {self.fsync!r}", ", ".join(FSYNC_POLICIES))
        if not (0 <= int(self.port) <= 65535):
            raise InputError("port", f"{self.port} is not a TCP port", "0..65535")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InputError("tls_key" if self.tls_cert else "tls_cert", "TLS needs both a certificate and a key")
        for name in ("pue", "carbon_intensity_g_per_kwh", "host_idle_w_per_gpu", "formation_j", "lifetime_years"):
            value = getattr(self, name)
            if value is not None and not (value >= 0):
                raise InputError(name, f"must not be negative, got {value!r}", ">= 0")
        # what the pipeline would refuse for every engine is refused at start (the sidecar must not
        # report SERVING and then turn each stream away)
        from .energy import carbon

        if self.pue is not None:
            carbon.check_pue(self.pue)
        if self.carbon_intensity_g_per_kwh is not None:
            try:
                carbon.check_carbon_intensity(self.carbon_intensity_g_per_kwh)
            except InputError as exc:
                raise InputError("carbon_intensity_g_per_kwh", exc.message, exc.allowed) from None
        if self.lifetime_years is not None and not (self.lifetime_years > 0):
            raise InputError("lifetime_years", f"must be positive, got {self.lifetime_years!r}", "> 0")
        if self.hardware:
            from .hardware.catalog import load_catalog

            load_catalog(self.hardware)  # a missing or bad file: InputError naming it
        for name in ("window_s", "micro_batch_ms", "fsync_interval_s", "grid_ttl_s", "grid_stale_s", "grid_timeout_s",
                     "otlp_interval_s", "otlp_timeout_s"):
            if not (getattr(self, name) > 0):
                raise InputError(name, "must be positive", "> 0")
        for name in ("step_wait_ms", "ack_interval_ms", "ingest_hold_ms"):
            if not (getattr(self, name) >= 0):
                raise InputError(name, f"must not be negative, got {getattr(self, name)!r}", ">= 0")
        if not (self.ingest_hold_ms <= 1000):
            raise InputError("ingest_hold_ms", f"at most 1000 (the emitter waits for its acks), got "
                             f"{self.ingest_hold_ms!r}", "0..1000")
        if not (self.ack_interval_ms <= 1000):
            raise InputError("ack_interval_ms", f"at most 1000 (the emitter's flush waits for it), got "
                             f"{self.ack_interval_ms!r}", "0..1000")
        for name in ("micro_batch_steps", "ledger_max_finished", "log_backups", "max_pending_steps", "predictor_threads"):
            if int(getattr(self, name)) < 1:
                raise InputError(name, "must be at least 1", ">= 1")

        if self.grid and self.carbon_intensity_g_per_kwh is not None:
            raise InputError("carbon_intensity_g_per_kwh", "a fixed intensity and --grid exclude each other",
                             "one of them")
        from .energy.grid.sources import parse_grid

        parse_grid(self.grid, self.grid_url, self.region)  # raises InputError naming the field
        if self.otlp is not None and not self.otlp.strip():
            raise InputError("otlp", "empty endpoint", "http://HOST:4317 or https://HOST:4317")

    @property
    def journal_dir(self) -> Path:
        return Path(self.journal) if self.journal else Path(str(self.log) + ".journal")


_FIELDS = {f.name: f for f in fields(SidecarConfig)}


def _type_of(name: str) -> type:
    default = _FIELDS[name].default
    annotation = str(_FIELDS[name].type)
    if isinstance(default, bool) or annotation.startswith("bool"):
        return bool
    if isinstance(default, int) or annotation.startswith("int"):
        return int
    if isinstance(default, float) or annotation.startswith("float"):
        return float
    return str


def _coerce(name: str, value: Any, origin: str) -> Any:
    kind = _type_of(name)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if value is None:
            return None
        return kind(value)
    except (TypeError, ValueError):
        raise InputError(name, f"{origin}: cannot read {value!r} as {kind.__name__}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; defaults shown in --help, parsed as None unless given."""
    parser.add_argument("--config", metavar="FILE", help="TOML file with settings (flags > LLMCO2_* env > file > defaults)")
    group = parser.add_argument_group("settings (each also LLMCO2_<NAME> in the environment or NAME in the TOML file)")
    for f in fields(SidecarConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = _type_of(f.name)
        help_text = f"{f.metadata['help']} [default: {f.default}; env {ENV_PREFIX}{f.name.upper()}]"
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=None, choices=f.metadata["choices"],
                               metavar={int: "N", float: "X"}.get(kind, "TEXT"), help=help_text)


GRID_ENV = ENV_PREFIX + "GRID"
GRID_URL_ENV = ENV_PREFIX + "GRID_URL"


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """``--grid SOURCE`` and ``--grid-url URL`` for commands other than ``serve`` (estimate, replay,
    demo): one call; read them back with :func:`grid_settings`."""
    help_text = _FIELDS["grid"].metadata["help"]
    parser.add_argument("--grid", default=None, metavar="SOURCE",
                        help=f"{help_text} [default: static region; env {GRID_ENV}]")
    parser.add_argument("--grid-url", default=None, metavar="URL",
                        help=f"{_FIELDS['grid_url'].metadata['help']} [env {GRID_URL_ENV}]")


def grid_settings(args: argparse.Namespace | Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{"grid": ..., "grid_url": ...}`` from flags, else ``LLMCO2_GRID``/``LLMCO2_GRID_URL`` (for
    ``SidecarConfig(**grid_settings(args))``); None values mean the default (the static region)."""
    ns = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    env = os.environ if env is None else env
    return {"grid": ns.get("grid") or env.get(GRID_ENV) or None,
            "grid_url": ns.get("grid_url") or env.get(GRID_URL_ENV) or None}


def apply_grid_to_replay(args: argparse.Namespace) -> None:
    """``--grid`` for a simulated replay (``llmco2 replay``), whose accounting takes a region, a fixed
    intensity or an hourly series: ``static:R`` sets ``args.region``, ``csv:PATH`` sets
    ``args.intensity_csv`` (each step at its own hour), a live API is read once now and fixes
    ``args.carbon_intensity`` (a replayed trace priced at the current intensity: said on stderr)."""
    import sys

    g = grid_settings(args)
    if not (g["grid"] or g["grid_url"]):
        return
    from .energy.grid.sources import LIVE, parse_grid, reading_once

    spec = parse_grid(g["grid"], g["grid_url"], getattr(args, "region", None))
    if getattr(args, "carbon_intensity", None) is not None or getattr(args, "intensity_csv", None):
        raise InputError("grid", "--grid replaces --carbon-intensity and --intensity-csv", "one of them")
    if spec.kind == "static":
        args.region = spec.arg
    elif spec.kind == "csv":
        args.intensity_csv = spec.arg
    elif spec.kind in LIVE:
        r = reading_once(spec, getattr(args, "region", None))
        print(f"grid: {r.g_per_kwh:g} gCO2e/kWh ({r.kind}, {r.source}) now, for every step of the trace",
              file=sys.stderr)
        args.carbon_intensity = r.g_per_kwh


def open_grid_source(config: "SidecarConfig"):
    """The :class:`~llmco2_sidecar.energy.grid.sources.GridSource` of a config (not started), or the
    constant ``configured`` reading of ``carbon_intensity_g_per_kwh``."""
    from .energy.grid import sources

    if config.carbon_intensity_g_per_kwh is not None:
        return sources.GridSource(sources.configured_reading(config.carbon_intensity_g_per_kwh))
    spec = sources.parse_grid(config.grid, config.grid_url, config.region)
    return sources.open_source(spec, config.region, config.grid_ttl_s, config.grid_stale_s, config.grid_timeout_s)


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise InputError("config", f"no such file: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError("config", f"{p} is not valid TOML: {exc}") from None
    table = data.get("sidecar", data)
    unknown = sorted(k for k in table if k not in _FIELDS and not isinstance(table[k], dict))
    if unknown:
        raise InputError(f"config:{unknown[0]}", "unknown setting", ", ".join(_FIELDS))
    return {k: v for k, v in table.items() if k in _FIELDS}


def resolve(args: argparse.Namespace | Mapping[str, Any] | None = None,
            env: Mapping[str, str] | None = None) -> SidecarConfig:
    """Merge defaults, the TOML file (``config`` in ``args``), ``LLMCO2_*`` env and flags."""
    ns = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args or {})
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    config_file = ns.get("config") or env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        for k, v in load_toml(config_file).items():
            values[k] = _coerce(k, v, f"config file {config_file}")
    for name in _FIELDS:
        key = ENV_PREFIX + name.upper()
        if key in env and env[key] != "":
            values[name] = _coerce(name, env[key], f"environment {key}")
    for name in _FIELDS:
        if ns.get(name) is not None:
            values[name] = _coerce(name, ns[name], "flag --" + name.replace("_", "-"))
    return SidecarConfig(**values)
