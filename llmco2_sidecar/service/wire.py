"""What the StreamEvents call receives: the request deserializer that never raises (bytes that are
not an EngineMessage become a :class:`BadMessage`, which the handler answers with INVALID_ARGUMENT)
and keeps the EventBatch's wire bytes for the journal (:class:`Received`)."""

from __future__ import annotations

from .._proto import events_pb2 as pb


class BadMessage:
    """What the StreamEvents deserializer hands on for bytes that are not an EngineMessage."""

    def __init__(self, size: int, error: str):
        self.size = size
        self.error = error


def parse_engine_message(data: bytes):
    """The StreamEvents request deserializer: an EngineMessage, or a :class:`BadMessage` (the handler
    then ends the stream with INVALID_ARGUMENT, instead of gRPC's UNKNOWN and a traceback)."""
    try:
        return pb.EngineMessage.FromString(data)
    except Exception as exc:  # google.protobuf.message.DecodeError, and what a C parser raises
        return BadMessage(len(data), str(exc) or type(exc).__name__)


class Received:
    """A parsed EngineMessage and, when the message is nothing but its ``events`` field, that
    field's bytes as they came (the journal keeps them: no serialisation again per message)."""

    __slots__ = ("msg", "events_bytes")

    def __init__(self, msg, events_bytes: bytes | None):
        self.msg = msg
        self.events_bytes = events_bytes


_EVENTS_TAG = 0x12  # EngineMessage.events: field 2, length-delimited


def events_payload(data: bytes) -> bytes | None:
    """The bytes of the EventBatch of an EngineMessage that holds exactly one ``events`` field and
    nothing else (what every emitter sends), else None (then it is serialised again)."""
    if len(data) < 2 or data[0] != _EVENTS_TAG:
        return None
    length = shift = 0
    pos = 1
    while pos < len(data) and pos <= 10:
        b = data[pos]
        length |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return data[pos:] if pos + length == len(data) else None
        shift += 7
    return None


def receive_engine_message(data: bytes):
    """:func:`parse_engine_message`, the message wrapped with its events' bytes (:class:`Received`)."""
    msg = parse_engine_message(data)
    if isinstance(msg, BadMessage):
        return msg
    return Received(msg, events_payload(data))
