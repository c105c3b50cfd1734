"""Asynchronous request-carbon lookups for the API server (the sidecar's ``GetRequestCarbon``).

Runs on the server's asyncio loop with a ``grpc.aio`` channel created on first use; a lookup never
raises: any failure (sidecar down, timeout, unknown request) comes back as ``None``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

log = logging.getLogger("vllm.llmco2")

# The sidecar is local (loopback or a Unix socket): retry a lost connection at least every second
# instead of gRPC's default backoff (1 s growing to 120 s), so that responses carry carbon again
# within about a second of a sidecar restart. While it is down a lookup fails at once (no wait).
RECONNECT_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                     ("grpc.max_reconnect_backoff_ms", 1000))


@dataclass(frozen=True)
class CarbonFigure:
    """Carbon of one HTTP request: the sum over its engine requests."""

    request_id: str
    carbon_g: float
    energy_j: float
    engine_requests: int
    finished: bool  # False: some engine request still running (the figures are partial)
    error: str = ""  # why an engine request could not be accounted (its record's source is "error")
    #: the predictor's typical error on this deployment, in % (the largest over the engine requests);
    #: 0: unknown or measured
    expected_error_pct: float = 0.0


class CarbonLookup:
    """``GetRequestCarbon`` with ``prefix`` over one ``grpc.aio`` channel (one per event loop)."""

    def __init__(self, target: str, token: str | None = None):
        self.target = target
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._channel = None
        self._stub = None
        self._loop = None
        self.failures = 0

    def _ensure(self):
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            import grpc

            from llmco2_sidecar._proto import sidecar_pb2_grpc

            self._channel = grpc.aio.insecure_channel(self.target, options=RECONNECT_OPTIONS)
            self._stub = sidecar_pb2_grpc.CarbonSidecarStub(self._channel)
            self._loop = loop
        return self._stub

    async def request_carbon(self, request_id: str, engine_prefix: str, wait_s: float) -> CarbonFigure | None:
        """Carbon of every engine request whose id starts with ``engine_prefix``; None if unknown."""
        try:
            from llmco2_sidecar._proto import sidecar_pb2 as spb

            stub = self._ensure()
            reply = await stub.GetRequestCarbon(
                spb.RequestCarbonQuery(request_id=engine_prefix, wait_s=wait_s, prefix=True),
                timeout=wait_s + 1.0, metadata=self._metadata)
        except Exception as exc:  # grpc.aio.AioRpcError (NOT_FOUND, UNAVAILABLE, DEADLINE_EXCEEDED) or else
            self.failures += 1
            code = getattr(exc, "code", None)
            name = code().name if callable(code) else type(exc).__name__
            if self.failures == 1 or self.failures % 1000 == 0:
                log.info("llmco2: carbon of %s not available (%s; %d lookups so far)", request_id, name, self.failures)
            return None
        recs = list(reply.records)
        if not recs:
            return None
        finished = all(r.state in (2, 3) for r in recs)  # STATE_FINISHED, STATE_ABORTED
        errors = [r for r in recs if r.source == "error"]
        error = ""
        if errors:  # the first reason, and how many of the engine requests could not be accounted
            error = errors[0].error or "not accounted"
            if len(recs) > 1:
                error = f"{len(errors)} of {len(recs)} engine requests not accounted: {error}"
        return CarbonFigure(
            request_id=request_id,
            carbon_g=sum(r.carbon_g.total for r in recs),
            energy_j=sum(r.energy_j.total for r in recs),
            engine_requests=len(recs),
            finished=finished,
            error=error,
            expected_error_pct=max((r.expected_error_pct for r in recs), default=0.0),
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None
