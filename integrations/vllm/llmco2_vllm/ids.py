"""The id the client knows a vLLM request by, from the engine's request id.

vLLM's OpenAI server names the engine requests of one HTTP request ``cmpl-{X}-{prompt index}``
(/v1/completions) and ``chatcmpl-{X}`` (/v1/chat/completions), X being the request's
``X-Request-Id`` (the plugin's middleware sets one and echoes it when the client sent none); from
0.14 the engine appends ``-`` and 8 random hex characters (``cmpl-my-stream-1-0-9bf73448``). The
client sees X in the ``x-request-id`` response header (and ``cmpl-X`` / ``chatcmpl-X`` as the
response's ``id``). Ids of another shape (offline ``LLM.generate``, other routes) map to "".
Runs on the emitter's sender thread (``EmitterConfig.client_request_id``), never on the engine's.
"""

from __future__ import annotations

import re

_ENGINE_ID = re.compile(r"^(cmpl|chatcmpl)-(.+?)(-\d+)?-[0-9a-f]{8}$", re.DOTALL)


def client_request_id(engine_id: str) -> str:
    """``cmpl-X-0-9bf73448`` and ``chatcmpl-X-9bf73448`` -> ``X``; anything else -> ""."""
    m = _ENGINE_ID.match(engine_id)
    if m is None:
        return ""
    kind, base, index = m.groups()
    if kind == "chatcmpl" and index:  # chat ids have no prompt index: "-3" belongs to X itself
        base += index
    return base
