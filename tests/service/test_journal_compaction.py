"""The journal stays bounded: it rolls into a new segment beyond ``--journal-max-bytes`` and, once the
pipeline has written every record of the older segments, checkpoints and deletes them; with an fsync
policy other than ``never`` the carbon log is fsynced before any segment goes (a power loss then
cannot take both the journal frames and the records they became)."""

from __future__ import annotations

import queue
import threading

import grpc
import pytest
from sidecar_testkit import identity, steps_message

from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.config import SidecarConfig
from llmco2_sidecar.service.carbon_log import CarbonLog, read_records
from llmco2_sidecar.service.journal import Journal
from llmco2_sidecar.service.server import SidecarThread

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("fsync", ["interval", "never"])
def test_segments_go_only_after_their_records_are_on_disk(tmp_path, monkeypatch, fsync):
    calls: list[tuple[str, int]] = []
    threads: set[str] = set()
    orig_fsync, orig_ckpt = CarbonLog.fsync, Journal.write_checkpoint

    def log_fsync(self):
        calls.append(("log fsync", self.records_written))
        threads.add(threading.current_thread().name)
        return orig_fsync(self)

    def checkpoint(self, state):
        calls.append(("checkpoint", state["segment"]))
        threads.add(threading.current_thread().name)
        return orig_ckpt(self, state)

    monkeypatch.setattr(CarbonLog, "fsync", log_fsync)
    monkeypatch.setattr(Journal, "write_checkpoint", checkpoint)
    log = tmp_path / "carbon.jsonl"
    sc = SidecarThread(SidecarConfig(port=0, log=str(log), predictor="roofline", journal_max_bytes=300,
                                     fsync=fsync)).start()
    try:
        channel = grpc.insecure_channel(sc.address)
        q: queue.Queue = queue.Queue()
        call = sidecar_pb2_grpc.CarbonSidecarStub(channel).StreamEvents(iter(q.get, None))
        q.put(identity("engine-c"))
        next(call)
        t, step = 0.0, 0
        for m in range(30):
            rid = f"r{m}"
            steps = [(step + 1, t, t + 0.02, [(rid, 64, 0, 64)]), (step + 2, t + 0.03, t + 0.04, [(rid, 1, 64, 64)])]
            step, t = step + 2, t + 0.05
            q.put(steps_message(m + 1, steps, [(rid, 2)]))
            assert next(call).done_accepted == 1
        q.put(None)
        list(call)
        channel.close()
    finally:
        sc.stop()
    journal = tmp_path / "carbon.jsonl.journal"
    segments = sorted(int(p.stem.split("-")[1]) for p in journal.glob("journal-*.wal"))
    checkpoints = [c for c in calls if c[0] == "checkpoint"]
    assert len(checkpoints) >= 5, "the journal never rolled"
    assert threads == {"llmco2-disk"}  # neither the event loop nor the pipeline waits for the disk
    assert len(segments) <= 2 and segments[0] >= checkpoints[-1][1]  # old segments deleted: bounded
    assert len(read_records(log)) == 30
    for i, c in enumerate(calls):
        if c[0] == "checkpoint":
            before = calls[i - 1] if i else None
            if fsync == "never":
                assert before is None or before[0] != "log fsync"
            else:
                assert before is not None and before[0] == "log fsync", calls[max(0, i - 3):i + 1]


def test_checkpoint_streams_as_json_texts_read_back_as_a_list(tmp_path):
    import json

    from llmco2_sidecar.service.journal import STREAMS_JSON

    j = Journal(tmp_path / "j")
    j.open()
    entries = [{"stream_id": "a", "live": ["r1"], "recently_done": ["r0"]}, {"stream_id": "b", "live": [], "recently_done": []}]
    j.write_checkpoint({"segment": 1, "written_at": 5.0, STREAMS_JSON: [json.dumps(e) for e in entries], "running": []})
    assert j.read_checkpoint() == {"segment": 1, "written_at": 5.0, "running": [], "streams": entries}
    j.write_checkpoint({"segment": 2, STREAMS_JSON: []})
    assert j.read_checkpoint() == {"segment": 2, "streams": []}
    j.close()


def test_an_unchanged_stream_entry_is_reused_and_a_changed_one_rebuilt(tmp_path):
    import json

    from sidecar_testkit import steps_message

    sc = SidecarThread(SidecarConfig(port=0, log=str(tmp_path / "carbon.jsonl"), predictor="roofline")).start()
    try:
        channel = grpc.insecure_channel(sc.address)
        stub = sidecar_pb2_grpc.CarbonSidecarStub(channel)
        qs = {e: queue.Queue() for e in ("idle", "busy")}
        calls = {e: stub.StreamEvents(iter(q.get, None)) for e, q in qs.items()}
        for e, q in qs.items():
            q.put(identity(f"engine-{e}"))
            next(calls[e])
            q.put(steps_message(1, [(1, 0.0, 0.02, [("r1", 64, 0, 64)])], [("r1", 1)]))
            next(calls[e])
        core = sc.core
        streams = {s.identity.instance_id or s.stream_id: s for s in core.streams.values()}
        first = {sid: core._stream_entry(s) for sid, s in streams.items()}
        qs["busy"].put(steps_message(2, [(2, 0.05, 0.07, [("r2", 64, 0, 64)])], [("r2", 1)]))
        next(calls["busy"])
        second = {sid: core._stream_entry(s) for sid, s in streams.items()}
        changed = [sid for sid in first if second[sid] is not first[sid]]
        assert len(changed) == 1 and "r2" in json.loads(second[changed[0]])["recently_done"]
        assert all(json.loads(second[sid])["recently_done"] == ["r1"] for sid in first if sid not in changed)
        for q in qs.values():
            q.put(None)
        for c in calls.values():
            list(c)
        channel.close()
    finally:
        sc.stop()
