"""The plugin's settings, all from the environment (one switch: ``LLMCO2_SIDECAR``).

=========================  ===================================================================
``LLMCO2_SIDECAR``         unset: the plugin does nothing. ``host:port``, ``unix:/path`` or
                           ``auto`` (start ``llmco2 serve`` on a private Unix socket and stop it
                           with the server).
``LLMCO2_GPU``             GPU type of the replica (catalog id or alias, e.g. ``A100``,
                           ``H100-SXM5-80GB``); default: the name NVML reports for GPU 0.
``LLMCO2_RESPONSE_WAIT_S`` how long a response waits for its carbon (default 2.0 s); past it the
                           response carries ``x-llmco2-carbon-status: pending``. 0: responses
                           are never held (no lookup; always ``pending``); the carbon is in the
                           sidecar's log and ``GetRequestCarbon``.
``LLMCO2_BUFFER_EVENTS``   events buffered while the sidecar is away (default 100000).
``LLMCO2_TOKEN``           bearer token for the sidecar (optional).
``LLMCO2_FLUSH_MS``        the hook hands its step events to the emitter at most this often while
                           the engine is busy (default 50 ms); a finish (which a response waits
                           for) is handed over at once, with the steps before it.
``LLMCO2_LOG``             carbon log path of an ``auto`` sidecar (default: the sidecar's).
``LLMCO2_STEP_DUMP``       debugging: a JSON-lines file receiving the engine's scheduled tokens
                           per emitted step.
=========================  ===================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ENV_SWITCH = "LLMCO2_SIDECAR"


@dataclass(frozen=True)
class Settings:
    target: str
    gpu: str = ""
    response_wait_s: float = 2.0
    buffer_events: int = 100_000
    token: str | None = None
    step_dump: str | None = None
    flush_ms: float = 50.0

    @classmethod
    def from_env(cls, env: "os._Environ[str] | dict[str, str] | None" = None) -> "Settings | None":
        """The settings, or None when the switch is off."""
        env = os.environ if env is None else env
        target = (env.get(ENV_SWITCH) or "").strip()
        if not target:
            return None
        return cls(
            target=target,
            gpu=(env.get("LLMCO2_GPU") or "").strip(),
            response_wait_s=_float(env, "LLMCO2_RESPONSE_WAIT_S", 2.0, 0.0, 30.0),
            buffer_events=int(_float(env, "LLMCO2_BUFFER_EVENTS", 100_000, 1, 10_000_000)),
            token=env.get("LLMCO2_TOKEN") or None,
            step_dump=env.get("LLMCO2_STEP_DUMP") or None,
            flush_ms=_float(env, "LLMCO2_FLUSH_MS", 50.0, 0.0, 10_000.0),
        )


def _float(env, name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return min(hi, max(lo, value))
