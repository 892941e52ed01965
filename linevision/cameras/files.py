"""A folder of image files served as a camera: name order, paced, optionally looped.

Trigger modes: ``software`` releases one frame per ``trigger()``; ``off`` and ``hardware``
(there is no line to listen to) free-run at ``rate_hz``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from linevision.cameras.base import CameraError, RawGrab
from linevision.config import ReplayCamera
from linevision.log import get_logger
from linevision.types import Image

log = get_logger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg"})


def list_images(path: Path) -> list[Path]:
    """The image files of a folder in name order (or the file itself)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    files = (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(files, key=lambda p: p.name)


class ReplayDriver:
    """Serves image files as frames; ``frame_counter`` is the running index from 0."""

    supports_software_trigger: bool = True

    def __init__(self, cfg: ReplayCamera) -> None:
        self.cfg = cfg
        self.camera_id = cfg.id
        self._files: list[Path] = []
        self._index = 0
        self._released = 0
        self._next_due = 0.0
        self._open = False
        self._cond = threading.Condition()

    def open(self) -> None:
        files = list_images(self.cfg.path)
        if not files:
            msg = f"camera {self.camera_id!r}: no image files in {self.cfg.path}"
            raise CameraError(msg)
        with self._cond:
            self._files = files
            self._index = 0
            self._released = 0
            self._next_due = time.monotonic()
            self._open = True
        log.info("camera_opened", camera=self.camera_id, files=len(files), path=str(self.cfg.path))

    def close(self) -> None:
        with self._cond:
            self._open = False
            self._cond.notify_all()

    def trigger(self) -> bool:
        with self._cond:
            self._require_open()
            if self.cfg.trigger.mode != "software":
                return False
            self._released += 1
            self._cond.notify_all()
        return True

    def grab(self, timeout_s: float) -> RawGrab | None:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._cond:
            self._require_open()
            if not self.cfg.loop and self._index >= len(self._files):
                self._wait_until(deadline)
                return None
            if self.cfg.trigger.mode == "software":
                if not self._cond.wait_for(
                    lambda: self._released > 0 or not self._open,
                    max(deadline - time.monotonic(), 0.0),
                ):
                    return None
                self._require_open()
                self._released -= 1
            else:
                if self._next_due > deadline:
                    self._wait_until(deadline)
                    return None
                self._wait_until(self._next_due)
                self._require_open()
                period = 1.0 / self.cfg.rate_hz
                self._next_due = max(self._next_due + period, time.monotonic())
            counter = self._index
            path = self._files[counter % len(self._files)]
            self._index += 1
        return self._decode(counter, path)

    def _decode(self, counter: int, path: Path) -> RawGrab:
        fmt = self.cfg.pixel_format
        flag = cv2.IMREAD_GRAYSCALE if fmt == "Mono8" else cv2.IMREAD_COLOR
        decoded = cv2.imread(str(path), flag)
        if decoded is None:
            return RawGrab(counter, None, f"cannot decode {path.name}")
        image: Image = np.asarray(decoded, dtype=np.uint8)
        if fmt == "RGB8":
            image = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), dtype=np.uint8)
        roi = self.cfg.roi
        if roi is not None:
            image = image[
                roi.offset_y : roi.offset_y + roi.height, roi.offset_x : roi.offset_x + roi.width
            ].copy()
            if image.size == 0:
                return RawGrab(counter, None, f"roi lies outside {path.name}")
        return RawGrab(counter, np.ascontiguousarray(image))

    def _wait_until(self, t: float) -> None:
        while self._open:
            remaining = t - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _require_open(self) -> None:
        if not self._open:
            msg = f"camera {self.camera_id!r}: not open"
            raise CameraError(msg)
