"""The StreamEvents handler's ingest steps (a mixin of :class:`~.server.CarbonSidecarService`): one
message journaled, validated and handed on with its Ack written or merged, the held steps-only
messages of :mod:`.hold` ingested together, and the ways a stream ends early (a bad message, a disk
that cannot be written), each after acknowledging what was journaled."""

from __future__ import annotations

import logging
import time

import grpc

from .acks import AckBatcher
from .core import DiskUnavailable
from .hold import HeldMessages
from .wire import BadMessage, StepsOnly

log = logging.getLogger("llmco2.server")
BAD_MESSAGE_LOG_INTERVAL_S = 60.0


class StreamIngestMixin:
    """Needs ``self.core`` (a :class:`~.core.SidecarCore`), ``self.health`` and ``self._bad_logged``."""

    async def _ingest(self, context, stream, batcher: AckBatcher | None, item, since: float | None = None,
                      decide: bool = True) -> None:
        """Journal, validate and hand on one events message; its Ack written or merged. A disk that
        cannot be written ends the stream with UNAVAILABLE (what was journaled is acknowledged first)."""
        core = self.core
        if core.pipeline.pending_steps > core.config.max_pending_steps:  # backpressure (a busy sidecar)
            await core.wait_for_room()
        if type(item) is StepsOnly:
            events = item.parse_events()
            if isinstance(events, BadMessage):
                await self._abort(context, batcher, grpc.StatusCode.INVALID_ARGUMENT, self._bad_message(events, stream))
        else:
            events = item.msg.events
        try:
            ack = core.handle_events(stream, events, item.events_bytes)
        except DiskUnavailable as exc:
            if batcher is not None:  # what was journaled before is acknowledged first
                await batcher.flush()
            await self._unavailable(context, exc)
        if batcher is None:
            await context.write(ack)
        else:
            batcher.add(ack, since, decide)

    async def _ingest_held(self, context, stream, batcher, held: HeldMessages | None, decide: bool = True) -> None:
        """Ingest every held message of the stream, oldest first; their Acks merged into one
        (``decide=False``: the caller ingests one more message and the Ack goes with its)."""
        if held is None or not held.items:
            return
        since = held.first_at
        for item in held.take():
            await self._ingest(context, stream, batcher, item, since, decide=False)
        if decide:
            batcher.decide()

    def _ingest_due(self, stream, batcher: AckBatcher, items: list, since: float) -> list:
        """The hold's timer (a quiet stream): ingest ``items``; those a disk in trouble left are
        returned (held again: the next message or the stream's end retries them, and ends the
        stream with UNAVAILABLE if the disk still cannot be written)."""
        core = self.core
        for k, item in enumerate(items):
            events = item.parse_events()
            if isinstance(events, BadMessage):  # the next message or the stream's end ends the stream
                return items[k:]
            try:
                ack = core.handle_events(stream, events, item.events_bytes)
            except DiskUnavailable:
                batcher.decide()
                return items[k:]
            batcher.add(ack, since, decide=False)
        batcher.decide()
        return []

    async def _abort(self, context, batcher, code, details: str) -> None:
        """End the stream with ``code``; journaled messages are acknowledged first."""
        if batcher is not None:
            await batcher.flush()
        await context.abort(code, details)

    def _bad_message(self, msg: BadMessage, stream) -> str:
        """Count it; one log line a minute at most (a broken client sends many)."""
        self.core.metrics.bad_messages.inc()
        now = time.monotonic()
        if now - self._bad_logged >= BAD_MESSAGE_LOG_INTERVAL_S:
            self._bad_logged = now
            log.warning("a message that does not parse (%d bytes, engine %s): %s; stream ended with INVALID_ARGUMENT "
                        "(llmco2_bad_messages_total counts them)", msg.size,
                        stream.stream_id if stream is not None else "?", msg.error)
        return f"message: does not parse as llmco2.v1.EngineMessage ({msg.size} bytes: {msg.error})"

    async def _unavailable(self, context, exc: DiskUnavailable) -> None:
        await self.health.refresh()
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}: not acknowledged, send it again later")

