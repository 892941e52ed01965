"""Worker logic on the replay driver; thin wrappers stand in for a lossy or late transport."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path

import numpy as np

from linevision.cameras.base import CameraDriver, CameraError, RawGrab
from linevision.cameras.files import ReplayDriver
from linevision.cameras.worker import AcquisitionWorker
from linevision.config import ReplayCamera
from linevision.types import Frame, FrameFault
from tests.cameras.collect import Collector, Item, count_frames
from tests.cameras.imaging import ImageWriter


def replay(path: Path, **kw: object) -> ReplayCamera:
    return ReplayCamera.model_validate({"id": "rp", "backend": "replay", "path": path, **kw})


class LossyDriver:
    """A replay camera whose link loses the frames with the given counters."""

    def __init__(self, inner: ReplayDriver, lost: set[int]) -> None:
        self.inner, self.lost = inner, lost
        self.camera_id = inner.camera_id
        self.supports_software_trigger = True

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def trigger(self) -> bool:
        return self.inner.trigger()

    def grab(self, timeout_s: float) -> RawGrab | None:
        raw = self.inner.grab(timeout_s)
        if raw is not None and raw.frame_counter in self.lost:
            return None
        return raw


class LateDriver(LossyDriver):
    """A replay camera whose link delivers the frames with the given counters late."""

    def __init__(self, inner: ReplayDriver, late: set[int], delay_s: float) -> None:
        super().__init__(inner, set())
        self.late, self.delay_s = late, delay_s
        self.held: list[tuple[float, RawGrab]] = []

    def grab(self, timeout_s: float) -> RawGrab | None:
        now = time.monotonic()
        if self.held and self.held[0][0] <= now:
            return self.held.pop(0)[1]
        if self.held:
            timeout_s = min(timeout_s, self.held[0][0] - now)
        raw = self.inner.grab(max(timeout_s, 0.0))
        if raw is not None and raw.frame_counter in self.late:
            self.held.append((time.monotonic() + self.delay_s, raw))
            return None
        return raw


def by_cell(items: list[Item]) -> dict[int, Item]:
    return {i.cell_id: i for i in items}


def test_counter_jumps_fault_the_lost_cells(write_images: ImageWriter) -> None:
    folder, images = write_images(4)
    cfg = replay(folder, rate_hz=200, loop=False, grab_timeout_ms=200)
    sink = Collector()
    factory = lambda: LossyDriver(ReplayDriver(cfg), lost={1, 2, 5})  # noqa: E731
    with AcquisitionWorker(cfg, factory, sink) as worker:
        assert sink.wait_for(lambda items: len(items) >= 4, timeout=5.0)
    assert worker.join(1.0)
    items = sink.snapshot()
    assert [i.cell_id for i in items] == [1, 2, 3, 4]
    cells = by_cell(items)
    for cell in (2, 3):
        fault = cells[cell]
        assert isinstance(fault, FrameFault)
        assert fault.reason == "bad_frame"
        assert "jumped from 0 to 3" in fault.detail
    for frame in sink.frames():
        assert frame.frame_counter == frame.cell_id - 1
        assert np.array_equal(frame.image, images[frame.frame_counter % 4])


def test_software_trigger_without_frame_times_out(write_images: ImageWriter) -> None:
    folder, _ = write_images(2)
    cfg = replay(
        folder, loop=False, grab_timeout_ms=100, trigger={"mode": "software", "rate_hz": 20}
    )
    sink = Collector()
    with AcquisitionWorker(cfg, lambda: ReplayDriver(cfg), sink) as worker:
        assert sink.wait_for(lambda items: len(items) >= 5, timeout=5.0)
    assert worker.join(1.0)
    items = sink.snapshot()
    assert [i.cell_id for i in items][:5] == [1, 2, 3, 4, 5]
    assert [type(i) for i in items[:2]] == [Frame, Frame]
    assert all(isinstance(i, FrameFault) and i.reason == "timeout" for i in items[2:])
    assert worker.stats().timeouts == len(items) - 2


def test_late_frame_is_never_given_to_the_next_cell(write_images: ImageWriter) -> None:
    folder, images = write_images(4)
    cfg = replay(folder, grab_timeout_ms=150, trigger={"mode": "software", "rate_hz": 20})
    sink = Collector()
    factory = lambda: LateDriver(ReplayDriver(cfg), late={1}, delay_s=0.3)  # noqa: E731
    with AcquisitionWorker(cfg, factory, sink) as worker:
        assert sink.wait_for(count_frames(4), timeout=5.0)
        deadline = time.monotonic() + 2.0
        while worker.stats().late_frames == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sink.wait_for(count_frames(len(sink.frames()) + 2), timeout=5.0)
    assert worker.join(1.0)
    cells = by_cell(sink.snapshot())
    late = cells[2]
    assert isinstance(late, FrameFault)
    assert late.reason == "timeout"
    for frame in sink.frames():
        assert frame.frame_counter == frame.cell_id - 1
        assert np.array_equal(frame.image, images[(frame.cell_id - 1) % 4])
    assert [f.cell_id for f in sink.faults()] == [2]
    assert worker.stats().late_frames == 1


def test_unexpected_errors_reconnect(write_images: ImageWriter) -> None:
    folder, _ = write_images(3)
    cfg = replay(folder, rate_hz=100, reconnect_min_s=0.05, reconnect_max_s=0.1)
    calls: list[int] = []

    class Flaky(LossyDriver):
        def grab(self, timeout_s: float) -> RawGrab | None:
            raw = super().grab(timeout_s)
            if len(calls) == 2 and raw is not None and raw.frame_counter == 2:
                msg = "transport hiccup"
                raise ValueError(msg)
            return raw

    def factory() -> CameraDriver:
        calls.append(1)
        if len(calls) == 1:
            msg = "driver construction failed"
            raise RuntimeError(msg)
        return Flaky(ReplayDriver(cfg), set())

    sink = Collector()
    with AcquisitionWorker(cfg, factory, sink) as worker:
        assert sink.wait_for(count_frames(6), timeout=5.0)
        stats = worker.stats()
    assert worker.join(1.0)
    items = sink.snapshot()
    assert [i.cell_id for i in items] == list(range(1, len(items) + 1))
    assert all(isinstance(i, Frame) for i in items)
    assert [f.frame_counter for f in sink.frames()[:4]] == [0, 1, 0, 1]
    assert (stats.unexpected_errors, stats.device_errors, stats.reconnects) == (2, 2, 1)
    assert stats.state == "running"


def test_stop_while_reconnecting_is_prompt(tmp_path: Path) -> None:
    cfg = replay(tmp_path / "missing", reconnect_min_s=30, trigger={"mode": "software"})
    sink = Collector()
    worker = AcquisitionWorker(cfg, lambda: ReplayDriver(cfg), sink)
    worker.start()
    deadline = time.monotonic() + 2.0
    while worker.stats().device_errors == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stats().state == "reconnecting"
    t0 = time.monotonic()
    worker.stop()
    assert worker.join(1.0)
    assert time.monotonic() - t0 < 0.5
    assert sink.snapshot() == []
    assert worker.stats().state == "stopped"


def test_failing_sink_does_not_kill_the_worker(write_images: ImageWriter) -> None:
    folder, _ = write_images(2)
    cfg = replay(folder, rate_hz=200)

    def sink(item: Item) -> None:
        msg = f"queue closed for cell {item.cell_id}"
        raise CameraError(msg)

    with AcquisitionWorker(cfg, lambda: ReplayDriver(cfg), sink) as worker:
        deadline = time.monotonic() + 3.0
        while worker.stats().sink_errors < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.is_alive()
    assert worker.join(1.0)
    assert worker.stats().sink_errors >= 5


def test_shared_stop_event_stops_every_worker(write_images: ImageWriter) -> None:
    folder, _ = write_images(2)
    stop = threading.Event()
    workers = []
    for name in ("a", "b"):
        cfg = replay(folder, rate_hz=50).model_copy(update={"id": name})
        workers.append(AcquisitionWorker(cfg, partial(ReplayDriver, cfg), Collector(), stop))
    for worker in workers:
        worker.start()
    time.sleep(0.1)
    stop.set()
    assert all(worker.join(1.5) for worker in workers)
    assert [w.stats().state for w in workers] == ["stopped", "stopped"]
    assert all(w.snapshot()["state"] == "stopped" for w in workers)
    assert {k for k in workers[0].snapshot() if k != "state"} >= {"frames", "reconnects"}


def test_workers_on_one_epoch_trigger_together_and_agree_on_cell_ids(
    write_images: ImageWriter,
) -> None:
    folder, _ = write_images(4)
    cfg = replay(folder, rate_hz=1000, trigger={"mode": "software", "rate_hz": 10})
    epoch = time.monotonic() + 0.05
    first, second = Collector(), Collector()
    a = AcquisitionWorker(cfg, partial(ReplayDriver, cfg), first, epoch=epoch)
    b = AcquisitionWorker(cfg, partial(ReplayDriver, cfg), second, epoch=epoch)
    with a:
        time.sleep(0.35)
        with b:
            assert second.wait_for(count_frames(5), timeout=5.0)
    seen_a = {f.cell_id: f.t_mono_ns for f in first.frames()}
    seen_b = {f.cell_id: f.t_mono_ns for f in second.frames()}
    # the late camera starts at the grid's current slot, not at cell 1
    assert min(seen_a) == 1
    assert min(seen_b) >= 4
    common = sorted(set(seen_a) & set(seen_b))
    assert len(common) >= 4
    for cell in common:
        assert abs(seen_a[cell] - seen_b[cell]) < 30e6, cell
    for cell, t in seen_a.items():
        assert abs((t / 1e9 - epoch) - (cell - 1) * 0.1) < 0.03, cell


def test_trigger_offset_shifts_a_camera_along_the_grid(write_images: ImageWriter) -> None:
    folder, _ = write_images(4)
    base = {"mode": "software", "rate_hz": 10}
    first_cfg = replay(folder, rate_hz=1000, trigger=base)
    later_cfg = replay(folder, rate_hz=1000, trigger={**base, "offset_ms": 40})
    epoch = time.monotonic() + 0.05
    first, later = Collector(), Collector()
    with (
        AcquisitionWorker(first_cfg, partial(ReplayDriver, first_cfg), first, epoch=epoch),
        AcquisitionWorker(later_cfg, partial(ReplayDriver, later_cfg), later, epoch=epoch),
    ):
        assert later.wait_for(count_frames(4), timeout=5.0)
    seen = {f.cell_id: f.t_mono_ns for f in first.frames()}
    shifted = {f.cell_id: f.t_mono_ns for f in later.frames()}
    common = sorted(set(seen) & set(shifted))
    assert len(common) >= 3
    for cell in common:
        assert 0.025 < (shifted[cell] - seen[cell]) / 1e9 < 0.06, cell


def test_a_failed_open_is_counted_and_reported_in_one_step(tmp_path: Path, monkeypatch) -> None:
    """Whoever reads the stats sees a device error only together with the state it leads to
    (the stats are read at every log call the worker makes, between its steps)."""
    from linevision.cameras import worker as worker_module  # noqa: PLC0415

    seen: list[tuple[int, str]] = []
    real_log = worker_module.log

    class Watching:
        def __getattr__(self, name: str) -> object:
            method = getattr(real_log, name)

            def call(*args: object, **kw: object) -> object:
                stats = worker.stats()
                seen.append((stats.device_errors, stats.state))
                return method(*args, **kw)

            return call

    cfg = replay(tmp_path / "missing", reconnect_min_s=30, trigger={"mode": "software"})
    worker = AcquisitionWorker(cfg, lambda: ReplayDriver(cfg), Collector())
    monkeypatch.setattr(worker_module, "log", Watching())
    worker.start()
    deadline = time.monotonic() + 2.0
    while worker.stats().device_errors == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    assert worker.join(1.0)
    assert any(errors == 1 for errors, _ in seen)  # read after the failure too
    after = {state for errors, state in seen if errors > 0}
    assert after <= {"reconnecting", "stopped"}, after  # never "starting" with the error counted


class SlowLinkDriver(LossyDriver):
    """A replay camera whose every frame reaches the host ``delay_s`` after its trigger."""

    def __init__(self, inner: ReplayDriver, delay_s: float) -> None:
        super().__init__(inner, set())
        self.delay_s = delay_s
        self.triggered_ns: list[int] = []

    def trigger(self) -> bool:
        self.triggered_ns.append(time.monotonic_ns())
        return self.inner.trigger()

    def grab(self, timeout_s: float) -> RawGrab | None:
        raw = self.inner.grab(timeout_s)
        if raw is not None:
            time.sleep(self.delay_s)
        return raw


def test_a_triggered_frame_is_stamped_with_its_trigger_time(write_images: ImageWriter) -> None:
    folder, _ = write_images(3)
    cfg = replay(folder, grab_timeout_ms=500, trigger={"mode": "software", "rate_hz": 10})
    arrived: list[tuple[int, Frame]] = []

    def sink(item: Item) -> None:
        if isinstance(item, Frame):
            arrived.append((time.monotonic_ns(), item))

    drivers: list[SlowLinkDriver] = []

    def factory() -> CameraDriver:
        drivers.append(SlowLinkDriver(ReplayDriver(cfg), delay_s=0.03))
        return drivers[-1]

    with AcquisitionWorker(cfg, factory, sink) as worker:
        deadline = time.monotonic() + 5.0
        while len(arrived) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert worker.join(1.0)
    (driver,) = drivers
    assert len(arrived) >= 3
    for t_arrived, frame in arrived:
        triggered = driver.triggered_ns[frame.cell_id - 1]
        # the capture instant is the trigger (taken just before it), not the arrival
        assert 0 <= triggered - frame.t_mono_ns < 5_000_000
        assert t_arrived - frame.t_mono_ns >= 30_000_000
