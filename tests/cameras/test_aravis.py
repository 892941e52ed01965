"""The aravis driver against Aravis's real fake GigE Vision camera on loopback (GVCP + GVSP
through the kernel's UDP stack): pixels, ROI, exposure, formats, selection, triggers."""

from __future__ import annotations

import doctest
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from linevision.cameras import aravis, base, open_driver
from linevision.cameras.aravis import AravisDriver, read_user_id
from linevision.cameras.base import CameraError, RawGrab
from linevision.config import AravisCamera, ConfigError, parse_config
from tests.cameras.gige import FakeGigE, address_lock, jet, ramp

LOOPBACK = "127.0.0.1"
_serials = itertools.count()


def new_serial() -> str:
    return f"LV{os.getpid() % 10000:04d}{next(_serials):02d}"


def gv_cfg(serial: str | None = None, /, **kw: object) -> AravisCamera:
    data: dict[str, object] = {
        "id": "gige",
        "backend": "aravis",
        "address": LOOPBACK,
        "exposure_us": 10000,  # the fake's pattern scale: 1 + gain + log10(exposure / 10 ms)
        **kw,
    }
    if serial is not None:
        data["device"] = {"serial": serial}
    return AravisCamera.model_validate(data)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeGigE]:
    with address_lock(LOOPBACK):
        cam = FakeGigE(new_serial(), tmp_path / "fake.log", LOOPBACK)
        cam.start()
        try:
            yield cam
        finally:
            cam.stop()


def grab_triggered(driver: AravisDriver, n: int) -> list[RawGrab]:
    """``n`` whole frames, one trigger each. Aravis sizes the stream's socket buffer when the
    first frame arrives, so on a host that other work keeps busy the first frame may lose
    packets to the kernel's default buffer: a failed grab is skipped (at most 2n of them)."""
    out: list[RawGrab] = []
    for _ in range(n * 3):
        assert driver.trigger()
        raw = driver.grab(2.0)
        if raw is not None and raw.image is not None:
            out.append(raw)
        if len(out) == n:
            break
    return out


def test_doctests() -> None:
    for module in (aravis, base):
        failures, tests = doctest.testmod(module)
        assert tests > 0
        assert failures == 0


def test_triggered_frames_are_the_fake_pattern_pixel_for_pixel(fake: FakeGigE) -> None:
    roi = {"width": 320, "height": 240, "offset_x": 64, "offset_y": 32}
    driver = AravisDriver(gv_cfg(fake.serial, roi=roi, trigger={"mode": "software"}))
    driver.open()
    try:
        assert driver.device is not None
        assert (driver.device.vendor, driver.device.model) == ("Aravis", "Fake")
        assert driver.device.serial == fake.serial
        assert driver.supports_software_trigger
        assert driver._camera.get_region() == (64, 32, 320, 240)
        grabs = grab_triggered(driver, 4)
        assert driver.grab(0.3) is None  # no trigger, no frame
        stats = driver.stream_stats()
    finally:
        driver.close()
    assert len(grabs) == 4
    counters = [g.frame_counter for g in grabs]
    assert counters == sorted(set(counters))
    for g in grabs:
        assert g.image is not None
        assert g.image.shape == (240, 320)
        assert np.array_equal(g.image, ramp(g.frame_counter, 240, 320))
        assert not g.image.flags.writeable  # the frame owns a copy nobody may change
    assert stats.completed == 4
    # the frames are the ones the fake says it sent
    assert set(counters) <= set(fake.sent_frames())


def test_exposure_scales_the_pattern(fake: FakeGigE) -> None:
    roi = {"width": 256, "height": 64}
    cfg = gv_cfg(fake.serial, roi=roi, exposure_us=20000, trigger={"mode": "software"})
    driver = AravisDriver(cfg)
    driver.open()
    try:
        (g,) = grab_triggered(driver, 1)
    finally:
        driver.close()
    assert g.image is not None
    assert np.array_equal(g.image, ramp(g.frame_counter, 64, 256, 1 + np.log10(2.0)))
    assert not np.array_equal(g.image, ramp(g.frame_counter, 64, 256))


@pytest.mark.parametrize("fmt", ["RGB8", "BGR8"])
def test_colour_frames_are_the_jet_ramp(fake: FakeGigE, fmt: str) -> None:
    cfg = gv_cfg(fake.serial, pixel_format=fmt, roi={"width": 300, "height": 20})
    driver = AravisDriver(cfg.model_copy(update={"trigger": cfg.trigger.model_copy()}))
    driver.open()
    try:
        grabs = [g for g in (driver.grab(2.0) for _ in range(4)) if g and g.image is not None]
    finally:
        driver.close()
    assert grabs
    for g in grabs:
        assert g.image is not None
        rgb = jet(ramp(g.frame_counter, 20, 300))
        assert np.array_equal(g.image, rgb if fmt == "RGB8" else rgb[..., ::-1])


def test_free_run_at_the_configured_rate(fake: FakeGigE) -> None:
    driver = AravisDriver(gv_cfg(fake.serial, frame_rate_hz=100, roi={"width": 64, "height": 64}))
    driver.open()
    stamps: list[tuple[int, int]] = []  # (frame counter, the camera's timestamp)
    got: list[RawGrab] = []
    try:
        for _ in range(40):
            g = driver.grab(2.0)
            if g is not None and g.image is not None:
                got.append(g)
                stamps.append((g.frame_counter, driver.last_timestamps[0]))
    finally:
        driver.close()
    assert len(got) >= 30
    for g in got:
        assert g.image is not None
        assert np.array_equal(g.image, ramp(g.frame_counter, 64, 64))
    # on the camera's own clock: 10 ms a frame, where the default is 40 ms (25 fps); a fake
    # camera that other work holds up comes later, never sooner
    (c0, t0), (c1, t1) = stamps[0], stamps[-1]
    assert 9.5 < (t1 - t0) / (c1 - c0) / 1e6 < 25.0


def test_a_wrong_serial_or_user_id_at_the_address_is_refused(fake: FakeGigE) -> None:
    with pytest.raises(CameraError, match=rf"has serial '{fake.serial}', not 'OTHER1'"):
        AravisDriver(gv_cfg("OTHER1")).open()
    # name the device as a line engineer would (the GigE Vision user-defined name)
    driver = AravisDriver(gv_cfg(fake.serial))
    driver.open()
    try:
        device = driver._camera.get_device()
        name = b"PP-EDGE-1".ljust(16, b"\0")
        for k in range(4):
            device.write_register(0xE8 + 4 * k, int.from_bytes(name[4 * k : 4 * k + 4], "big"))
        del device  # a reference to the device keeps its control channel open
        assert read_user_id(driver._camera) == "PP-EDGE-1"
    finally:
        driver.close()
    by_name = AravisDriver(gv_cfg(None, device={"user_id": "PP-EDGE-1"}))
    by_name.open()
    try:
        assert by_name.device is not None
        assert (by_name.device.serial, by_name.device.user_id) == (fake.serial, "PP-EDGE-1")
    finally:
        by_name.close()
    with pytest.raises(CameraError, match=r"has user id 'PP-EDGE-1', not 'PP-EDGE-2'"):
        AravisDriver(gv_cfg(None, device={"user_id": "PP-EDGE-2"})).open()


def test_a_trigger_source_the_device_lacks_is_named(fake: FakeGigE) -> None:
    cfg = gv_cfg(fake.serial, trigger={"mode": "hardware", "source": "Line1"})
    with pytest.raises(CameraError, match=r"'Line1' not offered \(device offers: Line0, Software"):
        AravisDriver(cfg).open()
    hardware = AravisDriver(gv_cfg(fake.serial, trigger={"mode": "hardware", "source": "Line0"}))
    hardware.open()
    try:
        assert hardware.grab(0.5) is None  # armed on Line0: nothing without a pulse
    finally:
        hardware.close()


def test_no_camera_at_the_address_fails_fast() -> None:
    # 127.0.0.2 is loopback too, and no fake listens there
    t0 = time.monotonic()
    with pytest.raises(CameraError, match=r"no GigE Vision device answers at 127\.0\.0\.2"):
        open_driver(gv_cfg(None, address="127.0.0.2")).open()
    assert time.monotonic() - t0 < 2.0  # Aravis alone would wait 2.5 s


def test_packet_size_is_set_on_the_device(fake: FakeGigE) -> None:
    driver = AravisDriver(gv_cfg(fake.serial, packet_size=4000, trigger={"mode": "software"}))
    driver.open()
    try:
        assert driver._camera.gv_get_packet_size() == 4000
        (g,) = grab_triggered(driver, 1)
        stats = driver.stream_stats()
    finally:
        driver.close()
    assert g.image is not None
    assert np.array_equal(g.image, ramp(g.frame_counter, 512, 512))
    assert stats.completed == 1  # the whole frame; a first one may have lost packets


@pytest.mark.parametrize(
    ("camera", "message"),
    [
        ({"address": "cam-1.local"}, "cameras.0.aravis.address: Input is not a valid IPv4 address"),
        ({"address": "255.255.255.255"}, "255.255.255.255 is not a camera's address"),
        ({"address": "239.1.1.1"}, "239.1.1.1 is not a camera's address"),
        ({"packet_size": 100}, "cameras.0.aravis.packet_size: Input should be greater than"),
        ({"frame_rate_hz": 5, "trigger": {"mode": "software"}}, "use trigger.rate_hz"),
        ({"buffers": 1}, "cameras.0.aravis.buffers: Input should be greater than or equal to 2"),
        ({"device": {"serial": "a", "user_id": "b"}}, "give either serial or user_id"),
    ],
)
def test_config_errors_name_the_field(camera: dict[str, object], message: str) -> None:
    fields = ", ".join(f"{k}: {v!r}" for k, v in camera.items())
    text = (
        "cameras:\n"
        f"  - {{id: gige, backend: aravis, {fields}}}\n"
        "stations:\n"
        "  - {name: pp, type: pole_piece, cameras: [gige], model: pole_piece}\n"
    ).replace("'", '"')
    with pytest.raises(ConfigError, match="invalid configuration") as info:
        parse_config(text, "line.yaml")
    assert message in str(info.value)
    assert "line.yaml" in str(info.value)


def test_a_failed_trigger_leaves_the_lost_device_to_close(fake: FakeGigE) -> None:
    """The exception of a trigger to a dead camera holds no reference to the device: its
    last reference goes with ``close()`` to a release thread, so Aravis's timeouts while it
    lets the device go (stop, release control: seconds) never hold up acquisition."""
    driver = AravisDriver(gv_cfg(fake.serial, trigger={"mode": "software"}))
    driver.open()
    assert grab_triggered(driver, 1)
    camera_type = type(driver._camera)
    fake.kill()
    with pytest.raises(CameraError, match="software trigger failed") as info:
        driver.trigger()
    held = []
    for exc in (info.value, info.value.__cause__):
        assert exc is not None
        tb = exc.__traceback__
        while tb is not None:
            held += [k for k, v in tb.tb_frame.f_locals.items() if isinstance(v, camera_type)]
            tb = tb.tb_next
    assert held == []
    t0 = time.monotonic()
    driver.close()
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(CameraError, match="not open"):
        driver.grab(0.1)


class _Status:
    def __init__(self, nick: str) -> None:
        self.value_nick = nick


class _FailedBuffer:
    """A failed Aravis buffer as the stream hands it out. Only a fault stands in for it: the
    fake camera drops a frame's leader packet at random, never on request."""

    def __init__(self, frame_id: int) -> None:
        self.frame_id = frame_id

    def get_frame_id(self) -> int:
        return self.frame_id

    def get_status(self) -> _Status:
        return _Status("missing-packets")

    def get_timestamp(self) -> int:
        return 0

    def get_system_timestamp(self) -> int:
        return 0


class _Stream:
    def get_info_uint64_by_name(self, name: str) -> int:
        return 0


def test_a_buffer_without_a_block_id_is_no_frame() -> None:
    """A frame whose leader was lost keeps its buffer's old id, 0 on the buffer's first use.
    Block id 0 must not read as a jump to 65535 (which would fault 131 cells at once and then
    drop every real frame as stale): it is skipped, and the next frame shows the gap."""
    driver = AravisDriver(gv_cfg())
    driver._camera, driver._stream = object(), _Stream()
    first = driver._read(_FailedBuffer(65404))
    assert first is not None
    assert first.frame_counter == 65404
    assert driver._read(_FailedBuffer(0)) is None
    after = driver._read(_FailedBuffer(65406))
    assert after is not None
    assert after.frame_counter == 65406, "the lost frame 65405 shows as a gap of one"
    driver._camera = driver._stream = None
