"""The deadline contract between the arbiter and the bus: decided in time, or NG timeout.

A result is checked against its cell's deadline and queued for the bus in one step; its
``latency_ms`` counts to that step, so a busy bus thread cannot push a verdict decided in
time over the budget, and no verdict but NG ``timeout`` is decided after the deadline.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import zmq

from linevision.bus.publisher import VerdictPublisher
from linevision.bus.wire import VerdictMessage, context, parse_message
from linevision.scheduler.arbiter import CellArbiter
from linevision.types import Decision, Frame, FrameFault, Verdict, now_ns
from tests.helpers import free_tcp_endpoint
from tests.scheduler.test_scheduler import Collector

DEADLINE_MS = 30.0


def _frame(cell: int, age_ms: float = 0.0, camera: str = "cam") -> Frame:
    """A frame captured ``age_ms`` ago."""
    mono, wall = now_ns()
    age = int(age_ms * 1e6)
    return Frame(camera, cell, cell, mono - age, wall - age, np.zeros((4, 4), np.uint8))


def _ok() -> Decision:
    return Decision("OK", None, "Normal", 0.9)


def _receive(sock: zmq.Socket[bytes], n: int, timeout_s: float = 5.0) -> list[VerdictMessage]:
    out: list[VerdictMessage] = []
    end = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < end:
        if sock.poll(100):
            msg = parse_message(*sock.recv_multipart())
            if isinstance(msg, VerdictMessage):
                out.append(msg)
    return out


def test_a_verdict_decided_just_in_time_keeps_its_latency_behind_a_slow_bus() -> None:
    endpoint = free_tcp_endpoint()
    blocker_sent = threading.Event()

    def slow_listener(v: Verdict, _seq: int, _latency_ms: float) -> None:
        if v.cell_id == 1:
            blocker_sent.set()
            time.sleep(0.06)  # the bus thread is busy: what is queued now waits for it

    pub = VerdictPublisher(endpoint, heartbeat_s=0.05, on_published=slow_listener)
    sock = context().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    arb = CellArbiter(pub.publish)
    pub.start()
    arb.start()
    try:
        assert sock.poll(3000)  # a heartbeat: the subscription is in place
        sock.recv_multipart()
        assert arb.expect(_frame(1), "s", DEADLINE_MS, None)
        assert arb.resolve("s", 1, _ok())
        assert blocker_sent.wait(2.0)
        # decided a few ms before its deadline, while the bus thread is held up
        assert arb.expect(_frame(2, age_ms=DEADLINE_MS - 3.0), "s", DEADLINE_MS, None)
        assert arb.resolve("s", 2, _ok())
        got = _receive(sock, 2)
    finally:
        arb.stop()
        pub.stop()
        sock.close()
    assert [(m.cell_id, m.verdict, m.reason) for m in got] == [(1, "OK", None), (2, "OK", None)]
    late = got[1]
    assert DEADLINE_MS - 3.0 <= late.latency_ms <= DEADLINE_MS
    assert late.publish_ms is not None
    assert late.publish_ms >= 40.0
    # the wire's two clocks agree: sent = frame + latency + publish delay
    sent_ms = (late.t_publish_ns - late.t_frame_ns) / 1e6
    assert abs(sent_ms - (late.latency_ms + late.publish_ms)) < 5.0


def test_results_racing_the_deadline_thread_are_in_time_or_timeout_never_both() -> None:
    pub = Collector()
    arb = CellArbiter(pub)
    arb.start()
    cells = 600
    budget_ms = 2.0
    rng = random.Random(7)
    resolved_ok: set[int] = set()
    try:
        for cell in range(1, cells + 1):
            arb.expect(_frame(cell), "s", budget_ms, None)
            # resolve around the deadline: some a little before, some a little after
            time.sleep(rng.uniform(0.0015, 0.0025))
            if arb.resolve("s", cell, _ok()):
                resolved_ok.add(cell)
        got = pub.wait(cells, 5.0)
    finally:
        arb.stop()
    assert sorted(v.cell_id for v in got) == list(range(1, cells + 1))
    budget_ns = int(budget_ms * 1e6)
    for v in got:
        assert v.stages is not None
        if v.decision.reason == "timeout":
            assert v.cell_id not in resolved_ok
            continue
        assert v.cell_id in resolved_ok
        assert v.stages.decided_mono_ns - v.t_frame_mono_ns <= budget_ns
    reasons = {v.decision.reason for v in got}
    assert reasons == {None, "timeout"}  # the race was really run both ways


def test_a_cell_short_of_views_gets_no_result_later_than_the_budget_after_its_last_frame() -> None:
    pub = Collector()
    arb = CellArbiter(pub)  # the assembly window is long: only resolve can enforce this
    assert arb.expect(
        _frame(1, age_ms=40.0, camera="c1"), "six", 30, None, views=3, assembly_ms=500
    )
    assert arb.expect(
        _frame(1, age_ms=35.0, camera="c2"), "six", 30, None, views=3, assembly_ms=500
    )
    assert not arb.resolve("six", 1, Decision.fault("overload", "deadline_unreachable"))
    (v,) = pub.items
    assert (v.decision.verdict, v.decision.reason) == ("NG", "timeout")
    # a fault of the missing view is the cell's last event: in time, latency counts from it
    assert arb.expect(
        _frame(2, age_ms=40.0, camera="c1"), "six", 30, None, views=3, assembly_ms=500
    )
    mono, wall = now_ns()
    assert arb.fault("six", FrameFault("c3", 2, "camera_error", "lost", mono, wall), None)
    v = pub.items[-1]
    assert (v.cell_id, v.decision.reason) == (2, "camera_error")
    assert v.stages is not None
    assert v.stages.decided_mono_ns - v.t_frame_mono_ns <= 30_000_000


def test_a_fault_reported_after_its_deadline_goes_out_as_timeout():
    """A cell known only by its fault (a trigger slot the acquisition thread missed),
    reported 45 ms after the fault was stamped (a starved thread): no verdict but NG
    ``timeout`` may carry a latency over the deadline, so that is what it becomes; the
    fault's reason stays in the detail. A fault reported in time keeps its reason."""
    pub = Collector()
    arb = CellArbiter(pub)
    mono, wall = now_ns()
    late = FrameFault("cam", 7, "overload", "trigger slot missed", mono - 45_000_000, wall)
    assert not arb.fault("pp", late, None, None, DEADLINE_MS)
    v = pub.items[-1]
    assert (v.cell_id, v.decision.verdict, v.decision.reason) == (7, "NG", "timeout")
    assert v.decision.label == "overload reported late: trigger slot missed"
    mono, wall = now_ns()
    assert arb.fault("pp", FrameFault("cam", 8, "overload", "x", mono, wall), None, None, 30.0)
    assert pub.items[-1].decision.reason == "overload"
