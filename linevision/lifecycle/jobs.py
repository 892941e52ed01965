"""The lifecycle's one worker thread: long jobs (challenge runs, repeatability) one at a time,
and the periodic checks (schedules, alarms) between them."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable

from linevision.log import get_logger

log = get_logger(__name__)

Job = Callable[[], None]

TICK_S = 1.0
NICE = 19


def lower_priority(nice: int = NICE) -> bool:
    """The calling thread (only) at a lower CPU priority (Linux: a thread is a task with its
    own nice value): the kernel gives the pipeline's threads the cores first. False where the
    system does not allow it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError):
        return False
    return True


class JobThread:
    """Runs queued jobs in order; calls every ``tick`` at least once a ``TICK_S`` when idle
    (after each job when busy). A job or tick that raises is logged and counted; the thread
    goes on."""

    def __init__(self, name: str = "lifecycle") -> None:
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._ticks: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.errors = 0
        self.busy = False
        self.stopping = threading.Event()
        """Set by ``stop``: a long job checks it between its steps and ends early."""

    def add_tick(self, tick: Callable[[], None]) -> None:
        self._ticks.append(tick)

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread.start()

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        next_tick = time.monotonic()
        while True:
            try:
                job = self._queue.get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                ran = False
            else:
                if job is None:
                    return
                self._guarded(job, "lifecycle_job_failed")
                ran = True
            if ran or time.monotonic() >= next_tick:
                for tick in list(self._ticks):
                    self._guarded(tick, "lifecycle_tick_failed")
                next_tick = time.monotonic() + TICK_S

    def _guarded(self, fn: Callable[[], None], event: str) -> None:
        self.busy = True
        try:
            fn()
        except Exception as exc:
            self.errors += 1
            log.exception(event, error=repr(exc)[:300])
        finally:
            self.busy = False
