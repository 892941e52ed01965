"""A switch of station (recipe, promotion) never splits a multi-view cell between two models."""

from __future__ import annotations

import threading

import numpy as np

from linevision.scheduler.arbiter import CellArbiter
from linevision.scheduler.worker import StationWorker
from linevision.types import Decision, Frame, ModelRef, now_ns
from tests.scheduler.test_scheduler import Collector


class _TwoViews:
    """Decides a cell once both its views came to this instance (as a reference station)."""

    kind = "test"
    views = 2
    assembly_ms = 500.0
    parallel = True
    part_slack_ms = 0.0

    def __init__(self, tag: str) -> None:
        self.name = "s"
        self.model = ModelRef(tag, "1", tag * 64)
        self._seen: dict[int, set[str]] = {}
        self._lock = threading.Lock()

    def inspect(self, frame: Frame) -> Decision | None:
        with self._lock:
            seen = self._seen.setdefault(frame.cell_id, set())
            seen.add(frame.camera_id)
            if len(seen) < self.views:
                return None
        return Decision("OK", None, self.model.name, 0.9, model=self.model)


def _view(cell: int, camera: str) -> Frame:
    mono, wall = now_ns()
    return Frame(camera, cell, cell, mono, wall, np.zeros((4, 4), np.uint8))


def test_the_views_of_a_cell_after_a_switch_go_to_the_station_of_its_first_view():
    got = Collector()
    arbiter = CellArbiter(got)
    worker = StationWorker(_TwoViews("a"), arbiter, 1000, 16)
    arbiter.start()
    worker.start()
    try:
        worker.submit(_view(1, "c1"))
        worker.submit(_view(2, "c1"))
        worker.switch(_TwoViews("b"), "new")
        worker.submit(_view(1, "c2"))
        worker.submit(_view(3, "c1"))
        worker.submit(_view(2, "c2"))
        worker.submit(_view(3, "c2"))
        verdicts = {v.cell_id: v for v in got.wait(3)}
    finally:
        worker.stop()
        arbiter.stop()
    # no cell timed out: each was decided by one model, the one of its first view
    assert {c: (v.decision.reason, v.decision.label) for c, v in verdicts.items()} == {
        1: (None, "a"),
        2: (None, "a"),
        3: (None, "b"),
    }
    assert verdicts[3].recipe == "new"
