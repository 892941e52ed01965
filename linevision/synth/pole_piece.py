"""Synthetic pole-piece (electrode edge) crops for burr classification (seed 002).

In the canonical frame the coated foil fills the left of the crop and its cut edge runs
roughly vertically; the separator band lies right of the edge up to a boundary line.
Burrs are thin foil spikes that leave the edge towards the boundary: Short ones stop
before the line, Long ones cross it. Powder is specks and residue near the edge; Other
is a crushed edge segment or a torn separator. A scene (geometry and grey levels) is
sampled first and then rendered, so tests can check the geometry behind each image.
Rendering adds coating texture, rotation, orientation, illumination gradient, gain,
blur and sensor noise; ``clean=True`` renders the canonical frame without them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from linevision.synth._common import write_csv, write_image
from linevision.synth._pole_piece_parts import (
    CLASSES,
    SIZE,
    Burr,
    Particle,
    Scene,
    grain,
    sample_scene,
    smooth_field,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


__all__ = [
    "CLASSES",
    "SIZE",
    "Burr",
    "Particle",
    "Scene",
    "generate",
    "generate_batch",
    "render",
    "sample_scene",
    "write_dataset",
]

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]

_CENTRE: Final = (SIZE - 1) / 2.0
_ROWS: Final = np.arange(SIZE, dtype=np.float32)
_COLS: Final = _ROWS[None, :]
_MARGIN_ROWS: Final = 10
_AA_SHIFT: Final = 4
_AA_SCALE: Final = float(1 << _AA_SHIFT)
_GRAIN_STD: Final = float(np.sqrt(2.0 * (256.0**2 - 1.0) / 12.0))


def _fill(polygons: Sequence[npt.NDArray[np.floating[Any]]]) -> F32Array:
    """Anti-aliased coverage in [0, 1] of polygons given as (x, y) float points."""
    canvas = np.zeros((SIZE, SIZE), dtype=np.uint8)
    pts: list[npt.NDArray[np.int32]] = [
        np.rint(np.asarray(p, dtype=np.float64) * _AA_SCALE).astype(np.int32) for p in polygons
    ]
    cv2.fillPoly(canvas, pts, 255, lineType=cv2.LINE_AA, shift=_AA_SHIFT)
    return canvas.astype(np.float32) * np.float32(1.0 / 255.0)


def _burr_polygon(scene: Scene, burr: Burr) -> npt.NDArray[np.float64]:
    half = burr.width / 2.0
    r = burr.row
    e_lo = scene.edge_at(r - half) - 2.0
    e_hi = scene.edge_at(r + half) - 2.0
    tip = scene.edge_at(r) + burr.length
    mid = scene.edge_at(r) + 0.5 * burr.length + burr.kink
    mid_row = r + 0.5 * burr.bend
    return np.array(
        [
            (e_lo, r - half),
            (mid, mid_row - 0.35 * half),
            (tip, burr.tip_row - 0.3),
            (tip, burr.tip_row + 0.3),
            (mid, mid_row + 0.35 * half),
            (e_hi, r + half),
        ],
        dtype=np.float64,
    )


def _draw_particles(img: F32Array, particles: tuple[Particle, ...]) -> None:
    for p in particles:
        reach = int(np.ceil(p.radius * p.aspect)) + 2
        r0 = max(int(p.row) - reach, 0)
        r1 = min(int(p.row) + reach + 1, SIZE)
        c0 = max(int(p.col) - reach, 0)
        c1 = min(int(p.col) + reach + 1, SIZE)
        if r0 >= r1 or c0 >= c1:
            continue
        dy = np.arange(r0, r1, dtype=np.float32)[:, None] - p.row
        dx = np.arange(c0, c1, dtype=np.float32)[None, :] - p.col
        cos_t = math.cos(math.radians(p.angle))
        sin_t = math.sin(math.radians(p.angle))
        u = dx * cos_t + dy * sin_t
        v = dy * cos_t - dx * sin_t
        dist = np.sqrt((u / p.aspect) ** 2 + v**2) - p.radius
        cover = np.clip(0.5 - dist, 0.0, 1.0)
        patch = img[r0:r1, c0:c1]
        patch += (p.level - patch) * cover


def _canonical(scene: Scene, rng: np.random.Generator, *, clean: bool) -> F32Array:
    edge = scene.edge[:, None]
    boundary = scene.boundary[:, None]
    outer = np.clip(_COLS - boundary + 0.5, 0.0, 1.0)
    img = scene.band_level + (scene.outer_level - scene.band_level) * outer
    if not clean:
        fibres = smooth_field(rng, 48, 12) * float(rng.uniform(1.0, 4.0))
        img = img + fibres * (0.6 + 0.4 * outer)
    if scene.wrinkle > 0.0:
        fold = scene.edge + scene.wrinkle * (scene.boundary - scene.edge)
        img += scene.wrinkle_contrast * np.clip(1.0 - np.abs(_COLS - fold[:, None]), 0.0, 1.0)
    line = np.clip(scene.line_width / 2.0 + 0.5 - np.abs(_COLS - boundary), 0.0, 1.0)
    img += (scene.line_level - img) * line

    if scene.defect == "break":
        hole = _fill([scene.defect_polygon])
        level = np.full((SIZE, SIZE), scene.defect_level, dtype=np.float32)
        if not clean:
            level += smooth_field(rng, 16, 16) * float(rng.uniform(1.0, 6.0))
        img += (level - img) * hole

    cover = np.clip(edge - _COLS + 0.5, 0.0, 1.0)
    if scene.burrs:
        burrs = _fill([_burr_polygon(scene, b) for b in scene.burrs])
        cover = np.maximum(cover, burrs)
    coat = np.clip(edge - scene.coat_depth - _COLS + 0.5, 0.0, 1.0)
    foil = scene.foil_level + (scene.coat_level - scene.foil_level) * coat
    if not clean:
        mottle = smooth_field(rng, 7, 7) * float(rng.uniform(0.01, 0.05))
        streaks = smooth_field(rng, 4, 56) * float(rng.uniform(0.01, 0.05))
        foil = foil * (1.0 + mottle + streaks)
        rim = np.clip(1.5 - np.abs(_COLS - edge + 1.5), 0.0, 1.0)
        foil = foil * (1.0 + float(rng.uniform(-0.12, 0.12)) * rim)
    img += (foil - img) * cover

    if scene.defect == "crush":
        start, stop = scene.defect_rows
        zone = float(rng.uniform(6.0, 18.0)) if not clean else 10.0
        inside = np.clip(_COLS - (edge - zone) + 0.5, 0.0, 1.0) * cover
        rows = np.zeros((SIZE, 1), dtype=np.float32)
        rows[start:stop, 0] = np.abs(np.sin(np.linspace(0.0, np.pi, stop - start))) ** 0.5
        darken = float(rng.uniform(0.25, 0.45)) if not clean else 0.35
        smear = darken * (1.0 + (0.0 if clean else 0.5) * smooth_field(rng, 28, 28))
        img *= 1.0 - np.clip(smear, 0.0, 0.8) * inside * rows

    _draw_particles(img, scene.particles)
    return np.asarray(img, dtype=np.float32)


def _nuisance(img: F32Array, rng: np.random.Generator) -> F32Array:
    angle = float(rng.uniform(-4.0, 4.0))
    matrix = np.asarray(cv2.getRotationMatrix2D((_CENTRE, _CENTRE), angle, 1.0), dtype=np.float64)
    matrix[:, 2] += rng.uniform(-4.0, 4.0, size=2)
    img = np.asarray(
        cv2.warpAffine(
            img, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        ),
        dtype=np.float32,
    )
    img = np.rot90(img, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        img = img[::-1]
    img = np.ascontiguousarray(img)

    rows = (_ROWS[:, None] - _CENTRE) / _CENTRE
    cols = (_COLS - _CENTRE) / _CENTRE
    gx, gy = rng.uniform(-0.18, 0.18, size=2)
    vignette = float(rng.uniform(0.0, 0.15))
    light = 1.0 + gx * cols + gy * rows - vignette * (rows**2 + cols**2) / 2.0
    img = img * light * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-12.0, 12.0))
    sharp = img.astype(np.float32)
    img = np.asarray(cv2.GaussianBlur(sharp, (0, 0), float(rng.uniform(0.35, 1.3))), np.float32)
    sigma = float(rng.uniform(1.5, 5.5))
    shot = float(rng.uniform(0.0, 0.35))
    scale = sigma + shot * np.sqrt(np.maximum(img, 0.0))
    img += grain(rng) * scale
    return np.asarray(img, dtype=np.float32)


def render(scene: Scene, rng: np.random.Generator, *, clean: bool = False) -> U8Image:
    """Render ``scene`` to a ``SIZE`` x ``SIZE`` uint8 crop.

    ``clean=True`` keeps the canonical frame (foil left, edge vertical) and leaves out
    texture, rotation, illumination, blur and noise.
    """
    img = _canonical(scene, rng, clean=clean)
    if not clean:
        img = _nuisance(img, rng)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def generate(label: str, rng: np.random.Generator) -> U8Image:
    """One ``SIZE`` x ``SIZE`` uint8 grayscale crop of class ``label``."""
    return render(sample_scene(label, rng), rng)


def _image_rng(seed: int, class_index: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, class_index, index])


def generate_batch(n_per_class: int, seed: int) -> tuple[U8Image, npt.NDArray[np.int64]]:
    """``n_per_class`` crops of every class, class-major: images (N, SIZE, SIZE), labels (N,).

    Image ``i`` of a class depends only on ``(seed, class, i)``, so a larger batch with the
    same seed starts with the images of a smaller one.
    """
    if n_per_class < 0:
        msg = f"n_per_class must be >= 0, got {n_per_class}"
        raise ValueError(msg)
    total = n_per_class * len(CLASSES)
    images = np.empty((total, SIZE, SIZE), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    k = 0
    for class_index, label in enumerate(CLASSES):
        for i in range(n_per_class):
            images[k] = generate(label, _image_rng(seed, class_index, i))
            labels[k] = class_index
            k += 1
    return images, labels


def write_dataset(out_dir: Path, n_per_class: int, seed: int) -> int:
    """Write ``<Class>/<Class>_00000.png`` for every class and ``labels.csv``; return the count.

    ``labels.csv`` has the header ``image,label``, one row per image, paths relative to
    ``out_dir`` (the folder contract of ``linevision.synth.contract``).
    """
    if n_per_class < 0:
        msg = f"n_per_class must be >= 0, got {n_per_class}"
        raise ValueError(msg)
    rows = []
    for class_index, label in enumerate(CLASSES):
        for i in range(n_per_class):
            image = generate(label, _image_rng(seed, class_index, i))
            name = f"{label}/{label}_{i:05d}.png"
            write_image(out_dir / name, image)
            rows.append((name, label))
    write_csv(out_dir / "labels.csv", ("image", "label"), rows)
    return len(rows)
