"""harvesters driver against the viky.cti GenTL producer shipped in the genicam wheel."""

from __future__ import annotations

import time
from pathlib import Path

import genicam
import numpy as np
import pytest

from linevision.cameras import open_driver
from linevision.cameras.base import CameraError
from linevision.cameras.discovery import list_devices
from linevision.cameras.genicam import HarvestersDriver, enumerate_devices
from linevision.cameras.worker import AcquisitionWorker
from linevision.config import HarvestersCamera
from tests.cameras.collect import Collector, count_frames

VIKY = Path(genicam.__file__).parent / "viky.cti"


def viky(serial: str = "0", **kw: object) -> HarvestersCamera:
    data: dict[str, object] = {
        "id": "viky",
        "backend": "harvesters",
        "cti": VIKY,
        "device": {"serial": serial},
        "roi": {"width": 320, "height": 240},
        "frame_rate_hz": 100.0,
        **kw,
    }
    return HarvestersCamera.model_validate(data)


def test_enumerate_three_devices() -> None:
    devices = enumerate_devices(VIKY)
    assert [d.serial for d in devices] == ["0", "1", "2"]
    assert all(d.backend == "harvesters" and d.model == "Viky" for d in devices)
    listed = list_devices(VIKY)
    assert [d.serial for d in listed if d.backend == "harvesters"] == ["0", "1", "2"]


def test_missing_producer_lists_nothing(tmp_path: Path) -> None:
    assert enumerate_devices(tmp_path / "absent.cti") == []


@pytest.mark.parametrize(("fmt", "shape"), [("Mono8", (240, 320)), ("RGB8", (240, 320, 3))])
def test_grab_shape_and_rising_counters(fmt: str, shape: tuple[int, ...]) -> None:
    driver = open_driver(viky(pixel_format=fmt))
    assert isinstance(driver, HarvestersDriver)
    driver.open()
    try:
        grabs = [driver.grab(1.0) for _ in range(5)]
    finally:
        driver.close()
    counters = []
    for grab in grabs:
        assert grab is not None
        assert grab.image is not None
        assert grab.image.shape == shape
        assert grab.image.dtype == np.uint8
        assert grab.image.flags.owndata
        counters.append(grab.frame_counter)
    assert counters == sorted(set(counters))
    assert any(int(g.image.max()) > 0 for g in grabs if g is not None and g.image is not None)


def test_fetch_timeout_returns_none() -> None:
    driver = HarvestersDriver(viky(frame_rate_hz=2.0))
    driver.open()
    try:
        assert driver.grab(2.0) is not None
        t0 = time.monotonic()
        assert driver.grab(0.2) is None
        assert 0.15 < time.monotonic() - t0 < 0.6
    finally:
        driver.close()


def test_software_trigger_is_unsupported() -> None:
    driver = HarvestersDriver(viky(trigger={"mode": "software"}))
    with pytest.raises(CameraError, match=r"'viky'.*trigger mode 'software'.*TriggerMode"):
        driver.open()
    assert not driver.supports_software_trigger
    driver.close()
    free = HarvestersDriver(viky())
    free.open()
    try:
        assert not free.supports_software_trigger
        with pytest.raises(CameraError, match="no software trigger"):
            free.trigger()
    finally:
        free.close()


def test_unknown_serial_is_a_camera_error() -> None:
    driver = HarvestersDriver(viky("7"))
    with pytest.raises(CameraError, match=r"'viky'.*serial_number"):
        driver.open()
    driver.close()


def test_two_devices_of_one_producer_at_once() -> None:
    first, second = HarvestersDriver(viky("1")), HarvestersDriver(viky("2", roi=None))
    first.open()
    try:
        second.open()
        try:
            a, b = first.grab(1.0), second.grab(1.0)
        finally:
            second.close()
        assert first.grab(1.0) is not None
    finally:
        first.close()
    assert a is not None
    assert a.image is not None
    assert b is not None
    assert b.image is not None
    assert a.image.shape == (240, 320)
    assert b.image.shape != a.image.shape


def test_worker_free_run_cell_ids() -> None:
    cfg = viky(frame_rate_hz=50.0)
    sink = Collector()
    with AcquisitionWorker(cfg, lambda: HarvestersDriver(cfg), sink) as worker:
        assert sink.wait_for(count_frames(5), timeout=5.0)
    assert worker.join(2.0)
    frames = sink.frames()
    assert sink.faults() == []
    assert [f.cell_id for f in sink.snapshot()] == list(range(1, len(sink.snapshot()) + 1))
    assert all(f.image.shape == (240, 320) for f in frames)
    assert [f.frame_counter for f in frames] == sorted({f.frame_counter for f in frames})


def test_worker_with_unsupported_trigger_keeps_retrying_and_stops() -> None:
    cfg = viky(trigger={"mode": "software"}, reconnect_min_s=0.05, reconnect_max_s=0.1)
    sink = Collector()
    worker = AcquisitionWorker(cfg, lambda: HarvestersDriver(cfg), sink)
    worker.start()
    try:
        deadline = time.monotonic() + 3.0
        while worker.stats().device_errors < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.stats().state == "reconnecting"
    finally:
        worker.stop()
        assert worker.join(1.5)
    assert worker.stats().device_errors >= 2
    assert sink.snapshot() == []
