"""One pool of inference threads shared by every station, earliest deadline first.

Each station has a *lane*: a bounded FIFO of jobs and a limit on how many of them run at
once (1 for a station whose frames must be handled in order, such as the strips of a
line-scan frame). A free thread takes the next job of the lane whose most urgent queued job
has the earliest deadline, so a short job of a tight-deadline station is not left waiting
behind a queue of line-scan strips. Jobs run to the end (no pre-emption); stations keep
them short (one image, one view, one strip).

A lane is FIFO, and its urgency is the *earliest* deadline in it rather than its head's: a
job that must finish soon lifts the lane, and the jobs queued before it in that lane (the
earlier strips of a line-scan frame) run first, as they must to reach it.

Thread count: ``workers`` threads run jobs; with onnxruntime sessions of one intra-op
thread each, ``workers`` = the number of cores keeps every core busy without oversubscribing
them (2 on the reference line PC).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from linevision.log import get_logger

log = get_logger(__name__)

Job = Callable[[], None]

_IDLE_WAKE_S = 0.2


@dataclass(slots=True)
class Lane:
    """One station's queue in the pool."""

    name: str
    capacity: int
    concurrency: int
    jobs: deque[tuple[int, int, Job]] = field(default_factory=deque)
    running: int = 0
    done: int = 0

    def urgency(self) -> tuple[int, int] | None:
        """(earliest deadline, arrival order of the head) when a job may start, else None."""
        if not self.jobs or self.running >= self.concurrency:
            return None
        return min(d for d, _, _ in self.jobs), self.jobs[0][1]


class EdfExecutor:
    """``workers`` threads that run the jobs of every lane, most urgent lane first."""

    def __init__(self, workers: int, name: str = "infer") -> None:
        if workers < 1:
            msg = f"workers must be at least 1, got {workers}"
            raise ValueError(msg)
        self.workers = workers
        self.name = name
        self._cond = threading.Condition()
        self._lanes: dict[str, Lane] = {}
        self._order = itertools.count()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        self._beats = [time.monotonic()] * workers
        self._started = False
        self.errors = 0
        """Jobs that raised (updated under the pool's lock)."""

    def lane(self, name: str, capacity: int, concurrency: int = 1) -> Lane:
        """Add a lane (or return the one of that name, with the new limits)."""
        with self._cond:
            lane = self._lanes.get(name)
            if lane is None:
                lane = Lane(name, capacity, max(1, min(concurrency, self.workers)))
                self._lanes[name] = lane
            else:
                lane.capacity = capacity
                lane.concurrency = max(1, min(concurrency, self.workers))
            return lane

    def submit(self, lane: Lane, deadline_ns: int, job: Job) -> bool:
        """Queue ``job``; False (nothing queued) when the lane is full or the pool stopped."""
        with self._cond:
            if self._stopping or len(lane.jobs) >= lane.capacity:
                return False
            lane.jobs.append((deadline_ns, next(self._order), job))
            self._cond.notify()
        return True

    def depth(self, lane: Lane) -> int:
        with self._cond:
            return len(lane.jobs)

    def pending(self) -> int:
        """Jobs queued in every lane (0: no inspection waits for a thread)."""
        with self._cond:
            return sum(len(lane.jobs) for lane in self._lanes.values())

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Run no more jobs; wait for the running ones. Queued jobs are dropped."""
        with self._cond:
            self._stopping = True
            dropped = sum(len(lane.jobs) for lane in self._lanes.values())
            for lane in self._lanes.values():
                lane.jobs.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            if t.is_alive():
                t.join(max(deadline - time.monotonic(), 0.0))
        if dropped:
            log.info("executor_stopped", dropped_jobs=dropped)

    def is_alive(self) -> bool:
        return self._started and all(t.is_alive() for t in self._threads)

    def threads(self) -> tuple[threading.Thread, ...]:
        return tuple(self._threads)

    def last_beat(self) -> float:
        """The oldest thread heartbeat (monotonic s): a thread stuck in a job stops beating."""
        return min(self._beats)

    def _next(self) -> tuple[Lane, Job] | None:
        """Pop the most urgent runnable job (lock held); None when there is none."""
        best: Lane | None = None
        best_key: tuple[int, int] | None = None
        for lane in self._lanes.values():
            key = lane.urgency()
            if key is not None and (best_key is None or key < best_key):
                best, best_key = lane, key
        if best is None:
            return None
        _, _, job = best.jobs.popleft()
        best.running += 1
        return best, job

    def _loop(self, index: int) -> None:
        while True:
            with self._cond:
                picked = None
                while not self._stopping:
                    picked = self._next()
                    if picked is not None:
                        break
                    self._beats[index] = time.monotonic()
                    self._cond.wait(_IDLE_WAKE_S)
                if picked is None:
                    return
            lane, job = picked
            t0 = time.monotonic_ns()
            self._beats[index] = t0 / 1e9
            failed = False
            try:
                job()
            except Exception as exc:
                failed = True
                log.exception("job_failed", lane=lane.name, error=repr(exc))
            t1 = time.monotonic_ns()
            with self._cond:
                self.errors += failed
                lane.running -= 1
                lane.done += 1
                self._beats[index] = t1 / 1e9
                self._cond.notify()
