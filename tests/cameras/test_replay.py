from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from linevision.cameras import open_driver
from linevision.cameras.base import CameraError
from linevision.cameras.files import ReplayDriver
from linevision.cameras.worker import AcquisitionWorker
from linevision.config import ReplayCamera, Roi, Trigger
from linevision.types import Frame, FrameFault
from tests.cameras.collect import Collector
from tests.cameras.imaging import ImageWriter


def replay(path: Path, **kw: object) -> ReplayCamera:
    return ReplayCamera.model_validate({"id": "rp", "backend": "replay", "path": path, **kw})


def test_name_order_pixel_exact_and_looping(write_images: ImageWriter) -> None:
    folder, images = write_images(4)
    driver = open_driver(replay(folder, rate_hz=1000))
    assert isinstance(driver, ReplayDriver)
    driver.open()
    try:
        grabs = [driver.grab(1.0) for _ in range(10)]
    finally:
        driver.close()
    assert all(g is not None for g in grabs)
    assert [g.frame_counter for g in grabs if g] == list(range(10))
    for k, g in enumerate(grabs):
        assert g is not None
        assert g.image is not None
        assert np.array_equal(g.image, images[k % 4])


def test_no_loop_ends_with_none(write_images: ImageWriter) -> None:
    folder, _ = write_images(2)
    driver = ReplayDriver(replay(folder, rate_hz=1000, loop=False))
    driver.open()
    try:
        assert driver.grab(1.0) is not None
        assert driver.grab(1.0) is not None
        t0 = time.monotonic()
        assert driver.grab(0.1) is None
        assert driver.grab(0.1) is None
        assert 0.15 < time.monotonic() - t0 < 1.0
    finally:
        driver.close()


def test_pacing_follows_rate(write_images: ImageWriter) -> None:
    folder, _ = write_images(3)
    driver = ReplayDriver(replay(folder, rate_hz=50))
    driver.open()
    try:
        t0 = time.monotonic()
        for _ in range(11):
            assert driver.grab(1.0) is not None
        elapsed = time.monotonic() - t0
    finally:
        driver.close()
    assert 0.15 < elapsed < 0.6  # 10 periods of 20 ms after the first frame


def test_grab_waits_at_most_the_timeout(write_images: ImageWriter) -> None:
    folder, _ = write_images(2)
    driver = ReplayDriver(replay(folder, rate_hz=1))
    driver.open()
    try:
        assert driver.grab(0.5) is not None
        t0 = time.monotonic()
        assert driver.grab(0.1) is None
        assert time.monotonic() - t0 < 0.5
    finally:
        driver.close()


def test_software_trigger_releases_one_frame(write_images: ImageWriter) -> None:
    folder, images = write_images(3)
    driver = ReplayDriver(replay(folder, trigger=Trigger(mode="software")))
    driver.open()
    try:
        assert driver.grab(0.05) is None
        assert driver.trigger()
        t0 = time.monotonic()
        grab = driver.grab(1.0)
        assert time.monotonic() - t0 < 0.2
        assert grab is not None
        assert grab.image is not None
        assert np.array_equal(grab.image, images[0])
        assert driver.grab(0.05) is None
    finally:
        driver.close()


@pytest.mark.parametrize(
    ("fmt", "convert"),
    [("Mono8", None), ("BGR8", None), ("RGB8", cv2.COLOR_BGR2RGB)],
)
def test_pixel_formats_and_roi(write_images: ImageWriter, fmt: str, convert: int | None) -> None:
    folder, images = write_images(1, width=40, height=30, channels=1 if fmt == "Mono8" else 3)
    roi = Roi(width=20, height=10, offset_x=5, offset_y=3)
    driver = ReplayDriver(replay(folder, pixel_format=fmt, roi=roi))
    driver.open()
    try:
        grab = driver.grab(1.0)
    finally:
        driver.close()
    assert grab is not None
    assert grab.image is not None
    expected = images[0] if convert is None else cv2.cvtColor(images[0], convert)
    assert np.array_equal(grab.image, expected[3:13, 5:25])
    assert grab.image.flags.c_contiguous


def test_missing_folder_is_a_camera_error(tmp_path: Path) -> None:
    driver = ReplayDriver(replay(tmp_path / "nothing"))
    with pytest.raises(CameraError, match=r"'rp'.*no image files"):
        driver.open()
    driver.close()
    driver.close()


def test_corrupt_file_becomes_bad_frame_through_the_worker(write_images: ImageWriter) -> None:
    folder, images = write_images(5)
    (folder / "img_0002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    cfg = replay(folder, rate_hz=100, loop=False, grab_timeout_ms=100)
    sink = Collector()
    worker = AcquisitionWorker(cfg, lambda: ReplayDriver(cfg), sink)
    with worker:
        assert sink.wait_for(lambda items: len(items) >= 5, timeout=5.0)
    assert worker.join(1.0)
    items = sink.snapshot()
    assert [i.cell_id for i in items] == [1, 2, 3, 4, 5]
    bad = items[2]
    assert isinstance(bad, FrameFault)
    assert bad.reason == "bad_frame"
    assert "img_0002.png" in bad.detail
    for k in (0, 1, 3, 4):
        frame = items[k]
        assert isinstance(frame, Frame)
        assert frame.camera_id == "rp"
        assert frame.frame_counter == k
        assert np.array_equal(frame.image, images[k])
    stats = worker.stats()
    assert (stats.frames, stats.bad_frames, stats.state) == (4, 1, "stopped")
