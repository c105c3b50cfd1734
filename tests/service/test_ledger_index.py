"""The ledger's lazy sorted index of finished ids (prefix lookups) against a plain sorted list."""

import random

from llmco2_sidecar.service.ledger import RequestLedger, SortedIds


def test_sorted_ids_match_a_sorted_list_under_churn():
    rng = random.Random(7)
    alive = set()
    idx = SortedIds(alive)
    for step in range(5000):
        key = f"e{rng.randrange(3)}-r{rng.randrange(400)}"
        if key in alive and rng.random() < 0.5:
            alive.discard(key)
            idx.discard(key)
        elif key not in alive:
            alive.add(key)
            idx.add(key)
        if step % 97 == 0:
            prefix = f"e{rng.randrange(3)}-r{rng.randrange(40)}"
            assert idx.prefixed(prefix) == sorted(k for k in alive if k.startswith(prefix))
    assert idx.prefixed("") == sorted(alive)


def test_memory_stays_bounded_without_any_lookup():
    """A sidecar nobody queries by prefix keeps no growing second copy of its ids (the index is
    dropped once half of it is tombstones, and rebuilt from the live ids at the next lookup)."""
    alive: set[str] = set()
    idx = SortedIds(alive)
    for i in range(50_000):  # a ledger keeping the last 1,000 finished ids
        key = f"r{i}"
        alive.add(key)
        idx.add(key)
        if len(alive) > 1000:
            old = f"r{i - 1000}"
            alive.discard(old)
            idx.discard(old)
    assert len(idx) <= 2 * 1000 + 64
    assert idx.prefixed("r4999") == sorted(k for k in alive if k.startswith("r4999"))


def test_ledger_find_after_eviction_and_reuse_of_an_id():
    led = RequestLedger(max_finished=3, ttl_s=3600)
    for i in range(6):
        led.put_finished({"request_id": f"x-{i}", "client_request_id": f"c-{i % 2}"})
    led.put_finished({"request_id": "x-0"})  # evicted earlier, finished again (a reused id)
    done, _ = led.find("x-")
    assert [r["request_id"] for r in done] == ["x-0", "x-4", "x-5"]
    assert sorted(r["request_id"] for r in led.find("c-")[0]) == ["x-4", "x-5"]


def test_running_totals_survive_growth_and_slot_reuse():
    """The columns are rows of two arrays (floats, ints): totals read them, growth copies them, and a
    reused slot starts from zero in every column (the calibrated mode's window columns included)."""
    import numpy as np

    led = RequestLedger(capacity=2)
    ids = [f"r{i}" for i in range(7)]
    expect = {}
    for k in range(3):  # three micro-batches; the ledger grows 2 -> 4 -> 8 on the way
        slots = led.slots(ids, "e")
        e = np.arange(len(ids), dtype=float) + k
        led.add(slots, prefill_j=e, decode_j=2 * e, steps=np.ones(len(ids), dtype=np.int64))
        led.maximum(slots, prompt_tokens=np.arange(len(ids)) * 10, last_wall_s=e + 100.0)
        led.cols["win_decode_j"][slots] += 1.0
        for i, r in enumerate(ids):
            p, d, n = expect.get(r, (0.0, 0.0, 0))
            expect[r] = (p + i + k, d + 2 * (i + k), n + 1)
    assert led._cap == 8
    for i, r in enumerate(ids):
        t = led.totals(r)
        assert (t.prefill_j, t.decode_j, t.steps) == expect[r]
        assert type(t.prefill_j) is float and type(t.steps) is int
        assert (t.prompt_tokens, t.last_wall_s, t.stream_id) == (i * 10, i + 102.0, "e")
    assert led.close("r3").decode_j == expect["r3"][1] and led.totals("r3") is None
    s = led.slots(["new"], "f")[0]  # takes r3's slot back, all columns zeroed
    t = led.totals("new")
    assert (t.prefill_j, t.decode_j, t.steps, t.prompt_tokens, t.stream_id) == (0.0, 0.0, 0, 0, "f")
    assert all(led.cols[c][s] == 0 for c in led.cols)


def test_slots_with_the_distinct_ids_given_match_slots_without():
    """The pipeline passes ingest's distinct ids (a dict's keys, or a set after concatenation): the same
    slots as from the slices alone, new ids allocated once."""
    import numpy as np

    rng = random.Random(3)
    a, b, c = RequestLedger(capacity=4), RequestLedger(capacity=4), RequestLedger(capacity=4)
    for _ in range(20):
        rids = [f"r{rng.randrange(30)}" for _ in range(rng.randrange(1, 50))]
        first = dict(zip(reversed(rids), range(len(rids) - 1, -1, -1)))
        for led, slots in ((a, a.slots(rids, "e")), (b, b.slots(rids, "e", first)), (c, c.slots(rids, "e", set(rids)))):
            # each id one slot of its own (the numbers may differ: allocation order), as a second call gives
            assert len(set(zip(rids, slots.tolist()))) == len(set(rids)) == len(set(slots.tolist()))
            assert np.array_equal(slots, led.slots(rids, "e"))
            led.add(slots, steps=np.ones(len(rids), dtype=np.int64))
        for r in set(rids):
            assert a.totals(r).steps == b.totals(r).steps == c.totals(r).steps
        for r in rng.sample(sorted(set(rids)), k=min(3, len(set(rids)))):
            a.close(r), b.close(r), c.close(r)
    assert a.running == b.running == c.running


def test_a_record_not_yet_in_the_log_is_hidden_from_lookups():
    """put_finished(logged=False): lookups see the request as running until mark_logged (a response
    that carries carbon then always finds its record in the carbon log)."""
    from llmco2_sidecar.service.ledger import RequestLedger

    led = RequestLedger()
    led.put_finished({"request_id": "cmpl-a-0", "client_request_id": "x-1"}, line='{"request_id": "cmpl-a-0"}',
                     logged=False)
    assert led.get_finished("cmpl-a-0") is None and led.get_by_client("x-1") == []
    assert led.find("cmpl-a-") == ([], ["cmpl-a-0"]) and led.find("x-") == ([], ["cmpl-a-0"])
    led.mark_logged(["cmpl-a-0"])
    assert led.get_finished("cmpl-a-0") == {"request_id": "cmpl-a-0"}
    assert led.get_by_client("x-1") == [{"request_id": "cmpl-a-0"}]
    assert led.find("cmpl-a-") == ([{"request_id": "cmpl-a-0"}], [])
