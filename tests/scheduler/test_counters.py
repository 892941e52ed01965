"""Counters that camera threads, pool threads and the deadline thread bump at once.

Every count must come out exact however the threads interleave. A tiny switch interval
makes the interpreter change threads between nearly every step, so a read-modify-write
done outside a lock loses counts here.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from linevision.scheduler.arbiter import CellArbiter
from linevision.scheduler.pool import EdfExecutor
from linevision.scheduler.tally import Tally
from linevision.scheduler.worker import StationWorker
from linevision.types import Decision, Frame, FrameFault, now_ns
from tests.scheduler.test_scheduler import Collector

THREADS = 6


@pytest.fixture(autouse=True)
def switch_threads_often() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _together(n: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` on ``n`` threads released at the same instant."""
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30.0)
    assert not any(t.is_alive() for t in threads)


def test_tally_counts_exactly_and_reads_while_written() -> None:
    tally = Tally()
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(sum(tally.snapshot().values()))

    r = threading.Thread(target=reader)
    r.start()
    try:
        _together(THREADS, lambda _i: [tally.add(f"k{j}") for j in range(5_000)])
    finally:
        stop.set()
        r.join(5.0)
    snap = tally.snapshot()
    assert len(snap) == 5_000
    assert set(snap.values()) == {THREADS}
    assert tally["k0"] == THREADS
    assert tally.get("absent") == 0
    assert seen == sorted(seen)


class _QuickStation:
    """Answers OK at once; its cells may be worked on by every pool thread."""

    name = "quick"
    kind = "test"
    views = 1
    assembly_ms = 0.0
    parallel = True
    part_slack_ms = 0.0
    model = None

    def inspect(self, _frame: Frame) -> Decision:
        return Decision("OK", None, "Normal", 0.9)


def test_station_arbiter_and_pool_counters_add_up_under_many_threads() -> None:
    rounds, per_thread = 20, 40
    for _ in range(rounds):
        pub = Collector()
        arb = CellArbiter(pub)
        pool = EdfExecutor(3, "hammer")
        worker = StationWorker(_QuickStation(), arb, 10_000, 10_000, pool)
        arb.start()
        worker.start()

        def submit(i: int, worker: StationWorker = worker) -> None:
            for k in range(per_thread):
                cell = i * per_thread + k + 1
                mono, wall = now_ns()
                if k % 4 == 0:
                    worker.submit(FrameFault("cam", cell, "bad_frame", "x", mono, wall))
                else:
                    worker.submit(Frame("cam", cell, cell, mono, wall, np.zeros((2, 2), np.uint8)))

        try:
            _together(THREADS, submit)
            total = THREADS * per_thread
            faults = THREADS * (per_thread // 4)
            got = pub.wait(total, 10.0)
        finally:
            worker.stop()
            pool.stop()
            arb.stop()
        assert len(got) == total
        assert worker.counters.snapshot() == {
            "frames": total - faults,
            "fault_bad_frame": faults,
            "inspected": total - faults,
        }
        assert arb.counters.snapshot() == {"OK:None": total - faults, "NG:bad_frame": faults}


def test_pool_counts_every_failed_job() -> None:
    pool = EdfExecutor(4, "failing")
    lane = pool.lane("l", 100_000, 4)
    done = threading.Semaphore(0)
    jobs = 2_000

    def fail() -> None:
        done.release()
        msg = "job fails"
        raise RuntimeError(msg)

    pool.start()
    try:
        _together(4, lambda _i: [pool.submit(lane, 0, fail) for _ in range(jobs // 4)])
        for _ in range(jobs):
            assert done.acquire(timeout=10.0)
    finally:
        pool.stop()
    assert pool.errors == jobs
