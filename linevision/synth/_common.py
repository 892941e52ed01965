"""Small helpers shared by the generators: random fields, noise, drawing, and file output."""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]
Points = npt.NDArray[np.floating[Any]]

AA_SHIFT: Final = 4
_AA_SCALE: Final = float(1 << AA_SHIFT)
_GRAIN_STD: Final = float(np.sqrt(2.0 * (256.0**2 - 1.0) / 12.0))


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    """The generator of one sample: depends only on ``seed`` and the sample's keys."""
    return np.random.default_rng([seed, *keys])


def smooth_field(
    rng: np.random.Generator, knots: tuple[int, int], shape: tuple[int, int]
) -> F32Array:
    """A smooth zero-mean random field of ``shape`` (rows, cols) with unit standard deviation."""
    small = rng.standard_normal(knots, dtype=np.float32)
    small -= np.float32(small.mean())
    small *= np.float32(1.0 / max(float(small.std()), 1e-6))
    out = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.asarray(out, dtype=np.float32)


def profile(rng: np.random.Generator, knots: int, length: int) -> F32Array:
    """A smooth random 1-D profile of ``length`` samples, peak absolute value 1."""
    values = rng.standard_normal((max(knots, 2), 1)).astype(np.float32)
    out = cv2.resize(values, (1, length), interpolation=cv2.INTER_CUBIC)[:, 0]
    peak = float(np.abs(out).max())
    return np.asarray(out / max(peak, 1e-6), dtype=np.float32)


def grain(rng: np.random.Generator, shape: tuple[int, ...]) -> F32Array:
    """Zero-mean unit-variance pixel noise (triangular distribution, cheap to draw)."""
    size = int(np.prod(shape))
    raw = np.frombuffer(rng.bytes(2 * size), dtype=np.uint8).reshape(2, *shape)
    total = raw[0].astype(np.float32) + raw[1].astype(np.float32)
    return np.asarray((total - 255.0) * np.float32(1.0 / _GRAIN_STD), dtype=np.float32)


def fill(shape: tuple[int, int], polygons: Sequence[Points]) -> F32Array:
    """Anti-aliased coverage in [0, 1] of polygons given as (x, y) float points."""
    canvas = np.zeros(shape, dtype=np.uint8)
    pts = [np.rint(np.asarray(p, dtype=np.float64) * _AA_SCALE).astype(np.int32) for p in polygons]
    cv2.fillPoly(canvas, pts, 255, lineType=cv2.LINE_AA, shift=AA_SHIFT)
    return canvas.astype(np.float32) * np.float32(1.0 / 255.0)


def stroke(shape: tuple[int, int], points: Points, width: float) -> F32Array:
    """Anti-aliased coverage in [0, 1] of a polyline of ``width`` px through (x, y) points."""
    canvas = np.zeros(shape, dtype=np.uint8)
    pts = np.rint(np.asarray(points, dtype=np.float64) * _AA_SCALE).astype(np.int32)
    thickness = max(round(width), 1)
    cv2.polylines(
        canvas,
        [pts],
        isClosed=False,
        color=255,
        thickness=thickness,
        lineType=cv2.LINE_AA,
        shift=AA_SHIFT,
    )
    cover = canvas.astype(np.float32) * np.float32(1.0 / 255.0)
    if width < 1.0:
        cover *= np.float32(width)
    return cover


def ellipse_polygon(
    centre: tuple[float, float],
    radii: tuple[float, float],
    angle_deg: float,
    scale: Points | None = None,
) -> F32Array:
    """An (x, y) polygon of an ellipse; ``scale`` (one factor per point) makes it irregular."""
    points = 24 if scale is None else len(scale)
    t = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)
    s = np.ones(points) if scale is None else np.asarray(scale, dtype=np.float64)
    x = radii[0] * s * np.cos(t)
    y = radii[1] * s * np.sin(t)
    a = np.deg2rad(angle_deg)
    xs = centre[0] + x * np.cos(a) - y * np.sin(a)
    ys = centre[1] + x * np.sin(a) + y * np.cos(a)
    return np.stack([xs, ys], axis=1).astype(np.float32)


def to_u8(image: F32Array) -> U8Image:
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def is_ng(index: int, ng_fraction: float) -> bool:
    """Sample ``index`` of a dataset is NG: NG samples are spread evenly at ``ng_fraction``."""
    return int((index + 1) * ng_fraction) > int(index * ng_fraction)


def check_dataset_args(n: int, ng_fraction: float) -> None:
    if n < 0:
        msg = f"n must be >= 0, got {n}"
        raise ValueError(msg)
    if not 0.0 <= ng_fraction <= 1.0:
        msg = f"ng_fraction must be in [0, 1], got {ng_fraction}"
        raise ValueError(msg)


def write_image(path: Path, image: U8Image, params: Sequence[int] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image, list(params)):
        msg = f"could not write {path}"
        raise OSError(msg)


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
