"""What the StreamEvents call receives: the request deserializer that never raises (bytes that are
not an EngineMessage become a :class:`BadMessage`, which the handler answers with INVALID_ARGUMENT)
and keeps the EventBatch's wire bytes for the journal (:class:`Received`); a message of steps alone
is not parsed yet (:class:`StepsOnly`: the server may hold it and parse it with the next ones,
:mod:`.hold`)."""

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


class StepsOnly:
    """An EngineMessage whose only field is an EventBatch that holds nothing but ``seq`` and
    ``steps`` (no finish, no static batch: no record waits on it), not parsed yet."""

    __slots__ = ("events_bytes",)

    def __init__(self, events_bytes: bytes):
        self.events_bytes = events_bytes

    def parse_events(self):
        """The EventBatch, or a :class:`BadMessage` (the size is the whole message's)."""
        try:
            return pb.EventBatch.FromString(self.events_bytes)
        except Exception as exc:
            return BadMessage(len(self.events_bytes) + 1 + _varint_len(len(self.events_bytes)),
                              str(exc) or type(exc).__name__)

    def parse(self):
        """What :func:`receive_engine_message` would have given for the whole message: a
        :class:`Received` (the events' bytes kept) or a :class:`BadMessage`."""
        events = self.parse_events()
        if isinstance(events, BadMessage):
            return events
        msg = pb.EngineMessage()
        msg.events.CopyFrom(events)
        return Received(msg, self.events_bytes)


def _varint_len(n: int) -> int:
    k = 1
    while n >= 0x80:
        n >>= 7
        k += 1
    return k


_STEPS_ONLY_TAGS = (0x08, 0x12)  # EventBatch.seq (varint), EventBatch.steps (length-delimited)


def steps_only(batch: bytes) -> bool:
    """Whether an EventBatch's wire bytes hold nothing but ``seq`` and ``steps`` fields (a scan of
    its top-level fields; anything else, unknown fields and malformed bytes included, says False)."""
    pos, n = 0, len(batch)
    while pos < n:
        tag = batch[pos]
        pos += 1
        if tag == 0x12:  # steps: a length, then that many bytes
            length = shift = 0
            while True:
                if pos >= n or shift > 63:
                    return False
                b = batch[pos]
                pos += 1
                length |= (b & 0x7F) << shift
                if not b & 0x80:
                    break
                shift += 7
            pos += length
        elif tag == 0x08:  # seq: a varint
            while True:
                if pos >= n:
                    return False
                b = batch[pos]
                pos += 1
                if not b & 0x80:
                    break
        else:
            return False
    return pos == n


def receive_engine_message(data: bytes):
    """The StreamEvents request deserializer: a :class:`StepsOnly` for a message of steps alone,
    else :func:`parse_engine_message`'s message wrapped with its events' bytes (:class:`Received`)
    or a :class:`BadMessage`."""
    payload = events_payload(data)
    if payload is not None and steps_only(payload):
        return StepsOnly(payload)
    msg = parse_engine_message(data)
    if isinstance(msg, BadMessage):
        return msg
    return Received(msg, payload)
