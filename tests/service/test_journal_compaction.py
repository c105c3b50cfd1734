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
