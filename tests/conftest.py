"""Shared test set-up.

``PYLON_CAMEMU`` must be set before anything calls ``pylon.TlFactory.GetInstance()``, so it
is set here, before any test module is imported.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYLON_CAMEMU", "4")

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import structlog

from tests.cameras.imaging import ImageWriter, numbered_image


@pytest.fixture
def write_images(tmp_path: Path) -> ImageWriter:
    """Writes numbered images into a fresh folder; returns it and the images in name order.

    Files are created in reverse order, so only name order gives 0, 1, 2, ...
    """
    counter = iter(range(1000))

    def write(
        count: int, width: int = 64, height: int = 48, channels: int = 1, suffix: str = ".png"
    ) -> tuple[Path, list[npt.NDArray[np.uint8]]]:
        folder = tmp_path / f"images{next(counter)}"
        folder.mkdir()
        images = [numbered_image(i, width, height, channels) for i in range(count)]
        for i in reversed(range(count)):
            assert cv2.imwrite(str(folder / f"img_{i:04d}{suffix}"), images[i])
        return folder, images

    return write


@pytest.fixture(autouse=True)
def _reset_logging():
    """Tests that configure logging (in-process CLI runs) must not leak it into later tests."""
    yield
    structlog.reset_defaults()
