"""The carbon log: whole lines only, rotation by size, torn-line repair."""

from __future__ import annotations

import json
import os

from llmco2_sidecar.service.carbon_log import CarbonLog, read_records, repair_torn_tail


def _rec(i: int) -> dict:
    return {"type": "request", "ts": 1.0 + i, "request_id": f"req-{i}", "energy_j": {"total": float(i)}}


def test_lines_are_whole_and_ids_are_found(tmp_path):
    log = CarbonLog(tmp_path / "c.jsonl").open()
    log.write_records([_rec(i) for i in range(5)])
    log.write_records([{"type": "window", "ts": 9.0, "energy_j": {"total": 1.0}}])
    log.write_records([_rec(5)])
    log.close()
    lines = (tmp_path / "c.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    assert [r["request_id"] for r in read_records(tmp_path / "c.jsonl")] == [f"req-{i}" for i in range(6)]
    assert CarbonLog(tmp_path / "c.jsonl").logged_request_ids() == {f"req-{i}" for i in range(6)}


def test_rotation_by_size(tmp_path):
    path = tmp_path / "c.jsonl"
    log = CarbonLog(path, max_bytes=1000, backups=2).open()
    for i in range(60):
        log.write_records([_rec(i)])
    log.close()
    rotated = [path.with_name("c.jsonl.1"), path.with_name("c.jsonl.2")]
    assert all(p.exists() for p in rotated) and not path.with_name("c.jsonl.3").exists()
    for p in [path, *rotated]:
        assert p.stat().st_size <= 1000
        assert p.read_bytes().endswith(b"\n")
    ids = [r["request_id"] for p in reversed(rotated) for r in read_records(p)] + [r["request_id"] for r in read_records(path)]
    assert ids == [f"req-{i}" for i in range(60 - len(ids), 60)]  # the newest kept, in order
    assert CarbonLog(path, backups=2).logged_request_ids() == set(ids)


def test_torn_last_line_is_repaired_on_open(tmp_path):
    path = tmp_path / "c.jsonl"
    log = CarbonLog(path).open()
    log.write_records([_rec(0), _rec(1)])
    log.close()
    good = path.read_bytes()
    with open(path, "ab") as fh:  # a crash in the middle of a write
        fh.write(b'{"type": "request", "ts": 3.0, "request_id": "req-2", "ener')
    assert read_records(path) == [_rec(0), _rec(1)]  # readers skip it
    log = CarbonLog(path).open()
    assert log.repaired_bytes > 0 and path.read_bytes() == good
    log.write_records([_rec(2)])
    log.close()
    assert [r["request_id"] for r in read_records(path)] == ["req-0", "req-1", "req-2"]


def test_repair_of_a_file_without_any_newline(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"type": "req')
    assert repair_torn_tail(path) == 13 and path.read_bytes() == b""
    assert repair_torn_tail(tmp_path / "missing") == 0


def test_one_write_per_batch(tmp_path, monkeypatch):
    calls = []
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: calls.append(len(data)) or real(fd, data))
    log = CarbonLog(tmp_path / "c.jsonl").open()
    log.write_records([_rec(i) for i in range(100)])
    log.close()
    assert len(calls) == 1


def _stdlib(rec) -> str:
    """What a log line must parse back to: ``json.dumps`` with the log's settings."""
    import json

    return json.dumps(rec, separators=(",", ":"), allow_nan=False, default=float)


def test_dumps_writes_what_json_dumps_writes_and_refuses_non_finite_figures():
    import json
    import math

    import numpy as np

    from llmco2_sidecar.service.carbon_log import dumps

    rec = {"type": "request", "ts": 1765072000.123456, "request_id": "r-\u00e9\"1", "client_request_id": None,
           "energy_j": {"prefill": 12.345678901234, "total": 1e-300}, "steps": 3, "aborted": False,
           "n": np.float32(0.25), "m": np.int64(7), "big": 2**70, "tiny": 6.20039218360196e-06}
    line = dumps(rec)
    assert "\n" not in line and ", " not in line  # one compact line
    assert json.loads(line) == json.loads(_stdlib(rec))
    assert json.loads(line)["m"] == 7.0 and type(json.loads(line)["m"]) is float  # as default=float
    for bad in (math.nan, math.inf, -math.inf, np.float64("nan"), {"deep": [1.0, math.inf]}):
        for where in ({"x": bad}, {"x": None, "y": {"z": bad}}):  # with and without a null beside it
            try:
                dumps(where)
            except ValueError:
                continue
            raise AssertionError(f"a non-finite figure must not be written: {where}")


def _json_values():
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=12))
    return st.recursive(scalars, lambda kids: st.dictionaries(st.text(max_size=8), kids, max_size=6), max_leaves=30)


def test_dumps_reads_back_as_json_dumps_on_random_records():
    """Any record of JSON values (nested dicts, any floats and integers, any text) parses back to what
    json.dumps with the log's settings writes: the same values, whichever encoder wrote it."""
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from llmco2_sidecar.service.carbon_log import dumps

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.text(max_size=8), _json_values(), max_size=10))
    def check(rec):
        line = dumps(rec)
        assert "\n" not in line
        assert json.loads(line) == json.loads(_stdlib(rec))

    check()


def test_logged_request_ids_reads_old_and_new_lines(tmp_path):
    """Restart reads the ids of records already logged: lines written before 2026-12-08 (", " and
    ": ") and compact ones."""
    from llmco2_sidecar.service.carbon_log import CarbonLog

    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"type": "request", "ts": 1.0, "request_id": "old-\\"1", "energy_j": {"total": 1.0}}\n')
    log = CarbonLog(path).open()
    log.write_records([{"type": "request", "ts": 2.0, "request_id": "new-1", "energy_j": {"total": 2.0}},
                       {"type": "window", "ts": 3.0, "request_id": "not-a-request"}])
    log.close()
    assert log.logged_request_ids() == {'old-"1', "new-1"}
