"""Slow disk work (fsyncs, journal checkpoints) runs on the disk worker's thread, in submission
order, never on the caller's: the event loop and the pipeline do not wait for the disk."""

from __future__ import annotations

import os
import threading
import time

from llmco2_sidecar.service.carbon_log import CarbonLog, read_records
from llmco2_sidecar.service.disk_worker import DiskWorker, fsync_and_close
from llmco2_sidecar.service.journal import KIND_EVENTS, Journal


def test_runs_in_order_on_its_own_thread_and_survives_errors():
    w = DiskWorker()
    seen: list[tuple[int, str]] = []

    def job(i):
        if i == 2:
            raise RuntimeError("boom")
        time.sleep(0.002)
        seen.append((i, threading.current_thread().name))

    for i in range(6):
        w.submit(job, i)
    assert w.drain(10)
    assert [i for i, _ in seen] == [0, 1, 3, 4, 5]
    assert {name for _, name in seen} == {"llmco2-disk"}
    assert w.close()
    w.submit(job, 7)  # after close: runs at once, here
    assert seen[-1] == (7, threading.current_thread().name)


def test_close_finishes_what_is_pending():
    w = DiskWorker()
    done = []
    for i in range(3):
        w.submit(lambda i=i: (time.sleep(0.05), done.append(i)))
    assert w.close(10)
    assert done == [0, 1, 2]


def _fsyncs(monkeypatch) -> list[tuple[str, str]]:
    """Record every os.fsync: (the file it flushed, the thread that called it)."""
    calls: list[tuple[str, str]] = []
    real = os.fsync

    def fsync(fd):
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), threading.current_thread().name))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_journal_interval_fsync_runs_on_the_worker(tmp_path, monkeypatch):
    calls = _fsyncs(monkeypatch)
    j = Journal(tmp_path / "j", fsync="interval", interval_s=0.0)
    j.worker = w = DiskWorker()
    j.open()
    for i in range(20):
        j.append(KIND_EVENTS, "s1", b"x" * 100)
    assert w.drain(10)
    seg = str(j.path(j.segment))
    assert calls and all(name == "llmco2-disk" for _, name in calls), calls
    assert all(path == seg for path, _ in calls)
    # a roll hands the old segment's last fsync to the worker too
    calls.clear()
    j.append(KIND_EVENTS, "s1", b"y")
    j.roll()
    assert w.drain(10)
    assert (seg, "llmco2-disk") in calls
    j.close()
    w.close()
    assert [p for _, _, p in j.replay()] == [b"x" * 100] * 20 + [b"y"]


def test_journal_fsync_error_on_the_worker_marks_it_failed(tmp_path, monkeypatch):
    j = Journal(tmp_path / "j", fsync="interval", interval_s=0.0)
    j.worker = w = DiskWorker()
    j.open()

    def broken(fd):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", broken)
    j.append(KIND_EVENTS, "s1", b"x")
    assert w.drain(10)
    assert isinstance(j.failed, OSError) and j.errors == 1
    monkeypatch.undo()
    assert j.recover() and j.failed is None
    w.close()
    j.close()


def test_rotated_carbon_log_is_fsynced_before_it_is_closed(tmp_path, monkeypatch):
    calls = _fsyncs(monkeypatch)
    rotations = []
    real_rotate = CarbonLog._rotate
    monkeypatch.setattr(CarbonLog, "_rotate", lambda self: (rotations.append(1), real_rotate(self)))
    path = tmp_path / "carbon.jsonl"
    log = CarbonLog(path, max_bytes=300, backups=3)
    log.sync_on_rotate = True
    log.worker = w = DiskWorker()
    log.open()
    for i in range(10):
        log.write_records([{"type": "request", "request_id": f"r{i}", "pad": "x" * 100}])
    assert w.drain(10)
    assert len(rotations) >= 3
    # one fsync per rotated file, on the worker (the file may have been renamed or rotated out since)
    assert len(calls) == len(rotations) and {name for _, name in calls} == {"llmco2-disk"}
    names = {p.removesuffix(" (deleted)") for p, _ in calls}
    assert names <= {str(path)} | {str(p) for p in log.rotated_paths()}
    log.close()
    w.close()
    ids = [r["request_id"] for p in [*reversed(log.rotated_paths()), path] if p.exists() for r in read_records(p)]
    assert ids == [f"r{i}" for i in range(10 - len(ids), 10)]


def test_rotation_without_the_policy_does_not_fsync(tmp_path, monkeypatch):
    calls = _fsyncs(monkeypatch)
    log = CarbonLog(tmp_path / "carbon.jsonl", max_bytes=300, backups=3)
    log.open()
    for i in range(10):
        log.write_records([{"type": "request", "request_id": f"r{i}", "pad": "x" * 100}])
    assert calls == []
    log.close()


def test_fsync_and_close_closes_even_when_fsync_fails(monkeypatch):
    r, wfd = os.pipe()
    os.close(r)
    try:
        fsync_and_close(wfd)  # fsync of a pipe: EINVAL
    except OSError:
        pass
    try:
        os.fstat(wfd)
        raise AssertionError("the descriptor is still open")
    except OSError:
        pass
