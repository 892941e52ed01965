"""Line-scan strips from the pylon Camera Emulation: strips -> (cell, part), pacing, faults."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from linevision.cameras.pylon import PylonDriver
from linevision.cameras.worker import AcquisitionWorker
from linevision.config import PylonCamera
from linevision.types import Frame
from tests.cameras.collect import Collector

WIDTH, LINES, STRIPS = 640, 64, 4


def _strip_files(folder: Path, cells: int) -> list[np.ndarray]:
    """``cells`` frames of STRIPS strips each, one BMP per strip, in name order."""
    folder.mkdir()
    strips = []
    for c in range(cells):
        for s in range(STRIPS):
            img = np.full((LINES, WIDTH, 3), (200, 60, 20), np.uint8)
            img[:, : 10 * (c + 1)] = (s * 40, c * 50, 255)
            assert cv2.imwrite(str(folder / f"{c:02d}_{s:02d}.bmp"), img)
            strips.append(img)
    return strips


def _cfg(folder: Path, rate_hz: float = 8.0, line_rate: float = 6400.0) -> PylonCamera:
    return PylonCamera.model_validate(
        {
            "id": "film",
            "backend": "pylon",
            "device": {"serial": "0815-0002"},
            "pixel_format": "BGR8",
            "roi": {"width": WIDTH, "height": LINES},
            "trigger": {"mode": "software", "rate_hz": rate_hz},
            "line_scan": {"strips_per_cell": STRIPS, "line_rate_hz": line_rate},
            "grab_timeout_ms": 500,
            "max_buffers": 4,
            "emulation": {"image_path": str(folder), "frame_period_us": 500},
        }
    )


def test_strips_become_the_parts_of_cells_in_order(tmp_path: Path) -> None:
    strips = _strip_files(tmp_path / "strips", 2)
    cfg = _cfg(tmp_path / "strips")
    sink = Collector()
    with AcquisitionWorker(cfg, lambda: PylonDriver(cfg), sink):
        assert sink.wait_for(lambda items: len(items) >= 3 * STRIPS, timeout=10.0)
    frames = sink.frames()
    assert sink.faults() == []
    assert [(f.cell_id, f.part) for f in frames[: 3 * STRIPS]] == [
        (c, p) for c in (1, 2, 3) for p in range(STRIPS)
    ]
    for i, f in enumerate(frames):
        assert f.parts == STRIPS
        assert f.view_key == f"film#{f.part}"
        np.testing.assert_array_equal(f.image, strips[i % len(strips)])
    # strips of a cell come one strip period apart (LINES / line rate = 10 ms), cells 125 ms
    starts = [f.t_mono_ns / 1e9 for f in frames if f.part == 0]
    strip_gaps = [
        (b.t_mono_ns - a.t_mono_ns) / 1e9
        for a, b in itertools.pairwise(frames)
        if b.cell_id == a.cell_id
    ]
    assert 0.003 < float(np.median(strip_gaps)) < 0.05
    assert 0.09 < float(np.median(np.diff(starts))) < 0.16


def test_a_failed_strip_faults_its_cell_once(tmp_path: Path) -> None:
    _strip_files(tmp_path / "strips", 2)
    cfg = _cfg(tmp_path / "strips")
    drivers: list[PylonDriver] = []

    def factory() -> PylonDriver:
        drivers.append(PylonDriver(cfg))
        return drivers[-1]

    sink = Collector()
    with AcquisitionWorker(cfg, factory, sink):
        assert sink.wait_for(lambda items: len(items) >= STRIPS, timeout=10.0)
        drivers[0].force_failed_buffers(2)
        assert sink.wait_for(
            lambda items: len(sink.faults()) >= 1 and len(items) >= 5 * STRIPS, timeout=10.0
        )
    faults = sink.faults()
    assert len({f.cell_id for f in faults}) == len(faults)
    assert all(f.reason == "bad_frame" and f.detail.startswith("strip ") for f in faults)
    bad = {f.cell_id for f in faults}
    # the cells after the faulted one arrive whole, every strip in its place
    later = [f for f in sink.frames() if f.cell_id > max(bad)]
    by_cell: dict[int, list[Frame]] = {}
    for f in later:
        by_cell.setdefault(f.cell_id, []).append(f)
    complete = [c for c, fs in by_cell.items() if [f.part for f in fs] == list(range(STRIPS))]
    assert complete


def test_line_scan_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="line_scan needs roi"):
        PylonCamera.model_validate(
            {"id": "f", "backend": "pylon", "line_scan": {"strips_per_cell": 4}}
        )
    with pytest.raises(ValidationError, match=r"more than 1 / trigger\.rate_hz"):
        _cfg(tmp_path, rate_hz=30.0, line_rate=6400.0)
    assert _cfg(tmp_path).strip_period_s() == pytest.approx(LINES / 6400.0)


def test_strip_pacing_does_not_drift(tmp_path: Path) -> None:
    _strip_files(tmp_path / "strips", 1)
    cfg = _cfg(tmp_path / "strips", rate_hz=10.0)
    sink = Collector()
    t0 = time.monotonic()
    with AcquisitionWorker(cfg, lambda: PylonDriver(cfg), sink):
        assert sink.wait_for(lambda items: len(items) >= 10 * STRIPS, timeout=10.0)
    elapsed = time.monotonic() - t0
    frames = sink.frames()
    # a strip whose slot the thread reached late (another process had the core) is an NG
    # overload, never a strip shifted into the next slot; the slots themselves keep the grid
    faults = sink.faults()
    assert {f.reason for f in faults} <= {"overload"}, faults
    assert len(faults) <= 2, faults
    first = {f.cell_id: f.t_mono_ns for f in frames if f.part == 0}
    a, b = min(first), max(first)
    assert b - a >= 7
    span = (first[b] - first[a]) / 1e9
    assert span == pytest.approx(0.1 * (b - a), abs=0.08)
    assert elapsed < 5.0


class _TimedLink:
    """The emulated camera, recording each trigger and delivering each strip ``delay_s`` late."""

    def __init__(self, inner: PylonDriver, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.triggered_ns: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def trigger(self) -> bool:
        self.triggered_ns.append(time.monotonic_ns())
        return self.inner.trigger()

    def grab(self, timeout_s: float) -> object:
        raw = self.inner.grab(timeout_s)
        if raw is not None:
            time.sleep(self.delay_s)
        return raw


@pytest.mark.parametrize(
    ("rate_hz", "line_rate", "delay_s"),
    [(8.0, 6400.0, 0.02), (1.0, 320.0, 0.0)],
    ids=["scan ends first", "strip arrives first"],
)
def test_a_strip_is_taken_when_its_scan_ends(
    tmp_path: Path, rate_hz: float, line_rate: float, delay_s: float
) -> None:
    """A strip's capture instant is its trigger plus its scan time (LINES / line rate), or
    its arrival when that is sooner (an emulator renders a strip faster than it scans)."""
    _strip_files(tmp_path / "strips", 2)
    cfg = _cfg(tmp_path / "strips", rate_hz=rate_hz, line_rate=line_rate)
    scan_ns = int(LINES / line_rate * 1e9)
    links: list[_TimedLink] = []

    def factory() -> _TimedLink:
        links.append(_TimedLink(PylonDriver(cfg), delay_s))
        return links[-1]

    sink = Collector()
    with AcquisitionWorker(cfg, factory, sink):  # type: ignore[arg-type]
        assert sink.wait_for(lambda items: len(items) >= 2 * STRIPS, timeout=15.0)
    assert sink.faults() == []
    (link,) = links
    for k, frame in enumerate(sink.frames()[: 2 * STRIPS]):
        after_trigger = frame.t_mono_ns - link.triggered_ns[k]
        if delay_s:  # arrived 20 ms after its trigger, its 10 ms scan long over
            assert scan_ns - 5_000_000 < after_trigger <= scan_ns, (k, after_trigger)
        else:  # arrived within milliseconds, long before its 200 ms scan could end
            assert 0 < after_trigger < scan_ns // 2, (k, after_trigger)
