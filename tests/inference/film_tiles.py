"""Generated blue-film tiles for the screen's tests, drawn independently of ``linevision.synth``.

Good film: one blue with a slow mottle, soft wrinkles (broad ridges shaded as relief), a
line-scan camera's column gain stripes, light falloff across the line and along it, and
sensor noise. Defects scale their change by ``contrast`` (1.0 = full): spots of the film's
own hue (brightness only, the B : G : R ratios kept), thin breaks, a sharp crease, a bubble's
rim, a grey particle, and a shadow that takes the same from every channel (B - R unchanged).
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

SIZE: Final = 512
HUE: Final = (190.0, 112.0, 48.0)
DEFECTS: Final = (
    "dark_spot",
    "light_spot",
    "bright_break",
    "dark_break",
    "crease",
    "bubble",
    "grey_particle",
    "shadow",
)


def _line_distance(shape: tuple[int, int], centre: tuple[float, float], angle: float) -> F32:
    """Signed distance of every pixel from a straight line through ``centre``."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return np.asarray(
        (xs - centre[0]) * np.sin(angle) - (ys - centre[1]) * np.cos(angle), np.float32
    )


def _along(shape: tuple[int, int], centre: tuple[float, float], angle: float) -> F32:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return np.asarray(
        (xs - centre[0]) * np.cos(angle) + (ys - centre[1]) * np.sin(angle), np.float32
    )


def good_brightness(rng: np.random.Generator, size: int = SIZE) -> F32:
    """The film's relative brightness (about 1.0) with all its normal variation."""
    shape = (size, size)
    noise = rng.normal(0.0, 1.0, shape).astype(np.float32)
    mottle = cv2.GaussianBlur(noise, (0, 0), 30.0)
    mottle *= 0.03 / max(float(np.abs(mottle).max()), 1e-6)
    field = 1.0 + mottle
    for _ in range(int(rng.integers(2, 5))):
        sigma = rng.uniform(6.0, 12.0)
        angle = rng.uniform(0.0, np.pi)
        centre = (rng.uniform(0, size), rng.uniform(0, size))
        d = _line_distance(shape, centre, angle)
        t = _along(shape, centre, angle)
        extent = np.exp(-((t / rng.uniform(80.0, 200.0)) ** 2))
        ridge = np.exp(-0.5 * (d / sigma) ** 2)
        relief = -d / sigma * ridge
        field += (rng.uniform(0.04, 0.08) * relief - rng.uniform(0.0, 0.04) * ridge) * extent
    cols = np.linspace(-1.0, 1.0, size, dtype=np.float32) * rng.uniform(0.3, 1.0)
    falloff = 1.0 - rng.uniform(0.1, 0.25) * cols**2
    drift = 1.0 + rng.uniform(-0.05, 0.05) * np.linspace(-1.0, 1.0, size, dtype=np.float32)
    stripes = 1.0 + rng.normal(0.0, 0.012, size).astype(np.float32)
    return np.asarray(field * drift[:, None] * (falloff * stripes)[None, :], np.float32)


def render(brightness: F32, rng: np.random.Generator, noise: float = 3.0) -> U8:
    """Film of hue ``HUE`` at ``brightness``, with Gaussian sensor noise (grey levels)."""
    planes = [brightness * c + rng.normal(0.0, noise, brightness.shape) for c in HUE]
    return np.clip(np.rint(np.stack(planes, axis=2)), 0, 255).astype(np.uint8)


def good_tile(seed: int, size: int = SIZE) -> U8:
    rng = np.random.default_rng([seed, 1])
    return render(good_brightness(rng, size), rng)


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> F32:
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    r = np.hypot(xs - centre[0], ys - centre[1])
    return np.asarray(np.clip(radius + 0.5 - r, 0.0, 1.0), np.float32)


def defect_tile(seed: int, kind: str, contrast: float = 1.0, size: int = SIZE) -> U8:
    """A good tile (of ``seed``) with one defect of ``kind`` near its middle."""
    rng = np.random.default_rng([seed, 1])
    brightness = good_brightness(rng, size)
    shape = (size, size)
    centre = (size / 2 + rng.uniform(-40, 40), size / 2 + rng.uniform(-40, 40))
    angle = rng.uniform(0.0, np.pi)
    if kind in ("dark_spot", "light_spot"):
        sign = -1.0 if kind == "dark_spot" else 1.0
        spot = cv2.GaussianBlur(_disc(shape, centre, 5.0), (0, 0), 1.0)
        brightness *= 1.0 + sign * 0.3 * contrast * spot
    elif kind in ("bright_break", "dark_break"):
        sign = -1.0 if kind == "dark_break" else 1.0
        d = _line_distance(shape, centre, angle)
        t = _along(shape, centre, angle)
        line = np.clip(1.5 - np.abs(d), 0.0, 1.0) * (np.abs(t) < 40.0)
        brightness *= 1.0 + sign * 0.4 * contrast * line
    elif kind == "crease":
        d = _line_distance(shape, centre, angle)
        t = _along(shape, centre, angle)
        edge = -d / 1.2 * np.exp(0.5 - 0.5 * (d / 1.2) ** 2)
        brightness *= 1.0 + 0.25 * contrast * edge * (np.abs(t) < 60.0)
    elif kind == "bubble":
        ring = _disc(shape, centre, 10.0) - _disc(shape, centre, 8.0)
        inner = _disc(shape, centre, 8.0)
        brightness *= 1.0 + contrast * (0.3 * ring - 0.05 * inner)
    elif kind in ("grey_particle", "shadow"):
        image = render(brightness, rng).astype(np.float32)
        if kind == "grey_particle":
            cover = _disc(shape, centre, 3.5)[..., None] * contrast
            image += (np.full(3, 128.0, np.float32) - image) * cover
        else:
            image -= (
                40.0
                * contrast
                * cv2.GaussianBlur(_disc(shape, centre, 6.0), (0, 0), 1.0)[..., None]
            )
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)
    else:
        msg = f"unknown defect kind {kind!r}; expected one of {DEFECTS}"
        raise ValueError(msg)
    return render(brightness, rng)
