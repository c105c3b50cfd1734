"""Look up per-request carbon from the sidecar (what an API server's middleware calls).

:class:`CarbonQuery` is blocking (any thread); :class:`AsyncCarbonQuery` is for an asyncio server
(uvicorn/FastAPI: never blocks the loop). Both return :class:`RequestCarbon` dataclasses, or None
when the sidecar does not know the request (yet) or cannot be reached: a lookup never raises into
the serving path unless ``raise_errors`` is set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from .._proto import sidecar_pb2 as spb
from .._proto import sidecar_pb2_grpc

log = logging.getLogger("llmco2.query")
_STATES = {spb.RequestCarbon.STATE_RUNNING: "running", spb.RequestCarbon.STATE_FINISHED: "finished",
           spb.RequestCarbon.STATE_ABORTED: "aborted"}


@dataclass(frozen=True)
class RequestCarbon:
    """One request's figures: energy in J, carbon in gCO2e; ``state`` running/finished/aborted."""

    request_id: str
    state: str
    energy_j: float
    prefill_j: float
    decode_j: float
    serving_j: float
    carbon_g: float
    operational_g: float
    embodied_g: float
    prompt_tokens: int
    output_tokens: int
    source: str
    model: str
    gpu: str

    @property
    def final(self) -> bool:
        return self.state in ("finished", "aborted")

    @classmethod
    def from_proto(cls, r: spb.RequestCarbon) -> "RequestCarbon":
        return cls(r.request_id, _STATES.get(r.state, "unknown"), r.energy_j.total, r.energy_j.prefill,
                   r.energy_j.decode, r.energy_j.serving, r.carbon_g.total, r.carbon_g.operational,
                   r.carbon_g.embodied, r.prompt_tokens, r.output_tokens, r.source, r.model, r.gpu)


def _channel_args(target: str, token: str | None, tls_root_cert: bytes | None):
    md = [("authorization", f"Bearer {token}")] if token else None
    creds = grpc.ssl_channel_credentials(root_certificates=tls_root_cert) if tls_root_cert is not None else None
    return md, creds


class CarbonQuery:
    def __init__(self, target: str = "127.0.0.1:50551", token: str | None = None, tls_root_cert: bytes | None = None,
                 raise_errors: bool = False):
        self._md, creds = _channel_args(target, token, tls_root_cert)
        self._channel = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
        self._stub = sidecar_pb2_grpc.CarbonSidecarStub(self._channel)
        self.raise_errors = raise_errors

    def get(self, request_id: str, wait_s: float = 0.0, prefix: bool = False) -> list[RequestCarbon]:
        """Records matching ``request_id`` (exact, or every id starting with it), waiting up to ``wait_s``
        for the request to finish. Empty when unknown or unreachable."""
        try:
            reply = self._stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id=request_id, wait_s=wait_s,
                                                                       prefix=prefix),
                                                metadata=self._md, timeout=wait_s + 5.0)
        except grpc.RpcError as exc:
            if self.raise_errors and exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                log.debug("carbon lookup of %s failed: %s", request_id, exc.code())
            return []
        return [RequestCarbon.from_proto(r) for r in reply.records]

    def close(self) -> None:
        self._channel.close()


class AsyncCarbonQuery:
    def __init__(self, target: str = "127.0.0.1:50551", token: str | None = None, tls_root_cert: bytes | None = None,
                 raise_errors: bool = False):
        self._md, creds = _channel_args(target, token, tls_root_cert)
        self._channel = grpc.aio.secure_channel(target, creds) if creds else grpc.aio.insecure_channel(target)
        self._stub = sidecar_pb2_grpc.CarbonSidecarStub(self._channel)
        self.raise_errors = raise_errors

    async def get(self, request_id: str, wait_s: float = 0.0, prefix: bool = False) -> list[RequestCarbon]:
        try:
            reply = await self._stub.GetRequestCarbon(
                spb.RequestCarbonQuery(request_id=request_id, wait_s=wait_s, prefix=prefix),
                metadata=self._md, timeout=wait_s + 5.0)
        except grpc.RpcError as exc:
            if self.raise_errors and exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return []
        return [RequestCarbon.from_proto(r) for r in reply.records]

    async def close(self) -> None:
        await self._channel.close()
