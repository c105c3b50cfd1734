"""The pipeline's inbox: a put wakes the pipeline thread only for what it waits for, and never loses
an item or a wake-up it needs (a real thread on each side)."""

import threading
import time

from llmco2_sidecar.service.inbox import ANY, AWAITED, FULL, Inbox


def _waiter(inbox, mode, timeout_s, room=0):
    """Run inbox.wait on a thread; returns (thread, result dict with the seconds it slept)."""
    out = {}

    def run():
        t = time.perf_counter()
        inbox.wait(timeout_s, mode, room)
        out["slept_s"] = time.perf_counter() - t

    th = threading.Thread(target=run)
    th.start()
    time.sleep(0.05)  # let it block
    return th, out


def test_put_wakes_an_idle_consumer_and_keeps_order():
    ib = Inbox()
    th, out = _waiter(ib, ANY, 5.0)
    ib.put("a", steps=1)
    th.join(5)
    assert out["slept_s"] < 1.0
    ib.put("b", steps=1)
    ib.put_control("c")
    assert [ib.pop(), ib.pop(), ib.pop(), ib.pop()] == ["a", "b", "c", None]


def test_steps_alone_do_not_wake_a_consumer_that_holds_steps():
    ib = Inbox()
    th, out = _waiter(ib, AWAITED, 0.4, room=100)
    for _ in range(5):
        ib.put("s", steps=1)
    th.join(5)
    assert out["slept_s"] >= 0.35  # slept to its deadline: no wake-up per message
    assert ib.wakeups == 0 and len(ib) == 5


def test_an_awaited_item_wakes_a_consumer_that_holds_steps():
    ib = Inbox()
    th, out = _waiter(ib, AWAITED, 5.0, room=100)
    ib.put("s", steps=1)
    ib.put("done", steps=0, awaited=True)
    th.join(5)
    assert out["slept_s"] < 1.0 and ib.wakeups == 1


def test_full_mode_wakes_only_for_a_full_batch_or_a_control_item():
    ib = Inbox()
    th, out = _waiter(ib, FULL, 5.0, room=10)
    ib.put("done", steps=0, awaited=True)  # a finish does not change a closing micro-batch
    ib.put("s", steps=4)
    time.sleep(0.1)
    assert th.is_alive()
    ib.put("s", steps=6)  # 10 steps: the micro-batch is full
    th.join(5)
    assert out["slept_s"] < 1.0
    th, out = _waiter(ib, FULL, 5.0, room=10)
    ib.put_control("barrier")
    th.join(5)
    assert out["slept_s"] < 1.0


def test_an_item_that_came_before_the_wait_returns_at_once():
    ib = Inbox()
    ib.put("early", steps=1)  # nobody waited: no signal
    t = time.perf_counter()
    ib.wait(5.0, AWAITED, 100)
    assert time.perf_counter() - t < 0.5 and ib.pop() == "early"


def test_take_times_out_empty_and_a_stale_signal_is_harmless():
    ib = Inbox()
    assert ib.take(0.05) is None
    ib._signal()  # a signal nobody consumed
    assert ib.take(0.05) is None
    th, out = _waiter(ib, AWAITED, 0.3, room=100)
    th.join(5)
    assert out["slept_s"] >= 0.25  # the stale signal was dropped, not taken for a wake-up


def test_no_item_is_lost_between_threads():
    ib = Inbox()
    n = 20000
    got = []

    def consume():
        while len(got) < n:
            item = ib.take(1.0)
            if item is not None:
                got.append(item)
                ib.wait(0.0005, FULL if item % 7 else AWAITED, 64)

    th = threading.Thread(target=consume)
    th.start()
    for i in range(n):
        ib.put(i, steps=1, awaited=(i % 13 == 0))
    th.join(30)
    while (item := ib.pop()) is not None:
        got.append(item)
    assert got == list(range(n))
