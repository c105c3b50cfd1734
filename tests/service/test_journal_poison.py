"""A restart with poison in the journal: replay accounts what it can, dead-letters the rest once, and
never replays the poison again (issue 13 item 2)."""

from __future__ import annotations

import json

import pytest
from isolation_kit import POISON_PROMPT, PoisonPredictor
from sidecar_testkit import identity, make_config, steps_message

from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.core import REPLAY_ATTEMPTS
from llmco2_sidecar.service.journal import KIND_EVENTS, KIND_IDENTITY, Journal
from llmco2_sidecar.service.server import SidecarThread

pytestmark = pytest.mark.timeout(120)


def _message(name: str, m: int, prompt=lambda k: 64 + k):
    steps, done = [], []
    for k in range(3):
        rid, p, sid = f"{name}-m{m}-r{k}", prompt(k), 100 * m + 2 * k
        steps += [(sid, m + 0.1 * k, m + 0.1 * k + 0.02, [(rid, p, 0, p)]),
                  (sid + 1, m + 0.1 * k + 0.03, m + 0.1 * k + 0.04, [(rid, 1, p, p)])]
        done.append((rid, 2))
    return steps_message(m, steps, done).events


def _write_journal(config) -> None:
    """The frames a sidecar journals (identity, then each engine message), as an older sidecar that
    accepted engine c (TP 3 on 32 heads) and died before processing them would have left them."""
    j = Journal(config.journal_dir).open()
    for name, kw in (("a", {}), ("b", {}), ("c", {"tp": 3, "gpu_count": 3})):
        j.append(KIND_IDENTITY, name, identity(name, **kw).identity.SerializeToString())
    for m in (1, 2, 3):
        j.append(KIND_EVENTS, "a", _message("a", m).SerializeToString())
        j.append(KIND_EVENTS, "c", _message("c", m).SerializeToString())
        poison = (lambda k: POISON_PROMPT if k == 0 else 64 + k) if m == 2 else (lambda k: 64 + k)
        j.append(KIND_EVENTS, "b", _message("b", m, poison).SerializeToString())
    j.close()


def _start_stop(config):
    sc = SidecarThread(config, predictor=PoisonPredictor("raise")).start()
    sc.flush()
    dl_path = sc.core.dead_letter.path
    sc.stop()
    recs = read_records(config.log)
    dls = [json.loads(x) for x in dl_path.read_text().splitlines()] if dl_path.exists() else []
    return recs, dls


def test_restart_with_poison_in_the_journal(tmp_path):
    config = make_config(tmp_path)
    _write_journal(config)
    recs, dls = _start_stop(config)
    by_id = {r["request_id"]: r for r in recs}
    assert len(recs) == len(by_id) == 27  # every acknowledged finish has exactly one record
    assert all(by_id[f"a-m{m}-r{k}"]["source"] == "predicted" for m in (1, 2, 3) for k in range(3))
    assert all(by_id[f"b-m{m}-r{k}"]["source"] == "predicted" for m in (1, 3) for k in range(3))
    assert all(by_id[f"b-m2-r{k}"]["error"].startswith("predict: RuntimeError") for k in range(3))
    assert all(by_id[f"c-m{m}-r{k}"]["error"].startswith("replay: identity refused: identity.tp: 3 does not divide")
               for m in (1, 2, 3) for k in range(3))
    assert sorted(d["reason"] for d in dls) == ["predict", "replay", "replay", "replay"]
    assert not (config.journal_dir / REPLAY_ATTEMPTS).exists()
    # the next start replays nothing of it again: same records, same dead letters
    recs2, dls2 = _start_stop(config)
    assert sorted(r["request_id"] for r in recs2) == sorted(by_id)
    assert len(dls2) == len(dls)


def test_a_replay_that_never_finishes_is_set_aside(tmp_path):
    """A poison that kills the process during replay (memory, native code): after two unfinished
    replays, the third start moves the journal's segments aside and starts clean."""
    config = make_config(tmp_path)
    _write_journal(config)
    (config.journal_dir / REPLAY_ATTEMPTS).write_text("2")
    recs, dls = _start_stop(config)
    assert recs == []
    assert [d["reason"] for d in dls] == ["replay"] and "moved to" in dls[0]["error"]
    quarantine = list(config.journal_dir.glob("quarantine-*/journal-*.wal"))
    assert len(quarantine) == 1
    assert not (config.journal_dir / REPLAY_ATTEMPTS).exists()
