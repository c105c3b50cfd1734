"""Which vLLM the step hook can run on: feature detection, not a version range.

The hook reads a handful of things from vLLM's v1 engine (:mod:`llmco2_vllm.hook`,
:mod:`llmco2_vllm.patch`). :func:`detect` checks that each exists with the shape the hook uses:

* ``vllm.v1.core.sched.scheduler.Scheduler`` with ``__init__``, ``schedule``,
  ``update_from_output`` (its first argument after ``self`` is the ``SchedulerOutput``) and
  ``_free_request`` (its first argument after ``self`` is the ``Request``), all plain functions;
* ``vllm.v1.core.sched.output.SchedulerOutput``, a dataclass with ``scheduled_new_reqs``,
  ``scheduled_cached_reqs``, ``num_scheduled_tokens`` and ``total_num_scheduled_tokens``;
* ``NewRequestData`` with ``req_id``, ``prompt_token_ids`` and ``num_computed_tokens``;
* ``CachedRequestData`` either with the columns ``req_ids`` and ``num_computed_tokens`` (vLLM
  0.10 and later) or one per request with ``req_id`` and ``num_computed_tokens`` (earlier);
* ``vllm.v1.request.Request`` with ``request_id``, ``status`` and ``num_prompt_tokens`` (set in
  its ``__init__``) and ``num_output_tokens``.

Whatever has all of them is hooked; an engine lacking one runs unhooked with one log line naming
exactly what is missing (:func:`check`). A vLLM outside :data:`TESTED`, the releases the real
end-to-end test passed on (``tools/vllm_compat.sh``, ``benchmarks/results/vllm_compat.md``), gets
one warning and is hooked all the same.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("vllm.llmco2")

# inclusive (major, minor) range of vLLM releases the real end-to-end test passed on, from
# benchmarks/results/vllm_compat.md (tools/vllm_compat.sh); outside it: one warning, still hooked
TESTED = ((0, 27), (0, 32))
_WARNED_ENV = "LLMCO2_VLLM_COMPAT_WARNED"  # inherited by vLLM's child processes: one warning per server

SCHEDULER_METHODS = ("__init__", "schedule", "update_from_output", "_free_request")
OUTPUT_FIELDS = ("scheduled_new_reqs", "scheduled_cached_reqs", "num_scheduled_tokens", "total_num_scheduled_tokens")
NEW_REQUEST_FIELDS = ("req_id", "prompt_token_ids", "num_computed_tokens")
CACHED_COLUMNS = ("req_ids", "num_computed_tokens")
CACHED_PER_REQUEST = ("req_id", "num_computed_tokens")
REQUEST_INIT_ATTRS = ("request_id", "status", "num_prompt_tokens")
REQUEST_PROPERTIES = ("num_output_tokens",)


@dataclass(frozen=True)
class Features:
    """What :func:`detect` found: ``missing`` names each absent or misshapen feature ('' when none)."""

    missing: tuple[str, ...] = ()
    cached_layout: str = "columns"  # "columns" (CachedRequestData.req_ids) or "per_request" (vLLM < 0.10)

    @property
    def ok(self) -> bool:
        return not self.missing


def detect(scheduler_cls: Any = None, output_module: Any = None, request_cls: Any = None) -> Features:
    """Check vLLM's scheduler, ``SchedulerOutput`` and ``Request`` (or the stand-ins passed) for every
    feature the hook reads. Imports vLLM's modules when none are passed; never raises."""
    missing: list[str] = []
    if scheduler_cls is None:
        scheduler_cls = _import("vllm.v1.core.sched.scheduler", "Scheduler", missing)
    if output_module is None:
        output_module = _import("vllm.v1.core.sched.output", None, missing)
    if request_cls is None:
        request_cls = _import("vllm.v1.request", "Request", missing)
    if scheduler_cls is not None:
        missing += scheduler_missing(scheduler_cls)
    layout = "columns"
    if output_module is not None:
        found, layout = _output_missing(output_module)
        missing += found
    if request_cls is not None:
        missing += _request_missing(request_cls)
    return Features(missing=tuple(missing), cached_layout=layout)


def check(version: str, features: Features | None = None) -> bool:
    """Whether to hook this vLLM; logs why not (each missing feature) or warns once on an untested
    release (:data:`TESTED`)."""
    features = detect() if features is None else features
    if not features.ok:
        log.warning("llmco2: vLLM %s lacks what the step hook reads: %s; running unhooked (carbon accounting off)",
                    version or "(unknown version)", "; ".join(features.missing))
        return False
    if not version_tested(version) and not os.environ.get(_WARNED_ENV):
        os.environ[_WARNED_ENV] = "1"
        log.warning("llmco2: vLLM %s is untested with llmco2 (the end-to-end test passed on %d.%d to %d.%d); every "
                    "scheduler method and SchedulerOutput field the hook reads is there, so carbon accounting is on",
                    version or "(unknown version)", *TESTED[0], *TESTED[1])
    return True


def version_tested(version: str) -> bool:
    """True for releases in :data:`TESTED` (their dev, rc and post releases included)."""
    parts = []
    for piece in (version or "").split(".")[:2]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            return False
        parts.append(int(digits))
    if len(parts) < 2:
        return False
    return TESTED[0] <= tuple(parts) <= TESTED[1]


# ---- the checks -----------------------------------------------------------------------------------
def _import(module: str, name: str | None, missing: list[str]) -> Any:
    try:
        import importlib

        mod = importlib.import_module(module)
    except Exception as exc:
        missing.append(f"module {module} ({type(exc).__name__}: {exc})")
        return None
    if name is None:
        return mod
    obj = getattr(mod, name, None)
    if obj is None:
        missing.append(f"{module}.{name}")
    return obj


def scheduler_missing(cls: Any) -> list[str]:
    """What the scheduler class lacks: a wrapped method, or one whose first argument after ``self``
    is not positional (each entry names the method and what was found)."""
    name = getattr(cls, "__name__", "Scheduler")
    out = []
    flagged = set()
    for meth in SCHEDULER_METHODS:
        fn = inspect.getattr_static(cls, meth, None) if isinstance(cls, type) else None
        if fn is None or not callable(getattr(cls, meth, None)):
            out.append(f"{name}.{meth}()")
            flagged.add(meth)
        elif isinstance(fn, (staticmethod, classmethod)):
            out.append(f"{name}.{meth}() as an instance method (it is a {type(fn).__name__})")
            flagged.add(meth)
    for meth, what in (("update_from_output", "the SchedulerOutput"), ("_free_request", "the Request")):
        if meth in flagged:
            continue
        try:
            sig = inspect.signature(getattr(cls, meth))
        except (TypeError, ValueError):  # no signature (a C function): cannot be checked, assume vLLM's
            continue
        params = list(sig.parameters.values())
        if len(params) < 2 or params[0].kind not in _POSITIONAL or params[1].kind not in _POSITIONAL:
            out.append(f"{name}.{meth}(self, <{what}>, ...) taking {what} as its first argument (found {meth}{sig})")
    return out


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def first_argument(method: Any) -> str:
    """The name of a method's first parameter after ``self`` ('' when it has no signature)."""
    try:
        params = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return ""
    return params[1] if len(params) > 1 else ""


def _fields(cls: Any) -> set[str] | None:
    """A class's field names: dataclass fields, else annotations and class attributes; None if no class."""
    if cls is None:
        return None
    if dataclasses.is_dataclass(cls):
        names = {f.name for f in dataclasses.fields(cls)}
    else:
        names = set()
        for klass in getattr(cls, "__mro__", (cls,)):
            names |= set(getattr(klass, "__annotations__", {}))
    names |= {n for n in dir(cls) if not n.startswith("__")}
    return names


def _output_missing(mod: Any) -> tuple[list[str], str]:
    out: list[str] = []
    base = getattr(mod, "__name__", "vllm.v1.core.sched.output")
    for cls_name, wanted in (("SchedulerOutput", OUTPUT_FIELDS), ("NewRequestData", NEW_REQUEST_FIELDS)):
        names = _fields(getattr(mod, cls_name, None))
        if names is None:
            out.append(f"{base}.{cls_name}")
            continue
        out += [f"{cls_name}.{f}" for f in wanted if f not in names]
    layout = "columns"
    names = _fields(getattr(mod, "CachedRequestData", None))
    if names is None:
        out.append(f"{base}.CachedRequestData")
    elif not all(f in names for f in CACHED_COLUMNS):
        if all(f in names for f in CACHED_PER_REQUEST):
            layout = "per_request"
        else:
            lacking = [f for f in CACHED_COLUMNS if f not in names]
            out.append("CachedRequestData." + " and CachedRequestData.".join(lacking)
                       + " (or, before vLLM 0.10, one CachedRequestData per request with req_id and num_computed_tokens)")
    return out, layout


def _request_missing(cls: Any) -> list[str]:
    name = getattr(cls, "__name__", "Request")
    assigned: set[str] = set()
    for klass in getattr(cls, "__mro__", (cls,)):
        init = klass.__dict__.get("__init__") if hasattr(klass, "__dict__") else None
        code = getattr(init, "__code__", None)
        if code is not None:
            assigned |= set(code.co_names)  # attribute names stored or read in __init__ (self.x = ...)
        assigned |= set(getattr(klass, "__annotations__", {}))
        if dataclasses.is_dataclass(klass):
            assigned |= {f.name for f in dataclasses.fields(klass)}
    out = [f"{name}.{a}" for a in REQUEST_INIT_ATTRS if a not in assigned and not hasattr(cls, a)]
    out += [f"{name}.{p}" for p in REQUEST_PROPERTIES if not hasattr(cls, p) and p not in assigned]
    return out
