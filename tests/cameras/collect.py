"""A thread-safe sink for acquisition workers (imported by tests; not a test module)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from linevision.types import Frame, FrameFault

Item = Frame | FrameFault


class Collector:
    """Records every Frame/FrameFault; tests wait on a condition with a deadline."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self._cond = threading.Condition()

    def __call__(self, item: Item) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Item]], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.items), timeout)

    def snapshot(self) -> list[Item]:
        with self._cond:
            return list(self.items)

    def frames(self) -> list[Frame]:
        return [i for i in self.snapshot() if isinstance(i, Frame)]

    def faults(self) -> list[FrameFault]:
        return [i for i in self.snapshot() if isinstance(i, FrameFault)]


def count_frames(n: int) -> Callable[[list[Item]], bool]:
    return lambda items: sum(isinstance(i, Frame) for i in items) >= n


def cell_ids(items: list[Item]) -> list[int]:
    return [i.cell_id for i in items]
