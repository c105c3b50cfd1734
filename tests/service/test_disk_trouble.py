"""Disk trouble (issue 13 item 7): the journal or the carbon log cannot be written (full, unwritable).
The sidecar says NOT_SERVING, acknowledges nothing it cannot journal (the real emitter keeps it and
sends it again), and recovers by itself when the disk does: no acknowledged record is lost.

Two ways: a real full filesystem (a 256 KiB tmpfs; skipped only where mounting is impossible), and
a fault injection at the file layer (``os.write``/``os.fsync``/``os.open`` of the journal and the log
failing with ENOSPC or EACCES, as the kernel reports them) that runs everywhere."""

from __future__ import annotations

import errno
import subprocess

import pytest
from disk_kit import NOT_SERVING, SERVING, FaultyOs, Requests, _health, _wait_health
from sidecar_testkit import make_config

from llmco2_sidecar.service import carbon_log as carbon_log_mod
from llmco2_sidecar.service import journal as journal_mod
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread

pytestmark = pytest.mark.timeout(120)


def _outage_and_recovery(sc, break_disk, repair_disk) -> None:
    eng = Requests(sc.address)
    try:
        eng.run(5)
        assert eng.em.flush(10.0)
        sc.flush()
        assert _health(sc.address) == SERVING
        break_disk()
        eng.run(300)  # more than the journal's last partly filled page holds
        _wait_health(sc.address, NOT_SERVING)
        assert not eng.em.flush(1.0)  # not acknowledged: the emitter keeps the events
        stats = eng.em.stats()
        assert "UNAVAILABLE" in stats.last_error and stats.dropped == 0
        assert sc.core.metrics.registry.get_sample_value("llmco2_disk_ok") == 0
        repair_disk()
        _wait_health(sc.address, SERVING)
        eng.run(5)
        assert eng.em.flush(20.0)  # resent and acknowledged once the disk is back
    finally:
        eng.em.close(5.0)
    sc.flush()
    assert sc.core.metrics.registry.get_sample_value("llmco2_disk_ok") == 1
    ids = [r["request_id"] for r in read_records(sc.config.log)]
    assert sorted(ids) == sorted(eng.ids) and len(ids) == 310  # every request, exactly once
    assert sc.core.metrics.registry.get_sample_value("llmco2_disk_errors_total", {"file": "journal"}) >= 1


def test_a_full_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode}); "
                    "test_file_layer_faults covers the same paths")
    sc = None
    try:
        sc = SidecarThread(make_config(tmp_path, log=str(mnt / "carbon.jsonl"), log_windows=False)).start()
        filler = mnt / "filler"

        def fill():
            with open(filler, "wb", buffering=0) as fh:
                try:
                    while True:
                        fh.write(b"\0" * 4096)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC

        _outage_and_recovery(sc, fill, filler.unlink)
    finally:
        if sc is not None:
            sc.stop()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("fault, extra", [
    ("write", {}),  # a full disk: write() fails
    ("fsync", {"fsync": "always"}),  # the sync before each ack fails
    ("open", {"journal_max_bytes": 600}),  # the directory turned unwritable: new segments cannot be made
])
def test_file_layer_faults(tmp_path, monkeypatch, fault, extra):
    root = str(tmp_path / "data")
    fake = FaultyOs(root)
    monkeypatch.setattr(journal_mod, "os", fake)
    monkeypatch.setattr(carbon_log_mod, "os", fake)
    sc = SidecarThread(make_config(tmp_path, log=str(tmp_path / "data" / "carbon.jsonl"), log_windows=False,
                                   **extra)).start()
    try:
        _outage_and_recovery(sc, lambda: fake.fail.add(fault), fake.fail.clear)
    finally:
        sc.stop()


def test_the_carbon_log_failing_alone_keeps_records_in_memory_until_it_can(tmp_path, monkeypatch):
    """Only the carbon log fails (its own disk): records wait in memory (health NOT_SERVING), the journal
    keeps them safe (no checkpoint drops a segment meanwhile), and they are written when it recovers."""
    root = str(tmp_path / "logdir")
    fake = FaultyOs(root)
    monkeypatch.setattr(carbon_log_mod, "os", fake)
    sc = SidecarThread(make_config(tmp_path, log=str(tmp_path / "logdir" / "carbon.jsonl"), log_windows=False,
                                   journal=str(tmp_path / "journal"))).start()
    eng = Requests(sc.address)
    try:
        fake.fail.add("write")
        eng.run(10)
        assert eng.em.flush(10.0)  # journaled, so acknowledged
        sc.flush()
        _wait_health(sc.address, NOT_SERVING)
        assert len(sc.core.carbon_log.backlog) == 10 and not read_records(sc.config.log)
        fake.fail.clear()
        _wait_health(sc.address, SERVING)
    finally:
        eng.em.close(5.0)
    sc.flush()
    assert sorted(r["request_id"] for r in read_records(sc.config.log)) == sorted(eng.ids)
    sc.stop()
