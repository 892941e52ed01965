"""pypylon driver and worker against the pylon Camera Emulation (PYLON_CAMEMU, see conftest)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from linevision.cameras import open_driver
from linevision.cameras.base import CameraError
from linevision.cameras.discovery import list_devices
from linevision.cameras.pylon import PylonDriver, enumerate_devices
from linevision.cameras.worker import AcquisitionWorker
from linevision.config import PylonCamera
from linevision.types import Frame, FrameFault
from tests.cameras.collect import Collector, count_frames
from tests.cameras.imaging import ImageWriter


def pylon_cfg(serial: str = "0815-0000", /, **kw: object) -> PylonCamera:
    data: dict[str, object] = {
        "id": "emu",
        "backend": "pylon",
        "device": {"serial": serial},
        "max_buffers": 4,
        **kw,
    }
    return PylonCamera.model_validate(data)


def emulation(folder: Path, period_us: float = 10000.0) -> dict[str, object]:
    return {"image_path": folder, "frame_period_us": period_us}


def software(rate_hz: float) -> dict[str, object]:
    return {"mode": "software", "rate_hz": rate_hz}


def test_enumerate_emulated_devices() -> None:
    devices = enumerate_devices()
    assert [d.serial for d in devices] == [f"0815-000{k}" for k in range(4)]
    assert all(d.backend == "pylon" and d.vendor == "Basler" for d in devices)
    assert [d.serial for d in list_devices(None)] == [d.serial for d in devices]


def test_select_by_serial() -> None:
    driver = PylonDriver(pylon_cfg("0815-0001"))
    driver.open()
    try:
        assert driver.device is not None
        assert driver.device.serial == "0815-0001"
        assert driver.grab(1.0) is not None
    finally:
        driver.close()
    assert driver.device is None
    driver.close()


@pytest.mark.parametrize(
    ("device", "match"),
    [({"serial": "0815-0099"}, "serial '0815-0099'"), ({"user_id": "left"}, "user id 'left'")],
)
def test_unknown_device_is_a_camera_error(device: dict[str, str], match: str) -> None:
    cfg = PylonCamera.model_validate({"id": "emu", "backend": "pylon", "device": device})
    driver = PylonDriver(cfg)
    with pytest.raises(CameraError, match=match) as info:
        driver.open()
    assert "'emu'" in str(info.value)
    driver.close()


@pytest.mark.parametrize(("fmt", "channels"), [("Mono8", 1), ("BGR8", 3)])
def test_file_mode_serves_images_pixel_exact_in_name_order(
    write_images: ImageWriter, fmt: str, channels: int
) -> None:
    folder, images = write_images(5, channels=channels)
    cfg = pylon_cfg("0815-0002", pixel_format=fmt, emulation=emulation(folder, 2000))
    driver = open_driver(cfg)
    driver.open()
    try:
        grabs = [driver.grab(1.0) for _ in range(7)]
    finally:
        driver.close()
    for k, grab in enumerate(grabs):
        assert grab is not None
        assert grab.frame_counter == k
        assert grab.image is not None
        assert grab.image.flags.owndata
        assert np.array_equal(grab.image, images[k % 5])


def test_large_frame_4000x18000() -> None:
    cfg = pylon_cfg("0815-0003", roi={"width": 4000, "height": 18000}, max_buffers=2)
    driver = PylonDriver(cfg)
    driver.open()
    try:
        grab = driver.grab(5.0)
    finally:
        driver.close()
    assert grab is not None
    assert grab.image is not None
    assert grab.image.shape == (18000, 4000)
    assert grab.image.dtype == np.uint8
    assert grab.image.flags.owndata


def test_software_trigger_one_frame_per_trigger(write_images: ImageWriter) -> None:
    folder, images = write_images(3)
    cfg = pylon_cfg(emulation=emulation(folder), trigger=software(25))
    sink = Collector()
    worker = AcquisitionWorker(cfg, lambda: PylonDriver(cfg), sink)
    with worker:
        assert sink.wait_for(count_frames(8), timeout=10.0)
    assert worker.join(2.0)
    items = sink.snapshot()
    assert all(isinstance(i, Frame) for i in items), [i for i in items if isinstance(i, FrameFault)]
    assert [i.cell_id for i in items] == list(range(1, len(items) + 1))
    for frame in sink.frames():
        assert frame.frame_counter == frame.cell_id - 1
        assert np.array_equal(frame.image, images[(frame.cell_id - 1) % 3])
    stats = worker.stats()
    assert stats.state == "stopped"
    assert stats.frames == len(items)
    assert stats.triggers == len(items)


def test_trigger_mode_without_triggers_stays_responsive() -> None:
    cfg = pylon_cfg(trigger={"mode": "hardware", "source": "Line1"}, grab_timeout_ms=300)
    driver = PylonDriver(cfg)
    driver.open()
    try:
        t0 = time.monotonic()
        assert driver.grab(0.2) is None
        assert 0.15 < time.monotonic() - t0 < 0.6
    finally:
        driver.close()
    sink = Collector()
    worker = AcquisitionWorker(cfg, lambda: PylonDriver(cfg), sink)
    worker.start()
    try:
        deadline = time.monotonic() + 5.0
        while worker.stats().state != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.4)
        assert worker.stats().state == "running"
    finally:
        t0 = time.monotonic()
        worker.stop()
        assert worker.join(1.5)
    assert time.monotonic() - t0 < 0.3 + 0.5
    assert sink.snapshot() == []
    assert worker.stats().state == "stopped"


def test_failed_buffers_become_bad_frames(write_images: ImageWriter) -> None:
    folder, images = write_images(4)
    cfg = pylon_cfg(emulation=emulation(folder), trigger=software(25))
    drivers: list[PylonDriver] = []

    def factory() -> PylonDriver:
        drivers.append(PylonDriver(cfg))
        return drivers[-1]

    sink = Collector()
    worker = AcquisitionWorker(cfg, factory, sink)
    with worker:
        assert sink.wait_for(count_frames(3), timeout=10.0)
        drivers[0].force_failed_buffers(2)
        assert sink.wait_for(
            lambda items: (
                len(items) >= 3
                and all(isinstance(i, Frame) for i in items[-3:])
                and any(isinstance(i, FrameFault) for i in items)
            ),
            timeout=10.0,
        )
    assert worker.join(2.0)
    items = sink.snapshot()
    assert [i.cell_id for i in items] == list(range(1, len(items) + 1))
    faults = sink.faults()
    assert [f.reason for f in faults] == ["bad_frame", "bad_frame"]
    assert faults[1].cell_id == faults[0].cell_id + 1
    assert "incompletely grabbed" in faults[0].detail
    for frame in sink.frames():
        assert np.array_equal(frame.image, images[(frame.cell_id - 1) % 4])
    stats = worker.stats()
    assert (stats.bad_frames, stats.frames) == (2, len(items) - 2)
    assert len(drivers) == 1


def test_failed_buffers_in_free_run(write_images: ImageWriter) -> None:
    folder, _ = write_images(2)
    cfg = pylon_cfg(emulation=emulation(folder, 20000))
    drivers: list[PylonDriver] = []

    def factory() -> PylonDriver:
        drivers.append(PylonDriver(cfg))
        return drivers[-1]

    sink = Collector()
    with AcquisitionWorker(cfg, factory, sink) as worker:
        assert sink.wait_for(count_frames(2), timeout=10.0)
        drivers[0].force_failed_buffers(3)
        assert sink.wait_for(
            lambda items: (
                sum(isinstance(i, FrameFault) for i in items) >= 3 and isinstance(items[-1], Frame)
            ),
            timeout=10.0,
        )
    assert worker.join(2.0)
    items = sink.snapshot()
    assert [i.cell_id for i in items] == list(range(1, len(items) + 1))
    assert [f.reason for f in sink.faults()] == ["bad_frame"] * 3
    assert all(frame.frame_counter == frame.cell_id - 1 for frame in sink.frames())


def test_device_loss_reconnects_with_backoff(write_images: ImageWriter) -> None:
    folder, images = write_images(3)
    extra = {"emulation": emulation(folder), "trigger": software(20), "grab_timeout_ms": 300}
    cfg = pylon_cfg(reconnect_min_s=0.2, reconnect_max_s=0.8, **extra)
    absent = pylon_cfg("0815-0099", **extra)
    drivers: list[PylonDriver] = []
    opened_at: list[float] = []

    def factory() -> PylonDriver:
        opened_at.append(time.monotonic())
        attempt = len(opened_at)
        drivers.append(PylonDriver(absent if attempt in (2, 3) else cfg))
        return drivers[-1]

    sink = Collector()
    worker = AcquisitionWorker(cfg, factory, sink)
    with worker:
        assert sink.wait_for(count_frames(4), timeout=10.0)
        frames_before = len(sink.frames())
        drivers[0].emulate_device_removal()
        assert sink.wait_for(
            lambda items: (
                any(isinstance(i, FrameFault) for i in items)
                and sum(isinstance(i, Frame) for i in items) >= frames_before + 4
            ),
            timeout=10.0,
        )
        stats = worker.stats()
    assert worker.join(2.0)
    items = sink.snapshot()
    ids = [i.cell_id for i in items]
    assert sorted(ids) == list(range(1, len(ids) + 1))
    faults = sink.faults()
    assert faults
    assert {f.reason for f in faults} == {"camera_error"}
    fault_ids = [f.cell_id for f in faults]
    assert fault_ids == list(range(fault_ids[0], fault_ids[-1] + 1))
    frames = sink.frames()
    assert all(f.cell_id < fault_ids[0] or f.cell_id > fault_ids[-1] for f in frames)
    assert any(f.cell_id > fault_ids[-1] for f in frames)
    for frame in frames:
        assert np.array_equal(frame.image, images[int(frame.image[0, 0])])
    assert len(opened_at) == 4
    gaps = [b - a for a, b in itertools.pairwise(opened_at[1:])]
    assert gaps[0] >= 0.35  # the second failure waits twice reconnect_min_s
    assert gaps[1] >= 0.75  # then reconnect_max_s
    assert len(faults) >= 20 * 1.3 * 0.8  # ~20 Hz of cells during ~1.4 s down
    assert stats.state == "running"
    assert (stats.reconnects, stats.device_errors) == (1, 3)
    assert stats.camera_errors == len(faults)


def test_trigger_overrun_faults_the_cell_and_keeps_matching(write_images: ImageWriter) -> None:
    folder, images = write_images(3)
    cfg = pylon_cfg(emulation=emulation(folder, 100_000), trigger=software(25))
    sink = Collector()
    with AcquisitionWorker(cfg, lambda: PylonDriver(cfg), sink) as worker:
        assert sink.wait_for(count_frames(4), timeout=10.0)
    assert worker.join(2.0)
    items = sink.snapshot()
    assert sorted(i.cell_id for i in items) == list(range(1, len(items) + 1))
    faults = sink.faults()
    assert faults
    assert {f.reason for f in faults} == {"overload"}
    for k, frame in enumerate(sink.frames()):
        assert frame.frame_counter == k
        assert np.array_equal(frame.image, images[k % 3])
    assert worker.stats().trigger_overruns == len(faults)


def test_unknown_trigger_line_is_a_camera_error() -> None:
    driver = PylonDriver(pylon_cfg(trigger={"mode": "hardware", "source": "Line9"}))
    with pytest.raises(CameraError, match="TriggerSource"):
        driver.open()
    driver.close()
