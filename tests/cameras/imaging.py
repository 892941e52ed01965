"""Generated test images that carry their own index (imported by tests; not a test module)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

ImageWriter = Callable[..., tuple[Path, list[npt.NDArray[np.uint8]]]]
"""The ``write_images`` fixture: ``write(count, width, height, channels, suffix)``."""


def numbered_image(index: int, width: int, height: int, channels: int = 1) -> npt.NDArray[np.uint8]:
    """A reproducible noise image whose first two pixels hold ``index`` (little endian)."""
    rng = np.random.default_rng(index)
    shape = (height, width) if channels == 1 else (height, width, channels)
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    image[0, 0] = index & 0xFF
    image[0, 1] = index >> 8
    return image


def image_index(image: npt.NDArray[np.uint8]) -> int:
    """The index ``numbered_image`` wrote into ``image``."""
    return int(image[0, 0].flat[0]) + 256 * int(image[0, 1].flat[0])
