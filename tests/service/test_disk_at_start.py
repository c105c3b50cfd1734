"""A journal or carbon-log directory that cannot be written when the sidecar starts (issue 13 item 7,
at start): the sidecar starts anyway, answers health NOT_SERVING, acknowledges nothing (the real
emitter keeps its events), and once the directory can be written opens the journal and the log by
itself: SERVING, every request's record, exactly once.

The directories are made read-only for real (a read-only bind mount of the directory, which works
as root, where chmod does not); where mounting is impossible the same start is made through the
file-layer fault injection of test_disk_trouble (``os.open`` failing with EACCES)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from disk_kit import NOT_SERVING, SERVING, FaultyOs, Requests, _health, _wait_health
from sidecar_testkit import make_config

from llmco2_sidecar.service import carbon_log as carbon_log_mod
from llmco2_sidecar.service import journal as journal_mod
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread

pytestmark = pytest.mark.timeout(120)


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


class ReadOnly:
    """``path`` read-only (a bind mount of itself remounted ``ro``) until :meth:`undo`."""

    def __init__(self, path):
        self.path = str(path)
        res = _mount("--bind", self.path, self.path)
        if res.returncode != 0:
            pytest.skip(f"cannot bind-mount here ({res.stderr.strip() or res.returncode}); "
                        "test_unopenable_at_start_by_fault_injection covers the same paths")
        self.mounted = True
        res = _mount("-o", "remount,ro,bind", self.path)
        if res.returncode != 0:
            self.undo()
            pytest.skip(f"cannot remount read-only here ({res.stderr.strip()})")
        with pytest.raises(OSError) as exc:
            open(os.path.join(self.path, "probe"), "w").close()
        assert exc.value.errno == errno.EROFS

    def writable(self) -> None:
        assert _mount("-o", "remount,rw,bind", self.path).returncode == 0

    def undo(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], check=False)
            self.mounted = False


def _start_unwritable_then_recover(tmp_path, log_dir, journal_dir, make_writable) -> None:
    sc = SidecarThread(make_config(tmp_path, log=str(log_dir / "carbon.jsonl"), journal=str(journal_dir),
                                   log_windows=False)).start()
    try:
        assert _health(sc.address) == NOT_SERVING
        assert sc.core.metrics.registry.get_sample_value("llmco2_disk_ok") == 0
        eng = Requests(sc.address)
        try:
            eng.run(20)
            assert not eng.em.flush(1.5)  # nothing acknowledged: the emitter keeps every event
            stats = eng.em.stats()
            assert "UNAVAILABLE" in stats.last_error and stats.dropped == 0
            assert _health(sc.address) == NOT_SERVING
            make_writable()
            _wait_health(sc.address, SERVING)
            eng.run(5)
            assert eng.em.flush(20.0)  # resent and acknowledged once the directory can be written
        finally:
            eng.em.close(5.0)
        sc.flush()
        ids = [r["request_id"] for r in read_records(sc.config.log)]
        assert sorted(ids) == sorted(eng.ids) and len(ids) == 25  # every request, exactly once
        assert sc.core.metrics.registry.get_sample_value("llmco2_disk_ok") == 1
        assert sc.core.journal.segments()  # the journal was opened in its directory
    finally:
        sc.stop()


@pytest.mark.parametrize("unwritable", ["journal", "log", "both"])
def test_read_only_directory_at_start(tmp_path, unwritable):
    log_dir, journal_dir = tmp_path / "logs", tmp_path / "journal"
    log_dir.mkdir()
    journal_dir.mkdir()
    mounts = [ReadOnly(d) for name, d in (("journal", journal_dir), ("log", log_dir)) if unwritable in (name, "both")]
    try:
        _start_unwritable_then_recover(tmp_path, log_dir, journal_dir, lambda: [m.writable() for m in mounts])
    finally:
        for m in mounts:
            m.undo()


@pytest.mark.parametrize("unwritable", ["journal", "log"])
def test_unopenable_at_start_by_fault_injection(tmp_path, monkeypatch, unwritable):
    log_dir, journal_dir = tmp_path / "logs", tmp_path / "journal"
    fake = FaultyOs(str(journal_dir if unwritable == "journal" else log_dir))
    monkeypatch.setattr(journal_mod, "os", fake)
    monkeypatch.setattr(carbon_log_mod, "os", fake)
    fake.fail.add("open")
    _start_unwritable_then_recover(tmp_path, log_dir, journal_dir, fake.fail.clear)


def test_restart_with_a_read_only_journal_replays_it_then_recovers(tmp_path):
    """kill -9 with acknowledged finishes not yet in the log; the restart finds the journal's directory
    read-only: it replays the journal (reading is possible) so every acknowledged request gets its
    record, says NOT_SERVING until the directory can be written, then takes messages again."""
    import queue
    import signal

    import grpc
    from sidecar_testkit import identity, steps_message

    from llmco2_sidecar._proto import sidecar_pb2_grpc

    journal_dir = tmp_path / "journal"
    proc = subprocess.Popen([sys.executable, "-m", "llmco2_sidecar.cli.main", "serve", "--port", "0", "--log",
                             str(tmp_path / "carbon.jsonl"), "--journal", str(journal_dir), "--predictor", "roofline",
                             "--log-level", "WARNING", "--micro-batch-ms", "5000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "listening on" in line, (line, proc.kill())
    address = line.split("listening on ")[1].split()[0]
    channel = grpc.insecure_channel(address)
    q: queue.Queue = queue.Queue()
    call = sidecar_pb2_grpc.CarbonSidecarStub(channel).StreamEvents(iter(q.get, None))
    q.put(identity("engine-k"))
    assert next(call).stream_id == "engine-k"
    acked = [f"k{i}" for i in range(6)]
    q.put(steps_message(1, [(i + 1, 0.1 * i, 0.1 * i + 0.05, [(rid, 64, 0, 64)]) for i, rid in enumerate(acked)],
                        [(rid, 1) for rid in acked]))
    assert next(call).done_accepted == len(acked)
    os.kill(proc.pid, signal.SIGKILL)  # the pipeline still waits to fill its micro-batch
    proc.wait(10)
    call.cancel()
    channel.close()
    log = tmp_path / "carbon.jsonl"
    assert not (log.exists() and read_records(log)), "the kill came too late to test anything"
    ro = ReadOnly(journal_dir)
    try:
        sc = SidecarThread(make_config(tmp_path, journal=str(journal_dir), log_windows=False)).start()
        try:
            sc.flush()
            assert sorted(r["request_id"] for r in read_records(log)) == sorted(acked)  # replayed, each once
            assert _health(sc.address) == NOT_SERVING
            eng = Requests(sc.address)
            try:
                eng.run(3)
                assert not eng.em.flush(1.0)
                ro.writable()
                _wait_health(sc.address, SERVING)
                assert eng.em.flush(20.0)
            finally:
                eng.em.close(5.0)
            sc.flush()
            assert sorted(r["request_id"] for r in read_records(log)) == sorted(acked + eng.ids)
        finally:
            sc.stop()
    finally:
        ro.undo()
