"""The GPU and server catalog: a bundled TOML (``catalog.toml``, sources in ``SOURCE.md``) that users
extend or override with their own TOML file of the same layout.

Override file: pass ``extra=PATH`` to :func:`load_catalog`, or set ``LLMCO2_HARDWARE=PATH``. An entry in
the user's file replaces or adds ``[gpu."ID"]`` / ``[server."ID"]`` keys; unspecified fields of an
existing entry keep their bundled values, so ``[gpu."H100-SXM5-80GB"] idle_w = 71.5`` is a valid file.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

from ..errors import InputError
from .spec import GPUSpec, ServerSpec

BUNDLED = Path(__file__).with_name("catalog.toml")
_GPU_FIELDS = ("name", "architecture", "dense_tflops", "memory_gb", "mem_bandwidth_gb_s", "nvlink_gb_s", "pcie_gb_s",
               "tdp_w", "idle_w", "die_area_mm2", "process_node")


@dataclass(frozen=True)
class Catalog:
    gpus: dict[str, GPUSpec]
    servers: dict[str, ServerSpec]
    aliases: dict[str, str]

    def gpu(self, name: str) -> GPUSpec:
        key = self.resolve_gpu_id(name)
        return self.gpus[key]

    def resolve_gpu_id(self, name: str) -> str:
        if not name:
            raise InputError("gpu", "missing", ", ".join(self.known_names()))
        lowered = {k.lower(): k for k in self.gpus}
        lowered_alias = {k.lower(): v for k, v in self.aliases.items()}
        key = name.strip()
        if key.lower() in lowered:
            return lowered[key.lower()]
        if key.lower() in lowered_alias:
            return lowered_alias[key.lower()]
        # NVML names such as "NVIDIA H100 80GB HBM3" or "NVIDIA A100-SXM4-80GB"
        norm = key.lower().replace("nvidia", "").replace(" ", "-").strip("-")
        for k in self.gpus:
            if k.lower() == norm or self.gpus[k].name.lower() == key.lower():
                return k
        raise InputError("gpu", f"unknown GPU {name!r}", ", ".join(self.known_names()))

    def known_names(self) -> list[str]:
        """GPU ids, then the aliases that are not also ids, each once (error messages list them)."""
        seen = {k.lower() for k in self.gpus}
        out = list(self.gpus)
        for alias in sorted(self.aliases):
            if alias.lower() not in seen:
                seen.add(alias.lower())
                out.append(alias)
        return out

    def server(self, server_id: str) -> ServerSpec:
        for k, v in self.servers.items():
            if k.lower() == server_id.lower():
                return v
        raise InputError("server", f"unknown server {server_id!r}", ", ".join(self.servers))

    def server_for_gpu(self, gpu_id: str) -> ServerSpec | None:
        """The paper's DGX server built from this GPU, if any (for host idle power)."""
        for spec in self.servers.values():
            if spec.gpu_id == gpu_id:
                return spec
        return None


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _gpu_from_table(gid: str, t: dict, origin: str) -> GPUSpec:
    missing = [f for f in _GPU_FIELDS if f not in t]
    if missing:
        raise InputError(f"gpu.{gid}.{missing[0]}", f"missing in {origin}", "see hardware/catalog.toml for the layout")
    sources = {"all": t.get("source", origin)}
    if "idle_w_source" in t:
        sources["idle_w"] = t["idle_w_source"]
    if "idle_ctx_w_source" in t:
        sources["idle_ctx_w"] = t["idle_ctx_w_source"]
    try:
        return GPUSpec(
            gpu_id=gid, name=t["name"], architecture=t["architecture"],
            dense_tflops={k: float(v) for k, v in t["dense_tflops"].items()},
            memory_gb=float(t["memory_gb"]), mem_bandwidth_gb_s=float(t["mem_bandwidth_gb_s"]),
            nvlink_gb_s=float(t["nvlink_gb_s"]), pcie_gb_s=float(t["pcie_gb_s"]), tdp_w=float(t["tdp_w"]),
            idle_w=float(t["idle_w"]), die_area_mm2=float(t["die_area_mm2"]), process_node=str(t["process_node"]),
            sm_count=int(t.get("sm_count", 0)), l2_cache_mb=float(t.get("l2_cache_mb", 0.0)),
            flags=str(t.get("flags", "")), idle_ctx_w=float(t.get("idle_ctx_w", 0.0)), sources=sources,
        )
    except (TypeError, ValueError) as exc:
        raise InputError(f"gpu.{gid}", f"bad value in {origin}: {exc}") from None


def _server_from_table(sid: str, t: dict) -> ServerSpec:
    return ServerSpec(
        server_id=sid, name=t["name"], gpu_id=t["gpu_id"], gpus_per_node=int(t["gpus_per_node"]),
        cpu_model=t["cpu_model"], cpus_per_node=int(t["cpus_per_node"]), cpu_cores_total=int(t["cpu_cores_total"]),
        system_memory_tb=float(t["system_memory_tb"]), system_max_power_w=float(t["system_max_power_w"]),
        host_idle_w=float(t["host_idle_w"]),
        sources={"all": t.get("source", ""), "host_idle_w": t.get("host_idle_w_source", "")},
    )


def load_catalog(extra: str | os.PathLike | None = None) -> Catalog:
    """The bundled catalog, merged with ``extra`` or ``$LLMCO2_HARDWARE`` when given."""
    extra = extra or os.environ.get("LLMCO2_HARDWARE") or None
    return _load_catalog(str(extra) if extra else None)


@functools.lru_cache(maxsize=8)
def _load_catalog(extra: str | None) -> Catalog:
    with open(BUNDLED, "rb") as fh:
        data = tomllib.load(fh)
    origin = str(BUNDLED)
    if extra:
        path = Path(extra)
        if not path.is_file():
            raise InputError("hardware", f"override file {extra} does not exist", "a TOML file")
        try:
            with open(path, "rb") as fh:
                data = _merge(data, tomllib.load(fh))
        except tomllib.TOMLDecodeError as exc:
            raise InputError("hardware", f"{extra} is not valid TOML: {exc}") from None
        origin = f"{BUNDLED} + {extra}"
    gpus = {gid: _gpu_from_table(gid, t, origin) for gid, t in data.get("gpu", {}).items()}
    servers = {sid: _server_from_table(sid, t) for sid, t in data.get("server", {}).items()}
    aliases = {k: v for k, v in data.get("aliases", {}).items()}
    aliases.update(data.get("aliases_nvml", {}))
    for alias, target in aliases.items():
        if target not in gpus:
            raise InputError(f"aliases.{alias}", f"points to unknown GPU {target!r}", ", ".join(gpus))
    return Catalog(gpus=gpus, servers=servers, aliases=aliases)


def load_gpu(name: str, extra: str | None = None) -> GPUSpec:
    """A GPU by catalog id, alias (``A100``, ``H100``) or NVML name."""
    return load_catalog(extra).gpu(name)


def list_gpus(extra: str | None = None) -> list[str]:
    return list(load_catalog(extra).gpus)


def load_server(server_id: str, extra: str | None = None) -> ServerSpec:
    return load_catalog(extra).server(server_id)
