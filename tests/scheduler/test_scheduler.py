import threading
import time

import numpy as np

from linevision.scheduler.arbiter import CellArbiter
from linevision.scheduler.pool import EdfExecutor
from linevision.scheduler.worker import StationWorker
from linevision.types import Decision, Frame, FrameFault, ModelRef, Verdict, now_ns


class Collector:
    def __init__(self) -> None:
        self.items: list[Verdict] = []
        self.lock = threading.Lock()

    def __call__(self, v: Verdict) -> None:
        with self.lock:
            self.items.append(v)

    def wait(self, n: int, timeout_s: float = 3.0) -> list[Verdict]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self.lock:
                if len(self.items) >= n:
                    return list(self.items)
            time.sleep(0.005)
        return list(self.items)


def _frame(cell: int, image=None) -> Frame:
    mono, wall = now_ns()
    img = np.zeros((8, 8), np.uint8) if image is None else image
    return Frame("cam", cell, cell, mono, wall, img)


def _ok() -> Decision:
    return Decision("OK", None, "Normal", 0.9)


MODEL = ModelRef("test", "1", "0" * 64)
"""The model of the test stations: a verdict the worker makes itself (a fault) names it."""


def test_result_in_time_is_the_verdict():
    pub = Collector()
    arb = CellArbiter(pub)
    arb.start()
    try:
        assert arb.expect(_frame(1), "s", 1000, None)
        assert arb.resolve("s", 1, _ok())
        (v,) = pub.wait(1)
        assert (v.cell_id, v.decision.verdict) == (1, "OK")
        time.sleep(0.05)
        assert len(pub.items) == 1
    finally:
        arb.stop()


def test_deadline_miss_publishes_timeout_once_and_late_result_is_counted():
    pub = Collector()
    arb = CellArbiter(pub)
    arb.start()
    try:
        arb.expect(_frame(1), "s", 20, None)
        (v,) = pub.wait(1, 2.0)
        assert (v.decision.verdict, v.decision.reason) == ("NG", "timeout")
        assert not arb.resolve("s", 1, _ok())
        assert arb.counters["late_result"] == 1
        assert arb.counters["deadline_missed"] == 1
        time.sleep(0.05)
        assert len(pub.items) == 1
    finally:
        arb.stop()


def test_deadline_order_is_respected_for_interleaved_deadlines():
    pub = Collector()
    arb = CellArbiter(pub)
    arb.start()
    try:
        arb.expect(_frame(1), "slow", 300, None)
        arb.expect(_frame(2), "fast", 30, None)
        first = pub.wait(1, 2.0)
        assert [v.cell_id for v in first] == [2]
        both = pub.wait(2, 2.0)
        assert [v.station for v in both] == ["fast", "slow"]
    finally:
        arb.stop()


def test_duplicate_cell_gets_no_second_verdict():
    pub = Collector()
    arb = CellArbiter(pub)
    assert arb.expect(_frame(5), "s", 1000, None)
    assert not arb.expect(_frame(5), "s", 1000, None)
    arb.resolve("s", 5, _ok())
    assert not arb.expect(_frame(5), "s", 1000, None)
    assert arb.counters["duplicate_cell"] == 2
    assert len(pub.items) == 1


def test_fault_is_ng_with_its_reason_and_not_repeated():
    pub = Collector()
    arb = CellArbiter(pub)
    mono, wall = now_ns()
    assert arb.fault("s", FrameFault("cam", 9, "bad_frame", "incomplete", mono, wall), None)
    assert not arb.fault("s", FrameFault("cam", 9, "camera_error", "lost", mono, wall), None)
    (v,) = pub.items
    assert (v.cell_id, v.decision.verdict, v.decision.reason) == (9, "NG", "bad_frame")


def test_flush_publishes_every_pending_cell():
    pub = Collector()
    arb = CellArbiter(pub)
    for c in range(3):
        arb.expect(_frame(c), "s", 10_000, None)
    assert arb.flush() == 3
    assert [v.decision.reason for v in pub.items] == ["timeout"] * 3
    assert arb.flush() == 0
    assert pub.items[3:] == []


class GatedStation:
    """A station whose inspection waits on a gate: the fault injected is a stalled model."""

    name = "gated"
    kind = "test"
    views = 1
    assembly_ms = 0.0
    parallel = False
    part_slack_ms = 0.0
    model = MODEL

    def __init__(self) -> None:
        self.gate = threading.Event()

    def inspect(self, frame: Frame) -> Decision:
        self.gate.wait(5)
        if frame.image.size == 0:
            msg = "boom"
            raise RuntimeError(msg)
        return _ok()


def test_full_queue_makes_overload_ng_without_blocking_and_recovers():
    pub = Collector()
    arb = CellArbiter(pub)
    arb.start()
    station = GatedStation()
    worker = StationWorker(station, arb, deadline_ms=10_000, queue_size=2)
    worker.start()
    try:
        t0 = time.monotonic()
        for c in range(1, 7):
            worker.submit(_frame(c))
        assert time.monotonic() - t0 < 0.1
        overloads = pub.wait(3)
        assert {v.decision.reason for v in overloads} == {"overload"}
        assert {v.decision.model for v in overloads} == {MODEL}
        assert worker.counters["dropped"] >= 3
        station.gate.set()
        got = pub.wait(6)
        assert sorted(v.cell_id for v in got) == [1, 2, 3, 4, 5, 6]
        worker.submit(_frame(7))
        assert pub.wait(7)[-1].decision.verdict == "OK"
    finally:
        station.gate.set()
        worker.stop()
        arb.stop()


def test_model_exception_is_model_error_ng():
    pub = Collector()
    arb = CellArbiter(pub)
    arb.start()
    station = GatedStation()
    station.gate.set()
    worker = StationWorker(station, arb, deadline_ms=10_000, queue_size=4)
    worker.start()
    try:
        worker.submit(_frame(1, np.zeros((0, 0), np.uint8)))
        worker.submit(_frame(2))
        got = pub.wait(2)
        by_cell = {v.cell_id: v.decision for v in got}
        assert (by_cell[1].verdict, by_cell[1].reason) == ("NG", "model_error")
        assert by_cell[2].verdict == "OK"
        assert worker.counters["model_error"] == 1
    finally:
        worker.stop()
        arb.stop()


def test_result_after_deadline_is_timeout_even_before_the_deadline_thread_runs():
    pub = Collector()
    arb = CellArbiter(pub)  # deadline thread not started: resolve alone must enforce it
    arb.expect(_frame(3), "s", 0.001, None)
    time.sleep(0.002)
    assert not arb.resolve("s", 3, _ok())
    (v,) = pub.items
    assert (v.decision.verdict, v.decision.reason) == ("NG", "timeout")
    assert arb.counters["late_result"] == 1
    # a fault after the deadline is late too: on the wire only NG timeout may come later
    arb.expect(_frame(4), "s", 0.001, None)
    time.sleep(0.002)
    assert not arb.resolve("s", 4, Decision.fault("overload", "queue_full"))
    assert pub.items[-1].decision.reason == "timeout"
    assert arb.counters["late_result"] == 2


def _view(cell: int, camera: str) -> Frame:
    mono, wall = now_ns()
    return Frame(camera, cell, cell, mono, wall, np.zeros((4, 4), np.uint8))


def test_multi_view_cell_waits_for_every_view_and_gets_one_verdict():
    pub = Collector()
    arb = CellArbiter(pub)
    arb.start()
    try:
        assert arb.expect(_view(1, "c1"), "six", 30, None, views=3, assembly_ms=500)
        time.sleep(0.1)  # longer than deadline_ms: the assembly window keeps the cell open
        assert arb.expect(_view(1, "c2"), "six", 30, None, views=3, assembly_ms=500)
        assert not arb.expect(_view(1, "c2"), "six", 30, None, views=3, assembly_ms=500)
        assert arb.counters["duplicate_view"] == 1
        last = _view(1, "c3")
        assert arb.expect(last, "six", 30, None, views=3, assembly_ms=500)
        assert arb.resolve("six", 1, _ok())
        (v,) = pub.wait(1)
        assert v.decision.verdict == "OK"
        assert v.t_frame_mono_ns == last.t_mono_ns  # latency counts from the last view
    finally:
        arb.stop()


def test_multi_view_cell_with_a_missing_view_times_out_after_the_window():
    pub = Collector()
    arb = CellArbiter(pub)
    arb.start()
    try:
        t0 = time.monotonic()
        arb.expect(_view(2, "c1"), "six", 20, None, views=2, assembly_ms=100)
        (v,) = pub.wait(1, 2.0)
        waited = time.monotonic() - t0
        assert (v.decision.verdict, v.decision.reason) == ("NG", "timeout")
        assert waited >= 0.11
        assert not arb.expect(_view(2, "c2"), "six", 20, None, views=2, assembly_ms=100)
    finally:
        arb.stop()


def test_last_view_tightens_the_deadline_to_deadline_ms_after_it():
    pub = Collector()
    arb = CellArbiter(pub)
    arb.start()
    try:
        t0 = time.monotonic()
        arb.expect(_view(3, "c1"), "six", 20, None, views=2, assembly_ms=2000)
        arb.expect(_view(3, "c2"), "six", 20, None, views=2, assembly_ms=2000)
        (v,) = pub.wait(1, 2.0)
        assert v.decision.reason == "timeout"
        assert time.monotonic() - t0 < 1.0
    finally:
        arb.stop()


def test_a_fault_on_one_view_decides_the_cell_and_later_views_are_refused():
    pub = Collector()
    arb = CellArbiter(pub)
    arb.expect(_view(4, "c1"), "six", 1000, None, views=2, assembly_ms=1000)
    mono, wall = now_ns()
    arb.fault("six", FrameFault("c2", 4, "camera_error", "lost", mono, wall), None)
    assert not arb.expect(_view(4, "c2"), "six", 1000, None, views=2, assembly_ms=1000)
    assert not arb.expect(_view(4, "c1"), "six", 1000, None, views=2, assembly_ms=1000)
    (v,) = pub.items
    assert (v.decision.verdict, v.decision.reason) == ("NG", "camera_error")
    assert arb.counters["view_after_decision"] == 2
    assert arb.counters["duplicate_cell"] == 0


class SlowStation:
    name = "slow"
    kind = "pole_piece"
    views = 1
    assembly_ms = 0.0
    parallel = False
    part_slack_ms = 0.0
    model = MODEL

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def inspect(self, frame: Frame) -> Decision:
        time.sleep(self.seconds)
        return _ok()


def test_a_burst_sheds_work_that_cannot_meet_its_deadline_and_then_keeps_up():
    pub = Collector()
    arb = CellArbiter(pub)
    arb.start()
    # 40 ms per image against a 100 ms deadline: of a burst of 8, the first two fit
    worker = StationWorker(SlowStation(0.04), arb, deadline_ms=100, queue_size=16)
    worker.start()
    try:
        # a few cells one at a time: the station's usual job time becomes known
        for c in range(1, 6):
            worker.submit(_frame(c))
            assert pub.wait(c, 2.0)[-1].decision.reason is None
        for c in range(6, 14):
            worker.submit(_frame(c))
        burst = pub.wait(13, 5.0)[5:]
        assert len(burst) == 8
        reasons = {v.cell_id: v.decision.reason for v in burst}
        assert reasons[6] is None
        assert reasons[7] is None
        shed = [c for c, r in reasons.items() if r == "overload"]
        assert shed, reasons
        assert set(reasons.values()) <= {None, "overload", "timeout"}
        # shed by the pool (not timed out by the arbiter): the detail says why
        for v in burst:
            if v.decision.reason == "overload":
                assert v.decision.label == "deadline_unreachable"
        assert worker.counters["shed"] == len(shed)
        # the burst is over: the next cell is inspected again
        time.sleep(0.1)
        worker.submit(_frame(14))
        last = pub.wait(14, 2.0)[-1]
        assert (last.cell_id, last.decision.verdict, last.decision.reason) == (14, "OK", None)
    finally:
        worker.stop()
        arb.stop()


def test_after_eight_cells_shed_in_a_row_the_next_job_runs_to_measure_again():
    pub = Collector()
    arb = CellArbiter(pub)
    arb.start()
    worker = StationWorker(SlowStation(0.04), arb, deadline_ms=100, queue_size=32)
    worker.start()
    try:
        for c in range(1, 6):
            worker.submit(_frame(c))
            assert pub.wait(c, 2.0)[-1].decision.reason is None
        for c in range(6, 18):
            worker.submit(_frame(c))
        got = pub.wait(17, 5.0)
        assert len(got) == 17
    finally:
        worker.stop()
        arb.stop()
    # two cells of the burst fit, eight are shed, then one runs although it cannot make it
    assert worker.counters["shed"] == 8
    assert worker.counters["inspected"] == 5 + 2 + 1
    assert {v.decision.reason for v in got[5:]} <= {None, "overload", "timeout"}


class OrderStation:
    """Records the order its frames are inspected in; ``views`` strips make a cell."""

    kind = "test"
    assembly_ms = 1000.0
    parallel = False
    model = MODEL

    def __init__(self, name: str, views: int, order: list[str], part_slack_ms: float) -> None:
        self.name = name
        self.views = views
        self.order = order
        self.part_slack_ms = part_slack_ms

    def inspect(self, frame: Frame) -> Decision | None:
        self.order.append(f"{self.name}:{frame.part}")
        return _ok() if frame.part == frame.parts - 1 else None


def _run_order(part_slack_ms: float) -> list[str]:
    """A strip before the last (station film) and a one-image cell (station pole) wait
    together for the pool's only thread; which goes first?"""
    arb = CellArbiter(Collector())
    arb.start()
    pool = EdfExecutor(1, "test-slack")
    pool.start()
    order: list[str] = []
    film = OrderStation("film", 2, order, part_slack_ms)
    pole = OrderStation("pole", 1, order, 0.0)
    workers = [StationWorker(s, arb, 30.0, 8, pool) for s in (film, pole)]
    gate = threading.Event()
    try:
        assert pool.submit(pool.lane("gate", 1), 0, lambda: gate.wait(5))
        mono, wall = now_ns()
        strip = Frame("film_cam", 1, 1, mono, wall, np.zeros((8, 8), np.uint8), part=0, parts=2)
        image = Frame("pole_cam", 1, 1, mono + 1_000_000, wall, np.zeros((8, 8), np.uint8))
        workers[0].submit(strip)
        workers[1].submit(image)
        gate.set()
        end = time.monotonic() + 3.0
        while len(order) < 2 and time.monotonic() < end:
            time.sleep(0.005)
        return order
    finally:
        pool.stop()
        arb.stop()


def test_a_strip_before_the_last_lets_a_cells_last_image_go_first():
    # without slack, earliest deadline first: the strip arrived 1 ms earlier
    assert _run_order(0.0) == ["film:0", "pole:0"]
    # one strip period of slack: the image on the path to a verdict goes first
    assert _run_order(25.0) == ["pole:0", "film:0"]
