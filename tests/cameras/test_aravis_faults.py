"""Network faults of a GigE Vision camera, end to end through the acquisition worker, against
Aravis's fake camera on loopback: lost packets, a camera killed mid-stream, a camera that
comes back with the same serial (or another one). No part of the camera is replaced.

The fake logs each frame it sends and each packet it drops on purpose (``-r``); the tests
compare what the worker delivered with that log, cell by cell.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from linevision.cameras import open_driver
from linevision.cameras.base import CameraDriver
from linevision.cameras.worker import AcquisitionWorker
from linevision.config import AravisCamera
from linevision.types import Frame, FrameFault
from tests.cameras.collect import Collector, Item, count_frames
from tests.cameras.gige import FakeGigE, address_lock, ramp
from tests.cameras.test_aravis import LOOPBACK, gv_cfg, new_serial


@pytest.fixture
def lock() -> Iterator[None]:
    with address_lock(LOOPBACK):
        yield


def factory(cfg: AravisCamera) -> Callable[[], CameraDriver]:
    return lambda: open_driver(cfg)


def in_cell_order(items: list[Item]) -> list[Item]:
    ids = sorted(i.cell_id for i in items)
    assert ids == list(range(1, len(ids) + 1)), "every cell exactly once, none skipped"
    return sorted(items, key=lambda i: i.cell_id)


def summary(items: list[Item]) -> str:
    return " ".join(
        f"{i.cell_id}:F{i.frame_counter}" if isinstance(i, Frame) else f"{i.cell_id}:{i.reason}"
        for i in items
    )


def device_error_times(worker: AcquisitionWorker, n: int, timeout_s: float = 30.0) -> list[float]:
    """When the worker's ``device_errors`` reached 1, 2, ..., n (polled every 10 ms)."""
    times: list[float] = []
    deadline = time.monotonic() + timeout_s
    while len(times) < n and time.monotonic() < deadline:
        errors = worker.stats().device_errors
        times.extend([time.monotonic()] * max(0, min(errors, n) - len(times)))
        time.sleep(0.01)
    assert len(times) == n, times
    return times


def fast_reconnect(**kw: object) -> dict[str, object]:
    return {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0, **kw}


def frame_ids(items: list[Item]) -> list[int]:
    """The camera frame id of each cell (free run: one frame is one cell, so the ids follow
    from any delivered frame's counter; 16-bit ids wrap from 65535 to 1)."""
    first = next(i for i in items if isinstance(i, Frame))
    return [(first.frame_counter + i.cell_id - first.cell_id - 1) % 65535 + 1 for i in items]


def test_lost_packets_fault_exactly_the_damaged_frames(lock: None, tmp_path: Path) -> None:
    fake = FakeGigE(new_serial(), tmp_path / "fake.log", LOOPBACK, lost_per_thousand=3)
    fake.start()
    cfg = gv_cfg(fake.serial, frame_rate_hz=25, grab_timeout_ms=800)
    sink = Collector()
    try:
        with AcquisitionWorker(cfg, factory(cfg), sink) as worker:
            # 150 cells cross the fake's 16-bit block id wrap (it starts at 65401)
            assert sink.wait_for(lambda items: len(items) >= 150, timeout=60.0)
            worker.stop()
            assert worker.join(5.0)
            stats = worker.stats()
    finally:
        fake.stop()
    items = in_cell_order(sink.snapshot())
    ids, sent, damaged = frame_ids(items), fake.sent_frames(), fake.damaged_frames()
    assert ids == sent[sent.index(ids[0]) :][: len(ids)], "cell n is the n-th frame sent"
    assert 65535 in ids, "the run crossed the block id wrap"
    assert 1 in ids
    bad = host_lost = 0
    for item, frame_id in zip(items, ids, strict=True):
        if frame_id in damaged:
            bad += 1
            assert isinstance(item, FrameFault), f"cell {item.cell_id}: frame {frame_id} damaged"
            assert item.reason == "bad_frame"
            assert "buffer" in item.detail or "frame lost" in item.detail
        elif isinstance(item, FrameFault):
            # sent whole, lost on a host that other work keeps busy: still a bad frame
            assert item.reason == "bad_frame"
            host_lost += 1
        else:
            assert np.array_equal(item.image, ramp(frame_id, 512, 512))
    # a host that other work starves of CPU for longer than its stream buffers last loses
    # whole frames (each a bad frame, counted as underruns); the sender's losses still show
    assert bad > 10
    assert len(items) - bad - host_lost >= 20, (summary(items), stats)
    assert stats.stream is not None
    assert host_lost == 0 or stats.stream.underruns + stats.stream.missing_frames > 0
    bad += host_lost
    assert stats.bad_frames == bad
    assert stats.frames == len(items) - bad
    assert stats.stream is not None
    assert len(items) - bad <= stats.stream.completed <= len(items) - bad + 2
    # the sender's damaged frames came as failed buffers, unless a starved host had lost
    # them whole before (underruns)
    assert stats.stream.failures > 0
    assert stats.stream.missing_packets > 0


def test_a_camera_killed_mid_stream_faults_its_cells_and_recovers(
    lock: None, tmp_path: Path
) -> None:
    fake = FakeGigE(new_serial(), tmp_path / "fake.log", LOOPBACK)
    fake.start()
    trigger = {"mode": "software", "rate_hz": 10}
    cfg = gv_cfg(fake.serial, trigger=trigger, grab_timeout_ms=500, **fast_reconnect())
    sink = Collector()
    try:
        with AcquisitionWorker(cfg, factory(cfg), sink) as worker:
            assert sink.wait_for(count_frames(8), timeout=20.0), (worker.stats(), fake.log_tail())
            fake.kill()
            killed_at = len(sink.snapshot())
            assert sink.wait_for(
                lambda items: sum(getattr(i, "reason", "") == "camera_error" for i in items) >= 20,
                timeout=30.0,
            )
            assert worker.stats().state == "reconnecting"
            # the first reopen comes after the back-off (0.2 s) and one unanswered probe
            # (0.3 s), not after Aravis's own timeouts while it lets the lost device go
            # (several seconds, on another thread)
            lost_at, first_try_at = device_error_times(worker, 2)
            assert first_try_at - lost_at < 1.5
            fake.start()
            assert sink.wait_for(count_frames(16), timeout=30.0)
            worker.stop()
            assert worker.join(5.0)
            stats = worker.stats()
    finally:
        fake.stop()
    items = in_cell_order(sink.snapshot())
    # three runs of cells: frames, faults while the camera was away, frames again
    kinds = "".join(
        "F" if isinstance(i, Frame) else "E" if i.reason == "camera_error" else "x" for i in items
    )
    # frames (a loaded machine may add a timeout or an overload), the frame in flight when
    # the camera died, then camera errors, nothing else, until it is back, then frames again
    run = re.fullmatch(r"([^E]*)(E+)([^E]*)", kinds)
    assert run is not None, kinds
    head, _, tail = run.groups()
    assert head.count("F") >= 8, kinds
    assert len(head) <= killed_at + 1, kinds
    assert tail.count("F") >= 8, kinds
    reasons = [i.reason for i in items if isinstance(i, FrameFault)]
    assert set(reasons) <= {"camera_error", "bad_frame", "timeout", "overload"}
    # after the restart: the restarted camera's frames, pixel for pixel, on the next cells
    after = [i for i in items[len(kinds) - len(tail) :] if isinstance(i, Frame)]
    assert len(after) >= 8
    counters = [f.frame_counter for f in after]
    assert counters == sorted(set(counters))
    assert set(counters) <= set(fake.sent_frames(start=2))
    for f in after:
        assert np.array_equal(f.image, ramp(f.frame_counter, 512, 512))
    assert stats.reconnects >= 1
    assert stats.device_errors >= 1
    assert stats.camera_errors == reasons.count("camera_error")
    assert stats.stream is not None
    # both streams' counters, summed (a buffer or two may be complete but not yet taken)
    assert stats.frames <= stats.stream.completed <= stats.frames + 2


@pytest.mark.parametrize("same_serial", [True, False])
def test_a_restarted_camera_is_picked_up_again_only_with_its_serial(
    lock: None, tmp_path: Path, same_serial: bool
) -> None:
    serial = new_serial()
    fake = FakeGigE(serial, tmp_path / "fake.log", LOOPBACK)
    fake.start()
    cfg = gv_cfg(serial, frame_rate_hz=20, roi={"width": 128, "height": 64}, **fast_reconnect())
    sink = Collector()
    try:
        with AcquisitionWorker(cfg, factory(cfg), sink) as worker:
            assert sink.wait_for(count_frames(10), timeout=20.0)
            # a reboot: gone and back within the heartbeat timeout, having forgotten us
            fake.kill()
            before = len(sink.frames())
            if not same_serial:
                fake.serial = new_serial()
            fake.start()
            if same_serial:
                assert sink.wait_for(count_frames(before + 10), timeout=30.0)
            else:
                time.sleep(6.0)
            worker.stop()
            assert worker.join(5.0)
            stats = worker.stats()
    finally:
        fake.stop()
    frames = sink.frames()
    if same_serial:
        assert stats.reconnects >= 1
        after = frames[before:]
        assert [f.frame_counter for f in after] == fake.sent_frames(start=2)[-len(after) :]
        for f in after:
            assert np.array_equal(f.image, ramp(f.frame_counter, 64, 128))
        # free run: one frame is one cell, counted on across the reconnect
        ids = [i.cell_id for i in sink.snapshot()]
        assert ids == list(range(1, len(ids) + 1))
    else:
        # another camera answers at the address: it is refused, nothing is taken from it
        assert len(frames) <= before + 1
        assert stats.reconnects == 0
        assert stats.state == "stopped"
        assert stats.device_errors >= 2
