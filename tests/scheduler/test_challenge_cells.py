"""Challenge cells and the observer: the hot path's two lifecycle hooks, and what they keep."""

from __future__ import annotations

import threading
import time

import numpy as np

from linevision.scheduler.arbiter import CellArbiter
from linevision.scheduler.worker import StationWorker
from linevision.stations.base import Station
from linevision.types import Decision, Frame, ModelRef, now_ns
from tests.scheduler.test_scheduler import Collector

MODEL = ModelRef("m", "1", "0" * 64)


class _Station:
    kind = "test"
    views = 1
    assembly_ms = 0.0
    parallel = False
    part_slack_ms = 0.0
    model = MODEL

    def __init__(self, name: str = "s", delay_s: float = 0.0) -> None:
        self.name = name
        self.delay_s = delay_s

    def inspect(self, frame: Frame) -> Decision:
        time.sleep(self.delay_s)
        bright = float(frame.image.mean()) > 100
        return Decision(
            "NG" if bright else "OK", "defect" if bright else None, "x", 0.9, model=MODEL
        )


def _frame(cell: int, *, challenge: bool = False, level: int = 0) -> Frame:
    mono, wall = now_ns()
    img = np.full((8, 8), level, np.uint8)
    return Frame("cam", cell, cell, mono, wall, img, challenge=challenge)


def test_a_challenge_cell_is_decided_once_marked_and_counted_apart():
    got = Collector()
    arbiter = CellArbiter(got)
    worker = StationWorker(_Station(), arbiter, 1000, 8)
    arbiter.start()
    worker.start()
    try:
        worker.submit(_frame(7))
        worker.submit(_frame(-1, challenge=True, level=200))
        verdicts = {v.cell_id: v for v in got.wait(2)}
    finally:
        worker.stop()
        arbiter.stop()
    assert verdicts[7].challenge is False
    assert verdicts[-1].challenge is True
    assert verdicts[-1].decision.verdict == "NG"
    counts = worker.counters.snapshot()
    assert (counts["frames"], counts["inspected"]) == (1, 1)
    assert (counts["challenge_frames"], counts["challenge_inspected"]) == (1, 1)
    assert arbiter.counters["challenge_NG:defect"] == 1
    assert arbiter.counters.get("NG:defect") == 0


def test_a_late_challenge_cell_is_still_one_ng_timeout_marked_challenge():
    """The fail-safe holds for masters as for cells: late is NG timeout, once."""
    got = Collector()
    arbiter = CellArbiter(got)
    worker = StationWorker(_Station(delay_s=0.2), arbiter, 20, 8)
    arbiter.start()
    worker.start()
    try:
        worker.submit(_frame(-3, challenge=True))
        (v,) = got.wait(1)
        time.sleep(0.4)
    finally:
        worker.stop()
        arbiter.stop()
    assert len(got.items) == 1
    assert (v.cell_id, v.challenge, v.decision.verdict, v.decision.reason) == (
        -3,
        True,
        "NG",
        "timeout",
    )


def test_the_observer_sees_each_line_frame_after_its_verdict_and_cannot_break_it():
    got = Collector()
    arbiter = CellArbiter(got)
    worker = StationWorker(_Station(), arbiter, 1000, 8)
    seen: list[tuple[int, str | None, int]] = []
    calls = threading.Event()

    def observer(frame: Frame, decision: Decision | None, station: Station) -> None:
        # the verdict was handed to the arbiter before the observer is called
        seen.append((frame.cell_id, None if decision is None else decision.verdict, len(got.items)))
        calls.set()
        if frame.cell_id == 2:
            msg = "an observer that fails"
            raise RuntimeError(msg)

    worker.observer = observer
    arbiter.start()
    worker.start()
    try:
        for cell in (1, 2, 3):
            worker.submit(_frame(cell, level=200 if cell == 3 else 0))
        worker.submit(_frame(-9, challenge=True))
        got.wait(4)
        time.sleep(0.1)
    finally:
        worker.stop()
        arbiter.stop()
    assert sorted(v.cell_id for v in got.items) == [-9, 1, 2, 3]
    # masters are not observed; each line frame is, after its own verdict went out
    assert [(c, d) for c, d, _ in seen] == [(1, "OK"), (2, "OK"), (3, "NG")]
    assert all(published >= i + 1 for i, (_, _, published) in enumerate(seen))
    assert worker.counters["observer_errors"] == 1
