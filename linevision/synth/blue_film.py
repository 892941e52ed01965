"""Synthetic line-scan frames of the cells' blue insulating film (seeds 003 and 004).

A frame is BGR uint8, ``WIDTH`` px across the scan line by ``HEIGHT`` lines (4000 x 18000 by
default). Good film is one blue with a soft mottle, normal wrinkles (long creases, shaded as
relief), the line light's profile across the line, slight line-scan banding (a per-column
fixed pattern and a slow gain drift from line to line) and sensor noise. Defects are small
film breaks showing the cell's metal below, and white or black foreign matter; they can be
as small as ``MIN_DEFECT_PX`` (3 px), and each comes with its pixels in a uint8 mask
(255 = defect). Smooth content is drawn at 1/8 of the lines (full column resolution) and
upsampled with cv2; noise comes from a pool reused at random offsets, so a full frame takes
well under a second. ``generate_tile`` draws one 1024 x 1024 tile of a virtual frame for
tile-level training without building the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

from linevision.synth._common import (
    F32Array,
    U8Image,
    check_dataset_args,
    ellipse_polygon,
    fill,
    is_ng,
    profile,
    sample_rng,
    smooth_field,
    stroke,
    write_csv,
    write_image,
)
from linevision.synth._common import uniform as _u

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

WIDTH: Final = 4000
HEIGHT: Final = 18000
TILE: Final = 1024
MIN_DEFECT_PX: Final = 3
CLASSES: Final = ("OK", "NG")
NG_KINDS: Final = ("break", "white", "black")
KINDS: Final = ("OK", *NG_KINDS)

_STEP: Final = 8
_POOL_ROWS: Final = 1031
_POOL_SLACK: Final = 64
_NOISE: Final = 12
_MAX_SIZE: Final = {"break": 80.0, "white": 40.0, "black": 30.0}


@dataclass(frozen=True)
class FilmDefect:
    """One defect: ``kind``, centre (``x``, ``y``) in the image, longest extent ``size`` px."""

    kind: str
    x: float
    y: float
    size: float


@dataclass(frozen=True, eq=False)
class FilmImage:
    image: U8Image
    mask: U8Image
    defects: tuple[FilmDefect, ...]

    @property
    def label(self) -> str:
        return "NG" if self.defects else "OK"


def _column_gain(rng: np.random.Generator, x0: int, width: int, line_width: int) -> F32Array:
    """Line-light falloff across the scan line, a slow ripple, and a per-column fixed pattern."""
    cols = (np.arange(x0, x0 + width, dtype=np.float32) - line_width / 2.0) / (line_width / 2.0)
    skew = _u(rng, -0.05, 0.05)
    falloff = 1.0 - _u(rng, 0.08, 0.2) * cols**2 + skew * cols
    ripple = _u(rng, 0.005, 0.02) * profile(rng, max(width // 200, 3), width)
    fixed = rng.normal(0.0, _u(rng, 0.003, 0.01), width).astype(np.float32)
    return np.asarray(falloff + ripple + fixed, dtype=np.float32)


def _wrinkles(rng: np.random.Generator, shape: tuple[int, int]) -> F32Array:
    """Relief of long creases on a coarse grid (1 px = ``_STEP`` lines and columns)."""
    ridge = np.zeros(shape, dtype=np.float32)
    megapixels = shape[0] * shape[1] * _STEP * _STEP / 1e6
    direction = _u(rng, 0.0, np.pi)
    for _ in range(int(rng.poisson(_u(rng, 0.4, 1.2) * megapixels))):
        length = _u(rng, 20.0, 190.0)
        angle = direction + _u(rng, -0.35, 0.35)
        t = np.linspace(0.0, length, 6)
        sway = np.cumsum(rng.normal(0.0, 0.06, 6))
        x = _u(rng, 0.0, shape[1]) + t * np.cos(angle + sway)
        y = _u(rng, 0.0, shape[0]) + t * np.sin(angle + sway)
        points = np.stack([x, y], axis=1)
        ridge += stroke(shape, points, _u(rng, 0.6, 1.6)) * _u(rng, 0.5, 1.0)
    ridge = np.asarray(cv2.GaussianBlur(ridge, (0, 0), _u(rng, 0.8, 1.5)), dtype=np.float32)
    light = np.asarray(
        cv2.Sobel(ridge, cv2.CV_32F, 1, 0) + 0.5 * cv2.Sobel(ridge, cv2.CV_32F, 0, 1)
    )
    return np.asarray(_u(rng, 0.04, 0.1) * light - 0.02 * ridge, dtype=np.float32)


def _film(rng: np.random.Generator, height: int, width: int, x0: int, line_width: int) -> U8Image:
    """Defect-free film: ``height`` lines of columns ``x0 .. x0 + width`` of a scan line."""
    rows = -(-height // _STEP) + 1
    coarse = (rows, -(-width // _STEP) + 1)
    knots = (max(coarse[0] // 32, 2), max(coarse[1] // 32, 2))
    field = 1.0 + smooth_field(rng, knots, coarse) * _u(rng, 0.01, 0.03) + _wrinkles(rng, coarse)
    mid = np.asarray(cv2.resize(field, (width, rows), interpolation=cv2.INTER_LINEAR), np.float32)
    drift = profile(rng, max(rows // 24, 3), rows) * _u(rng, 0.004, 0.015)
    mid *= (1.0 + drift)[:, None] * _column_gain(rng, x0, width, line_width)[None, :]
    blue = (_u(rng, 175.0, 215.0), _u(rng, 95.0, 135.0), _u(rng, 30.0, 65.0))
    gain = _u(rng, 0.9, 1.1)
    planes = [cv2.convertScaleAbs(mid, alpha=c * gain, beta=-_NOISE / 2.0) for c in blue]
    small = cv2.merge(planes)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    pool = rng.integers(0, _NOISE + 1, (_POOL_ROWS, width + _POOL_SLACK, 3), dtype=np.uint8)
    for r0 in range(0, height, _POOL_ROWS):
        block = image[r0 : r0 + _POOL_ROWS]
        off = int(rng.integers(0, _POOL_SLACK + 1))
        cv2.add(block, pool[: block.shape[0], off : off + width], dst=block)
    return np.asarray(image, dtype=np.uint8)


def _defect_size(kind: str, rng: np.random.Generator) -> float:
    if rng.random() < 0.25:
        return _u(rng, MIN_DEFECT_PX, MIN_DEFECT_PX + 2.0)
    return float(np.exp(_u(rng, np.log(MIN_DEFECT_PX), np.log(_MAX_SIZE[kind]))))


def _shape(
    kind: str, size: float, centre: tuple[float, float], rng: np.random.Generator
) -> tuple[F32Array, float]:
    """Polygon (or polyline, with its width > 0) of a defect of longest extent ``size``."""
    if kind == "white" and size > 12.0 and rng.random() < 0.4:
        angle = _u(rng, 0.0, np.pi)
        t = np.linspace(-0.5, 0.5, 6) * (size - 2.0)
        bend = np.cumsum(rng.normal(0.0, 0.15, 6))
        xs = centre[0] + t * np.cos(angle + bend)
        ys = centre[1] + t * np.sin(angle + bend)
        return np.stack([xs, ys], axis=1).astype(np.float32), _u(rng, 1.0, 2.0)
    aspect = _u(rng, 2.0, 6.0) if kind == "break" and size > 8.0 else _u(rng, 1.0, 1.6)
    radii = (size / 2.0, max(size / 2.0 / aspect, MIN_DEFECT_PX / 2.0))
    jitter = rng.uniform(0.75, 1.15, 14) if size > 8.0 else None
    return ellipse_polygon(centre, radii, _u(rng, 0.0, 180.0), jitter), 0.0


def _draw(image: U8Image, mask: U8Image, defect: FilmDefect, rng: np.random.Generator) -> None:
    """Paint ``defect`` into a patch of ``image`` and mark its pixels in ``mask``."""
    h, w = mask.shape
    reach = int(defect.size) + 6
    x0, y0 = max(int(defect.x) - reach, 0), max(int(defect.y) - reach, 0)
    x1, y1 = min(int(defect.x) + reach + 1, w), min(int(defect.y) + reach + 1, h)
    shape = (y1 - y0, x1 - x0)
    points, width = _shape(defect.kind, defect.size, (defect.x - x0, defect.y - y0), rng)
    cover = stroke(shape, points, width) if width > 0.0 else fill(shape, [points])
    patch = image[y0:y1, x0:x1].astype(np.float32)
    if defect.kind == "break":
        rim = np.clip(cv2.dilate(cover, np.ones((3, 3), np.uint8)) - cover, 0.0, 1.0)
        patch *= 1.0 - 0.45 * rim[..., None]
        metal = _u(rng, 140.0, 200.0) + _u(rng, -12.0, 12.0) * np.linspace(-1, 1, shape[1])
        colour = np.repeat(metal[None, :, None], 3, axis=2) + rng.normal(0.0, 3.0, (*shape, 3))
    elif defect.kind == "white":
        colour = np.full((*shape, 3), _u(rng, 205.0, 245.0), dtype=np.float32)
    else:
        colour = np.full((*shape, 3), _u(rng, 10.0, 45.0), dtype=np.float32)
    opacity = _u(rng, 0.85, 1.0)
    patch += (colour - patch) * (cover * opacity)[..., None]
    image[y0:y1, x0:x1] = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
    mask[y0:y1, x0:x1][cover > 0.3] = 255


def _place(
    image: U8Image, kinds: Sequence[str], rng: np.random.Generator, size: float | None = None
) -> FilmImage:
    h, w = image.shape[:2]
    mask = np.zeros((h, w), dtype=np.uint8)
    defects = []
    for kind in kinds:
        if kind not in NG_KINDS:
            msg = f"unknown blue-film defect kind {kind!r}; expected one of {NG_KINDS}"
            raise ValueError(msg)
        extent = _defect_size(kind, rng) if size is None else float(size)
        border = extent / 2.0 + 8.0
        defect = FilmDefect(kind, _u(rng, border, w - border), _u(rng, border, h - border), extent)
        _draw(image, mask, defect, rng)
        defects.append(defect)
    return FilmImage(image, mask, tuple(defects))


def generate_frame(
    rng: np.random.Generator,
    kinds: Sequence[str] = (),
    *,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> FilmImage:
    """One line-scan frame with a defect of each of ``kinds`` (none: a good frame).

    A frame narrower than ``WIDTH`` is a window of a ``WIDTH``-wide scan line (a camera ROI),
    so it sees part of the line light's profile, as a tile does.
    """
    if width < 64 or height < 64:
        msg = f"a film frame needs at least 64 x 64 px, got {width} x {height}"
        raise ValueError(msg)
    line = max(width, WIDTH)
    x0 = int(rng.integers(0, line - width + 1))
    return _place(_film(rng, height, width, x0, line), kinds, rng)


def generate_tile(
    rng: np.random.Generator, kind: str = "OK", *, size: int = TILE, defect_px: float | None = None
) -> FilmImage:
    """One ``size`` x ``size`` tile of a ``WIDTH``-wide frame: good, or one defect of ``kind``.

    ``defect_px`` fixes the defect's longest extent (``MIN_DEFECT_PX`` for the smallest).
    """
    if kind not in KINDS:
        msg = f"unknown blue-film kind {kind!r}; expected one of {KINDS}"
        raise ValueError(msg)
    line = max(WIDTH, size)
    x0 = int(rng.integers(0, line - size + 1))
    return _place(_film(rng, size, size, x0, line), () if kind == "OK" else (kind,), rng, defect_px)


def frame_kinds(rng: np.random.Generator) -> tuple[str, ...]:
    """The defects of an NG frame: one to four, of random kinds."""
    return tuple(str(k) for k in rng.choice(NG_KINDS, size=int(rng.integers(1, 5))))


def write_dataset(
    out_dir: Path,
    n: int,
    seed: int,
    *,
    size: tuple[int, int] = (WIDTH, HEIGHT),
    ng_fraction: float = 0.5,
) -> int:
    """Write ``frames/NNNNN.png``, ``masks/NNNNN.png`` (NG only), ``labels.csv``; return ``n``.

    ``size`` is (width, height) of the frames. ``ng_fraction=0`` writes good frames only:
    the training folder of the anomaly model.
    """
    width, height = size
    check_dataset_args(n, ng_fraction)
    rows = []
    fast = (cv2.IMWRITE_PNG_COMPRESSION, 1)
    for i in range(n):
        rng = sample_rng(seed, i)
        kinds = frame_kinds(rng) if is_ng(i, ng_fraction) else ()
        frame = generate_frame(rng, kinds, width=width, height=height)
        name = f"frames/{i:05d}.png"
        write_image(out_dir / name, frame.image, fast)
        mask = ""
        if kinds:
            mask = f"masks/{i:05d}.png"
            write_image(out_dir / mask, frame.mask, fast)
        rows.append((name, frame.label, mask, "+".join(sorted(set(kinds))) or "OK"))
    write_csv(out_dir / "labels.csv", ("image", "label", "mask", "kind"), rows)
    return n
