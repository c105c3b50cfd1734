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


def test_dumps_is_json_dumps_with_the_log_settings():
    import json
    import math

    from llmco2_sidecar.service.carbon_log import dumps

    rec = {"type": "request", "ts": 1765072000.123456, "request_id": "r-\u00e9\"1", "client_request_id": None,
           "energy_j": {"prefill": 12.345678901234, "total": 1e-300}, "steps": 3, "aborted": False,
           "n": __import__("numpy").float32(0.25)}
    assert dumps(rec) == json.dumps(rec, separators=(", ", ": "), allow_nan=False, default=float)
    for bad in (math.nan, math.inf):
        try:
            dumps({"x": bad})
        except ValueError:
            continue
        raise AssertionError("a non-finite figure must not be written")


def _json_values():
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=12))
    return st.recursive(scalars, lambda kids: st.dictionaries(st.text(max_size=8), kids, max_size=6), max_leaves=30)


def test_dumps_matches_json_dumps_on_random_records():
    """The kept C encoder (carbon_log._C_ENCODE) writes what json.dumps with the log's settings writes,
    byte for byte, for any record of JSON values (nested dicts, any floats, any text)."""
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from llmco2_sidecar.service.carbon_log import dumps

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.text(max_size=8), _json_values(), max_size=10))
    def check(rec):
        assert dumps(rec) == json.dumps(rec, separators=(", ", ": "), allow_nan=False, default=float)

    check()
