"""A real line for the page's tests: a verdict publisher, the archive writing the pictures,
and the HMI server, with the four stations' kinds and generated pictures. Not a test module.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import cv2
import numpy as np
import pytest

from linevision.bus.publisher import VerdictPublisher
from linevision.config import ArchiveConfig, HmiConfig
from linevision.daemon.archive import Archive
from linevision.hmi.server import HmiServer
from linevision.hmi.state import StationMeta
from linevision.synth import blue_film, pole_piece
from linevision.types import Crop, Decision, Defect, Detail, ModelRef, StageTimes, Verdict
from tests.daemon.parts import free_port
from tests.helpers import free_tcp_endpoint

CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = Path(__file__).resolve().parents[2] / "build" / "artefacts" / "hmi"
"""Screenshots and figures of the browser tests (kept: CI uploads the folder)."""
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-precise-memory-info",
]
FILM_W, FILM_LINES, MM_PER_LINE = 1024, 4096, 0.05
STATIONS = {
    "pole_piece": StationMeta("pole_piece", ("pole_piece_cam",), 20.0),
    "seal_edge": StationMeta("seal_edge", ("seal_cam",), 4.0),
    "six_view": StationMeta("six_view", tuple(f"six_{i}" for i in range(1, 7)), 2.0),
    "blue_film": StationMeta("blue_film", ("film_cam",), 1.0, FILM_LINES, MM_PER_LINE),
}
MODELS = {name: ModelRef(name, "0.3.1", f"{i:x}" * 64) for i, name in enumerate(STATIONS, 1)}
POLE_DEFECT = Defect("burr", 0.93, 150, 40, 40, 24)
"""Where pole_piece's NG pictures have their (drawn) defect: frame pixels."""
SIX_BOX = Defect("difference", 0.97, 140, 20, 28, 20)
FILM_DEFECTS = (
    Defect("film_anomaly", 3.2, 300, 1100, 48, 32),
    Defect("film_segment", 1.4, 700, 3300, 24, 24),
)


def chromium_or_skip() -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")


@functools.cache
def pole_image(ng: bool) -> np.ndarray:
    img = pole_piece.generate("Normal", np.random.default_rng(5))
    if ng:
        img = img.copy()
        d = POLE_DEFECT
        cv2.line(img, (d.x + 4, d.y + d.h - 4), (d.x + d.w - 4, d.y + 4), 255, 3)
    return img


@functools.cache
def film_frame() -> blue_film.FilmImage:
    rng = np.random.default_rng(7)
    return blue_film.generate_frame(rng, width=FILM_W, height=FILM_LINES)


def _film_detail() -> Callable[[], Detail]:
    frame = film_frame().image
    crops = []
    for d in FILM_DEFECTS:
        x0, y0 = d.x + d.w // 2 - 128, d.y + d.h // 2 - 128
        pixels = frame[y0 : y0 + 256, x0 : x0 + 256].copy()
        cv2.circle(pixels, (128, 128), 6, (230, 230, 250), -1)
        mask = np.zeros((256, 256), np.uint8)
        cv2.circle(mask, (128, 128), 6, 255, -1)
        crops.append(Crop(x0, y0, pixels, mask))
    return lambda: Detail(crops=tuple(crops), strip=True)


def verdict(  # noqa: PLR0913  (each knob a test turns)
    station: str,
    cell: int,
    *,
    ng: bool = False,
    reason: str = "defect",
    label: str | None = None,
    latency_ms: float = 5.0,
    t_frame_ns: int | None = None,
    picture: bool = True,
    located: bool = True,
) -> Verdict:
    """One verdict of ``station`` with a picture as that station gives it."""
    now = time.monotonic_ns()
    t0 = now - int(latency_ms * 1e6)
    defects: tuple[Defect, ...] = ()
    detail = None
    image: np.ndarray | None = None
    scale = 1.0
    default_label = {"pole_piece": "Long" if ng else "Normal", "blue_film": "film_anomaly"}
    label = label or default_label.get(station, "NG" if ng else "OK")
    if station == "pole_piece":
        image = pole_image(ng)
        defects = (POLE_DEFECT,) if ng and reason == "defect" and located else ()
    elif station == "seal_edge":
        image = np.full((128, 512), 90, np.uint8)
        cv2.rectangle(image, (0, 40), (511, 88), 160, -1)
    elif station == "six_view":
        views = [np.full((64, 256), 60 + 10 * v, np.uint8) for v in range(6)]
        cv2.line(views[4], (145, 35), (162, 25), 250, 2)
        image = views[0]
        if ng and reason == "defect":
            detail = lambda: Detail(image=views[4], defects=(SIX_BOX,), view="5", views=6)  # noqa: E731
    else:
        full = film_frame().image
        image = cv2.resize(full, (FILM_W // 8, FILM_LINES // 8), interpolation=cv2.INTER_AREA)
        scale = 1 / 8
        if ng and reason == "defect":
            defects, detail = FILM_DEFECTS, _film_detail()
        else:
            label = "OK" if not ng else label
    decision = Decision(
        "NG" if ng else "OK",
        reason if ng else None,  # type: ignore[arg-type]
        label,
        0.97 if ng else 0.02,
        defects,
        MODELS[station],
        1.3,
        detail=detail,
    )
    return Verdict(
        station=station,
        cell_id=cell,
        decision=decision,
        t_frame_ns=time.time_ns() if t_frame_ns is None else t_frame_ns,
        t_frame_mono_ns=t0,
        image=image if picture else None,
        image_scale=scale,
        recipe="cell_21700",
        stages=StageTimes(t0 + 100_000, t0 + 300_000, now - 200_000),
    )


class Line:
    """A verdict publisher, the archive writing NG pictures, and the HMI server."""

    def __init__(
        self,
        tmp: Path,
        *,
        token: str | None = None,
        hmi: dict[str, object] | None = None,
        cameras: dict[str, dict[str, object]] | None = None,
    ) -> None:
        self.archive_dir = tmp / "archive"
        self.endpoint = free_tcp_endpoint()
        self.cameras = cameras or {
            cam: {"state": "running", "frames": 1200, "reconnects": 0}
            for meta in STATIONS.values()
            for cam in meta.cameras
        }
        self.publisher = VerdictPublisher(self.endpoint, heartbeat_s=0.2, state=self._state)
        self.archive = Archive(
            self.archive_dir,
            ArchiveConfig(dir=self.archive_dir, image_queue_size=512),
            self.publisher.run_id,
        )
        self.publisher._on_published = self.archive.listener
        self.port = free_port()
        cfg = HmiConfig.model_validate(
            {"listen": f"127.0.0.1:{self.port}", "push_hz": 5, **(hmi or {})}
        )
        self.hmi = HmiServer(cfg, self.endpoint, self.archive_dir, token=token, stations=STATIONS)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.sent = 0

    def _state(self) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, object]]]:
        return {name: {"queue": 0} for name in STATIONS}, self.cameras

    def __enter__(self) -> Self:
        self.archive.start()
        self.publisher.start()
        self.hmi.start()
        deadline = time.monotonic() + 5
        while self.hmi.state.snapshot()["run_id"] is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.hmi.stop()
        self.publisher.stop()
        self.archive.stop()

    def publish(self, v: Verdict, *, wait: bool = True) -> int:
        """Publish ``v``; its seq (once the bus thread sent it, with ``wait``)."""
        self.sent += 1
        self.publisher.publish(v)
        if wait:
            deadline = time.monotonic() + 5
            while self.publisher.seq < self.sent and time.monotonic() < deadline:
                time.sleep(0.002)
        return self.sent
