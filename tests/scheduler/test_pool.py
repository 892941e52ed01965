"""The shared inference pool: earliest deadline first across lanes, FIFO and limits within."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from linevision.scheduler.pool import EdfExecutor, Lane


def _order_after_a_busy_job(
    pool: EdfExecutor, busy: Lane, queue: Callable[[list[str]], None], count: int
) -> list[str]:
    """Hold the pool's only thread with a job on ``busy``, let ``queue`` submit jobs that
    append to the returned list, release the thread and wait for ``count`` of them."""
    order: list[str] = []
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        assert release.wait(5.0)

    assert pool.submit(busy, 0, hold)
    pool.start()
    try:
        assert started.wait(2.0)
        queue(order)
        release.set()
        deadline = time.monotonic() + 2.0
        while len(order) < count and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        pool.stop()
    return order


def test_earliest_deadline_runs_first_across_lanes() -> None:
    pool = EdfExecutor(1)
    film = pool.lane("film", capacity=8, concurrency=1)
    pole = pool.lane("pole", capacity=8, concurrency=1)

    def queue(order: list[str]) -> None:
        # queued while the only thread is busy: film strips with far deadlines, then a
        # pole-piece image with a near one
        for i in range(3):
            assert pool.submit(film, 1_000 + i, lambda i=i: order.append(f"film{i}"))
        assert pool.submit(pole, 500, lambda: order.append("pole"))

    order = _order_after_a_busy_job(pool, film, queue, 4)
    assert order == ["pole", "film0", "film1", "film2"]


def test_a_lane_is_fifo_and_as_urgent_as_its_most_urgent_job() -> None:
    pool = EdfExecutor(1)
    film = pool.lane("film", capacity=8, concurrency=1)
    six = pool.lane("six", capacity=8, concurrency=1)

    def queue(order: list[str]) -> None:
        assert pool.submit(film, 900, lambda: order.append("strip"))
        assert pool.submit(film, 100, lambda: order.append("last strip"))
        assert pool.submit(six, 300, lambda: order.append("view"))

    order = _order_after_a_busy_job(pool, six, queue, 3)
    # the film lane's last strip (deadline 100) makes the lane the most urgent, but the
    # strip queued before it runs first
    assert order == ["strip", "last strip", "view"]


def test_concurrency_limits_and_capacity() -> None:
    pool = EdfExecutor(2)
    serial = pool.lane("serial", capacity=3, concurrency=1)
    wide = pool.lane("wide", capacity=3, concurrency=5)
    assert wide.concurrency == 2
    running = {"serial": 0, "wide": 0}
    peak = {"serial": 0, "wide": 0}
    lock = threading.Lock()

    def job(name: str):
        def run() -> None:
            with lock:
                running[name] += 1
                peak[name] = max(peak[name], running[name])
            time.sleep(0.03)
            with lock:
                running[name] -= 1

        return run

    for _ in range(3):
        assert pool.submit(serial, 1, job("serial"))
    assert not pool.submit(serial, 1, job("serial"))
    pool.start()
    try:
        time.sleep(0.01)
        for _ in range(3):
            assert pool.submit(wide, 0, job("wide"))
        deadline = time.monotonic() + 3.0
        while (serial.done < 3 or wide.done < 3) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        pool.stop()
    assert (serial.done, wide.done) == (3, 3)
    assert peak["serial"] == 1
    assert peak["wide"] == 2


def test_a_failing_job_does_not_stop_the_pool() -> None:
    pool = EdfExecutor(1)
    lane = pool.lane("x", capacity=4)
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("model exploded")

    pool.start()
    try:
        assert pool.submit(lane, 1, boom)
        assert pool.submit(lane, 2, done.set)
        assert done.wait(2.0)
        assert pool.errors == 1
        assert pool.is_alive()
    finally:
        pool.stop()
    assert not pool.submit(lane, 3, done.set)


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EdfExecutor(0)
