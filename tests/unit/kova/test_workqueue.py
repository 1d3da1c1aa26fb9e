"""The keyed work queue."""

from __future__ import annotations

import threading
import time

from kova.workqueue import WorkQueue


def test_dedupes_waiting_keys():
    q = WorkQueue()
    for k in ("a", "b", "a", "a"):
        q.add(k)
    assert len(q) == 2
    assert q.get(0) == "a" and q.get(0) == "b" and q.get(0.01) is None


def test_key_not_processed_twice_at_once():
    q = WorkQueue()
    q.add("a")
    assert q.get(0) == "a"
    q.add("a")  # re-added while processing: held back
    assert q.get(0.05) is None
    q.done("a")
    assert q.get(0) == "a"
    q.done("a")
    assert q.get(0.01) is None


def test_add_after():
    q = WorkQueue()
    t0 = time.monotonic()
    q.add_after("x", 0.2)
    assert q.get(1.0) == "x"
    assert time.monotonic() - t0 >= 0.19


def test_add_after_zero_is_immediate():
    q = WorkQueue()
    q.add_after("x", 0)
    assert q.get(0) == "x"


def test_shutdown_wakes_getters():
    q = WorkQueue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    time.sleep(0.05)
    q.shutdown()
    t.join(2)
    assert got == [None]


def test_many_workers_each_key_once():
    q = WorkQueue()
    seen: list[str] = []
    active: set[str] = set()
    overlap = []
    lock = threading.Lock()

    def worker():
        while (k := q.get(0.2)) is not None:
            with lock:
                if k in active:
                    overlap.append(k)
                active.add(k)
            time.sleep(0.005)
            with lock:
                active.discard(k)
                seen.append(k)
            q.done(k)

    for i in range(50):
        q.add(f"k{i % 10}")
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(50):
        q.add(f"k{i % 10}")
    for t in threads:
        t.join()
    assert not overlap
    assert set(seen) == {f"k{i}" for i in range(10)}
