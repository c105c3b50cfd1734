"""ASGI middleware: per-request carbon in vLLM's OpenAI-compatible responses.

For ``POST /v1/completions`` and ``POST /v1/chat/completions``:

* the request gets an ``X-Request-Id`` when the client sent none (a random hex id), so the engine's
  request ids are known: vLLM names them ``cmpl-{X-Request-Id}-{prompt index}-{8 random}`` and
  ``chatcmpl-{X-Request-Id}-{8 random}``; the response echoes ``x-request-id``;
* non-streaming responses are held until the sidecar has attributed every engine request of the
  HTTP request (``GetRequestCarbon`` with the id prefix, waiting at most ``LLMCO2_RESPONSE_WAIT_S``)
  and get ``x-llmco2-carbon-g`` (gCO2e, operational + embodied) and ``x-llmco2-energy-j``, and
  with a predicted figure ``x-llmco2-expected-error-pct``: the predictor's typical error on this
  deployment (its held-out MAPE on the most similar data it never saw; ``expected_error_pct`` in
  the streaming event);
  past the wait they get ``x-llmco2-carbon-status: pending`` instead (the record still lands in
  the sidecar's carbon log and stays retrievable by request id); ``x-llmco2-wait-ms`` says how
  long the response was held for its carbon (the latency the plugin added to it);
* streaming responses (server-sent events) get one more event just before ``data: [DONE]``:
  ``{"object": "llmco2.carbon", "request_id": ..., "carbon_g": ..., "energy_j": ..., "wait_ms": ...}``
  (with ``"status": "pending"`` and null figures past the wait);
* a request the sidecar could not account (its record says ``source: "error"``, e.g. the predictor
  failed on its steps) gets ``x-llmco2-carbon-status: error`` and the reason in ``x-llmco2-error``
  (``"status": "error"``, null figures and ``"error"`` in the event): no partial figure is shown;
* on vLLM's CPU platform (a test engine) responses also carry ``x-llmco2-note`` (``note`` in the
  event): the step times are a CPU's, so the figures are not a GPU's (:mod:`llmco2_vllm.platform`).

Any failure leaves the response as vLLM made it. The plugin adds this middleware by itself when
``LLMCO2_SIDECAR`` is set; ``--middleware llmco2_vllm.middleware.CarbonMiddleware`` does the same
by hand.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from .lookup import CarbonFigure, CarbonLookup
from .platform import platform_note
from .settings import Settings

log = logging.getLogger("vllm.llmco2")

ROUTES = {"/v1/completions": "cmpl", "/v1/chat/completions": "chatcmpl"}
DONE_MARK = b"data: [DONE]"


def carbon_event(request_id: str, figure: CarbonFigure | None, wait_ms: float | None = None) -> dict:
    """The final SSE event's payload (``wait_ms``: how long the event waited for the figure)."""
    if figure is None or not figure.finished:
        event = {"object": "llmco2.carbon", "request_id": request_id, "status": "pending",
                 "carbon_g": None, "energy_j": None}
    elif figure.error:
        event = {"object": "llmco2.carbon", "request_id": request_id, "status": "error",
                 "carbon_g": None, "energy_j": None, "error": figure.error}
    else:
        event = {"object": "llmco2.carbon", "request_id": request_id, "status": "final",
                 "carbon_g": figure.carbon_g, "energy_j": figure.energy_j}
        if figure.expected_error_pct > 0:
            event["expected_error_pct"] = round(figure.expected_error_pct, 1)
    if wait_ms is not None:
        event["wait_ms"] = round(wait_ms, 1)
    return event


def header_text(text: str, limit: int = 300) -> bytes:
    """``text`` as an HTTP header value: printable ASCII on one line (others become ``?``), at most
    ``limit`` characters."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in text.replace("\r", " ").replace("\n", " "))
    return (clean[: limit - 3] + "..." if len(clean) > limit else clean).encode("ascii")


def carbon_headers(figure: CarbonFigure | None, wait_ms: float | None = None) -> list[tuple[bytes, bytes]]:
    """Response headers of a non-streaming response (``x-llmco2-wait-ms``: how long it was held)."""
    wait = [(b"x-llmco2-wait-ms", format(wait_ms, ".1f").encode())] if wait_ms is not None else []
    if figure is None or not figure.finished:
        return [(b"x-llmco2-carbon-status", b"pending"), *wait]
    if figure.error:
        return [(b"x-llmco2-carbon-status", b"error"), (b"x-llmco2-error", header_text(figure.error)), *wait]
    err = ([(b"x-llmco2-expected-error-pct", format(figure.expected_error_pct, ".1f").encode())]
           if figure.expected_error_pct > 0 else [])
    return [(b"x-llmco2-carbon-g", format(figure.carbon_g, ".6g").encode()),
            (b"x-llmco2-energy-j", format(figure.energy_j, ".6g").encode()),
            (b"x-llmco2-carbon-status", b"final"), *err, *wait]


class CarbonMiddleware:
    """Pure ASGI middleware (see the module docstring). ``settings``/``lookup`` are for tests."""

    def __init__(self, app, settings: Settings | None = None, lookup: CarbonLookup | None = None):
        self.app = app
        self.settings = settings if settings is not None else Settings.from_env()
        if lookup is None and self.settings is not None:
            lookup = CarbonLookup(self.settings.target, self.settings.token)
        self.lookup = lookup
        self.note = platform_note() if self.lookup is not None else ""  # a CPU test engine says so

    async def __call__(self, scope, receive, send):
        if (scope.get("type") != "http" or self.lookup is None or scope.get("method") != "POST"
                or scope.get("path") not in ROUTES):
            await self.app(scope, receive, send)
            return
        kind = ROUTES[scope["path"]]
        headers = list(scope.get("headers") or [])
        rid = next((v.decode("latin-1") for k, v in headers if k.lower() == b"x-request-id"), None)
        if not rid:
            rid = uuid.uuid4().hex
            headers.append((b"x-request-id", rid.encode()))
            scope = dict(scope, headers=headers)
        exchange = _Exchange(self, send, rid, f"{kind}-{rid}-")
        await self.app(scope, receive, exchange.send)
        await exchange.finish()

    async def figure(self, rid: str, prefix: str) -> tuple[CarbonFigure | None, float]:
        """The request's carbon (None: pending) and the milliseconds the response waited for it."""
        if self.settings.response_wait_s <= 0:  # responses are not held: no lookup at all ("pending")
            return None, 0.0
        t0 = time.perf_counter()
        try:
            fig = await self.lookup.request_carbon(rid, prefix, self.settings.response_wait_s)
        except Exception as exc:  # pragma: no cover - request_carbon does not raise
            log.info("llmco2: carbon lookup failed: %r", exc)
            fig = None
        return fig, (time.perf_counter() - t0) * 1e3


class _Exchange:
    """One HTTP exchange: decides pass-through, held (JSON) or streamed (SSE) on the response start."""

    def __init__(self, mw: CarbonMiddleware, send, rid: str, prefix: str):
        self.mw, self._send, self.rid, self.prefix = mw, send, rid, prefix
        self.mode = None  # "pass", "hold", "stream"
        self.start = None
        self.body: list[bytes] = []
        self.done_sent = False

    async def send(self, message):
        mtype = message.get("type")
        if mtype == "http.response.start":
            hdrs = list(message.get("headers") or [])
            if not any(k.lower() == b"x-request-id" for k, _ in hdrs):
                hdrs.append((b"x-request-id", self.rid.encode()))
            message = dict(message, headers=hdrs)
            ctype = next((v for k, v in hdrs if k.lower() == b"content-type"), b"")
            if message.get("status") != 200:
                self.mode = "pass"
            elif b"text/event-stream" in ctype:
                self.mode = "stream"
            else:
                self.mode = "hold"
                self.start = message
                return
            await self._send(message)
            return
        if mtype != "http.response.body" or self.mode == "pass" or self.mode is None:
            await self._send(message)
            return
        if self.mode == "hold":
            self.body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._release()
            return
        # streaming: put the carbon event right before "data: [DONE]"
        chunk = message.get("body", b"")
        at = chunk.find(DONE_MARK) if not self.done_sent else -1
        if at < 0:
            await self._send(message)
            return
        self.done_sent = True
        if at > 0:
            await self._send({"type": "http.response.body", "body": chunk[:at], "more_body": True})
        fig, wait_ms = await self.mw.figure(self.rid, self.prefix)
        payload = carbon_event(self.rid, fig, wait_ms)
        if self.mw.note:
            payload["note"] = self.mw.note
        event = b"data: " + json.dumps(payload).encode() + b"\n\n"
        await self._send({"type": "http.response.body", "body": event, "more_body": True})
        await self._send(dict(message, body=chunk[at:]))

    async def _release(self):
        start, self.start = self.start, None
        if start is None:
            return
        fig, wait_ms = await self.mw.figure(self.rid, self.prefix)
        note = [(b"x-llmco2-note", self.mw.note.encode())] if self.mw.note else []
        start = dict(start, headers=list(start["headers"]) + carbon_headers(fig, wait_ms) + note)
        await self._send(start)
        body, self.body = b"".join(self.body), []
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def finish(self):
        """The app returned: release a held response that never finished its body."""
        if self.mode == "hold" and self.start is not None:
            await self._release()
