"""The StreamEvents deserializer keeps the EventBatch's wire bytes for the journal (no second
serialisation per message) only where they are exactly the batch; otherwise the batch is serialised."""

from sidecar_testkit import identity, steps_message

from llmco2_sidecar._proto import events_pb2 as pb
from llmco2_sidecar.service.journal import KIND_EVENTS, Journal
from llmco2_sidecar.service.wire import BadMessage, Received, events_payload, receive_engine_message


def _msg(n_steps: int) -> pb.EngineMessage:
    return steps_message(7, [(k + 1, k * 0.1, k * 0.1 + 0.05, [(f"r{k}-{j}", 1, 100 + k, 90) for j in range(300)])
                             for k in range(n_steps)], done=[("r0-0", 3)])


def test_events_bytes_are_the_batch_as_sent():
    for n in (1, 40):  # 40 x 300 slices: a length that needs a 3-byte varint
        m = _msg(n)
        data = m.SerializeToString()
        got = receive_engine_message(data)
        assert isinstance(got, Received) and got.msg == m
        assert got.events_bytes == m.events.SerializeToString()
        assert pb.EventBatch.FromString(got.events_bytes) == m.events


def test_anything_but_a_lone_events_field_is_serialised_again():
    m = _msg(1)
    data = m.SerializeToString()
    assert events_payload(identity().SerializeToString()) is None
    assert events_payload(data + b"\x18\x01") is None  # an unknown field after it (a newer emitter)
    assert events_payload(data[:-1]) is None  # the length does not match
    assert events_payload(b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01") is None  # a runaway varint
    assert events_payload(b"") is None
    got = receive_engine_message(data + b"\x18\x01")
    assert isinstance(got, Received) and got.events_bytes is None and got.msg.events == m.events
    assert isinstance(receive_engine_message(b"\x12\x05ab"), BadMessage)


def test_journal_frames_written_in_two_parts_replay_whole(tmp_path):
    j = Journal(tmp_path / "j", fsync="never").open()
    payloads = [_msg(n).events.SerializeToString() for n in (1, 3, 2)]
    for i, p in enumerate(payloads):
        j.append(KIND_EVENTS, f"engine-{i % 2}", p)
    j.close()
    assert list(Journal(tmp_path / "j").replay()) == [(KIND_EVENTS, f"engine-{i % 2}", p) for i, p in enumerate(payloads)]
