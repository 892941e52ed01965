"""Named event counts that several threads bump and any thread reads."""

from __future__ import annotations

import threading
from collections import Counter


class Tally:
    """A ``Counter`` behind its own lock.

    Camera threads, pool threads and the deadline thread bump the same counts; ``+= 1`` on a
    shared ``Counter`` is a read and a write that another thread can come between, and
    iterating one while a thread adds a name raises. Every access here holds the lock.
    """

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def get(self, name: str, default: int = 0) -> int:
        with self._lock:
            return self._counts.get(name, default)

    def snapshot(self) -> dict[str, int]:
        """A copy of every count, taken at one instant."""
        with self._lock:
            return dict(self._counts)
