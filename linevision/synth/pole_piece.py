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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Literal

import cv2
import numpy as np
import numpy.typing as npt

from linevision.synth._common import write_csv, write_image

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

SIZE: Final = 224
CLASSES: Final = ("Normal", "Short", "Long", "Powder", "Other")

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]
Defect = Literal["none", "crush", "break"]

_CENTRE: Final = (SIZE - 1) / 2.0
_ROWS: Final = np.arange(SIZE, dtype=np.float32)
_COLS: Final = _ROWS[None, :]
_MARGIN_ROWS: Final = 10
_AA_SHIFT: Final = 4
_AA_SCALE: Final = float(1 << _AA_SHIFT)
_GRAIN_STD: Final = float(np.sqrt(2.0 * (256.0**2 - 1.0) / 12.0))


@dataclass(frozen=True)
class Burr:
    """A foil spike: base on the edge at ``row``, tip ``length`` px beyond the edge."""

    row: float
    length: float
    width: float
    bend: float
    kink: float

    @property
    def tip_row(self) -> float:
        return self.row + self.bend


@dataclass(frozen=True)
class Particle:
    """An elliptical speck of powder or dust, centre ``(row, col)`` in the canonical frame."""

    row: float
    col: float
    radius: float
    aspect: float
    angle: float
    level: float


@dataclass(frozen=True, eq=False)
class Scene:
    """Geometry and grey levels of one crop in the canonical frame (foil left, edge vertical)."""

    label: str
    edge: F32Array
    boundary: F32Array
    line_width: float
    wrinkle: float
    wrinkle_contrast: float
    foil_level: float
    coat_level: float
    coat_depth: float
    band_level: float
    line_level: float
    outer_level: float
    burrs: tuple[Burr, ...]
    particles: tuple[Particle, ...]
    defect: Defect
    defect_rows: tuple[int, int]
    defect_polygon: F32Array
    defect_level: float

    def edge_at(self, row: float) -> float:
        return float(self.edge[_row_index(row)])

    def boundary_at(self, row: float) -> float:
        return float(self.boundary[_row_index(row)])

    def burr_tip_col(self, burr: Burr) -> float:
        return self.edge_at(burr.row) + burr.length


def _row_index(row: float) -> int:
    return int(np.clip(round(row), 0, SIZE - 1))


def _profile(rng: np.random.Generator, knots: int, length: int = SIZE) -> F32Array:
    """A smooth random profile of ``length`` samples, peak absolute value 1."""
    values = rng.standard_normal((max(knots, 2), 1)).astype(np.float32)
    out = cv2.resize(values, (1, length), interpolation=cv2.INTER_CUBIC)[:, 0]
    peak = float(np.abs(out).max())
    return np.asarray(out / max(peak, 1e-6), dtype=np.float32)


def _field(rng: np.random.Generator, rows: int, cols: int) -> F32Array:
    """A smooth zero-mean random field of shape ``(SIZE, SIZE)``, unit standard deviation."""
    small = rng.standard_normal((rows, cols), dtype=np.float32)
    small *= np.float32(1.0 / max(float(small.std()), 1e-6))
    quarter = cv2.resize(small, (SIZE // 4, SIZE // 4), interpolation=cv2.INTER_CUBIC)
    return np.asarray(cv2.resize(quarter, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR))


def _grain(rng: np.random.Generator) -> F32Array:
    """Zero-mean unit-variance pixel noise (triangular distribution, cheap to draw)."""
    raw = np.frombuffer(rng.bytes(2 * SIZE * SIZE), dtype=np.uint8).reshape(2, SIZE, SIZE)
    total = raw[0].astype(np.float32) + raw[1].astype(np.float32)
    return np.asarray((total - 255.0) * np.float32(1.0 / _GRAIN_STD), dtype=np.float32)


def _pick_rows(rng: np.random.Generator, count: int, spacing: float) -> list[float]:
    rows: list[float] = []
    for _ in range(count * 20):
        if len(rows) == count:
            break
        row = float(rng.uniform(_MARGIN_ROWS + 4, SIZE - _MARGIN_ROWS - 4))
        if all(abs(row - other) >= spacing for other in rows):
            rows.append(row)
    return rows


def _gap_range(edge: F32Array, boundary: F32Array, row: float, reach: float) -> tuple[float, float]:
    lo = _row_index(row - reach)
    hi = _row_index(row + reach) + 1
    base = float(edge[_row_index(row)])
    gaps = boundary[lo:hi] - base
    return float(gaps.min()), float(gaps.max())


def _short_burr(
    rng: np.random.Generator, edge: F32Array, boundary: F32Array, row: float, line_width: float
) -> Burr:
    bend_frac = float(rng.uniform(-0.25, 0.25))
    gap = float(boundary[_row_index(row)] - edge[_row_index(row)])
    gap_min, _ = _gap_range(edge, boundary, row, 0.25 * gap + 2.0)
    top = min(gap_min - line_width / 2.0 - 3.0, 0.9 * gap_min)
    length = float(rng.uniform(max(6.0, 0.2 * top), top))
    return Burr(
        row=row,
        length=length,
        width=float(rng.uniform(2.5, 7.0)),
        bend=bend_frac * length,
        kink=float(rng.uniform(-0.15, 0.15)) * length,
    )


def _long_burr(
    rng: np.random.Generator, edge: F32Array, boundary: F32Array, row: float, line_width: float
) -> Burr:
    bend_frac = float(rng.uniform(-0.2, 0.2))
    base = float(edge[_row_index(row)])
    gap = float(boundary[_row_index(row)]) - base
    reach = abs(bend_frac) * 1.6 * gap + 2.0
    _, gap_max = _gap_range(edge, boundary, row, reach)
    need = gap_max + line_width / 2.0
    length = need + float(rng.uniform(4.0, 0.45 * gap + 6.0))
    length = min(length, SIZE - 4.0 - base)
    length = max(length, need + 4.0)
    return Burr(
        row=row,
        length=length,
        width=float(rng.uniform(2.5, 7.0)),
        bend=bend_frac * length,
        kink=float(rng.uniform(-0.12, 0.12)) * length,
    )


def _powder(
    rng: np.random.Generator, scene_edge: F32Array, boundary: F32Array, foil: float, band: float
) -> list[Particle]:
    count = int(rng.integers(6, 29))
    clustered = rng.random() < 0.5
    centres = rng.uniform(_MARGIN_ROWS, SIZE - _MARGIN_ROWS, size=int(rng.integers(1, 4)))
    particles: list[Particle] = []
    for _ in range(count):
        if clustered:
            row = float(rng.choice(centres) + rng.normal(0.0, 9.0))
        else:
            row = float(rng.uniform(4, SIZE - 4))
        row = float(np.clip(row, 3, SIZE - 4))
        edge = float(scene_edge[_row_index(row)])
        gap = float(boundary[_row_index(row)]) - edge
        col = edge + float(rng.uniform(-8.0, 0.85 * gap))
        radius = float(rng.uniform(0.9, 2.6))
        on_foil = col < edge + radius
        if on_foil or rng.random() < 0.35:
            level = float(rng.uniform(5.0, max(band - 25.0, 10.0)))
        else:
            level = foil * float(rng.uniform(0.75, 1.0))
        particles.append(
            Particle(
                row=row,
                col=col,
                radius=radius,
                aspect=float(rng.uniform(1.0, 2.2)),
                angle=float(rng.uniform(0.0, 180.0)),
                level=level,
            )
        )
    return particles


def _dust(
    rng: np.random.Generator, edge: F32Array, boundary: F32Array, dark_below: float
) -> list[Particle]:
    """Dark specks far from the edge: on the coating or beyond the boundary line."""
    particles: list[Particle] = []
    for _ in range(int(rng.integers(1, 3))):
        row = float(rng.uniform(4, SIZE - 4))
        edge_col = float(edge[_row_index(row)])
        bnd_col = float(boundary[_row_index(row)])
        left_room = edge_col - 24.0
        right_room = SIZE - 4.0 - (bnd_col + 10.0)
        if left_room > 4.0 and (right_room <= 4.0 or rng.random() < 0.6):
            col = float(rng.uniform(4.0, left_room))
        elif right_room > 4.0:
            col = float(rng.uniform(bnd_col + 10.0, SIZE - 4.0))
        else:
            continue
        particles.append(
            Particle(
                row=row,
                col=col,
                radius=float(rng.uniform(0.7, 2.0)),
                aspect=float(rng.uniform(1.0, 1.8)),
                angle=float(rng.uniform(0.0, 180.0)),
                level=float(rng.uniform(5.0, max(dark_below - 20.0, 8.0))),
            )
        )
    return particles


def _crush(rng: np.random.Generator, edge: F32Array) -> tuple[F32Array, tuple[int, int]]:
    length = int(rng.integers(18, 71))
    start = int(rng.integers(4, SIZE - 4 - length))
    depth = float(rng.uniform(4.0, 14.0))
    window = np.abs(np.sin(np.linspace(0.0, np.pi, length, dtype=np.float32))) ** 0.6
    jagged = 0.65 + 0.35 * _profile(rng, max(length // 4, 3), length)
    ragged = rng.uniform(-0.8, 0.8, size=length).astype(np.float32)
    out = edge.copy()
    out[start : start + length] -= depth * window * jagged + ragged * window
    return out, (start, start + length)


def _tear(
    rng: np.random.Generator, edge: F32Array, boundary: F32Array
) -> tuple[F32Array, tuple[int, int]]:
    length = int(rng.integers(12, 51))
    start = int(rng.integers(4, SIZE - 4 - length))
    stop = start + length
    mid = (start + stop) // 2
    gap = float(boundary[mid] - edge[mid])
    left = float(edge[mid]) + float(rng.uniform(2.0, 0.4 * gap))
    right = float(boundary[mid]) + float(rng.uniform(4.0, 14.0))
    steps = 6
    top_rows = start + rng.uniform(-3.0, 3.0, size=steps)
    bottom_rows = stop + rng.uniform(-3.0, 3.0, size=steps)
    top_cols = np.linspace(left, right, steps)
    right_cols = right + rng.uniform(-3.0, 3.0, size=steps)
    side_rows = np.linspace(start, stop, steps)
    left_cols = left + rng.uniform(-3.0, 3.0, size=steps)
    points = np.concatenate(
        [
            np.stack([top_cols, top_rows], axis=1),
            np.stack([right_cols, side_rows], axis=1),
            np.stack([top_cols[::-1], bottom_rows[::-1]], axis=1),
            np.stack([left_cols[::-1], side_rows[::-1]], axis=1),
        ]
    ).astype(np.float32)
    return points, (start, stop)


def _base_scene(label: str, rng: np.random.Generator) -> Scene:
    """Edge, separator boundary and grey levels, without burrs, powder or defects."""
    edge0 = float(rng.uniform(50.0, 110.0))
    slope = float(rng.uniform(-0.05, 0.05))
    gap = float(rng.uniform(22.0, min(60.0, (205.0 - edge0) / 1.55)))
    gap_slope = float(rng.uniform(-0.015, 0.015))
    straight = (edge0 + slope * (_ROWS - _CENTRE)).astype(np.float32)
    wave = float(rng.uniform(0.2, 0.6))
    if rng.random() < 0.3:
        wave += float(rng.uniform(0.0, 1.0))
    edge = straight + wave * _profile(rng, int(rng.integers(3, 9)))
    boundary = (
        straight
        + gap
        + gap_slope * (_ROWS - _CENTRE)
        + float(rng.uniform(0.2, 0.8)) * _profile(rng, int(rng.integers(3, 9)))
    ).astype(np.float32)
    line_width = float(rng.uniform(1.5, 3.2))
    wrinkle = float(rng.uniform(0.3, 0.8)) if rng.random() < 0.3 else 0.0
    wrinkle_contrast = float(rng.choice([-1.0, 1.0])) * float(rng.uniform(5.0, 12.0))

    band = float(rng.uniform(55.0, 110.0))
    line = band + float(rng.choice([-1.0, 1.0])) * float(rng.uniform(22.0, 50.0))
    line = max(line, 8.0)
    outer = max(band + float(rng.uniform(-30.0, 20.0)), 15.0)
    foil = min(235.0, max(band, line, outer) + float(rng.uniform(50.0, 110.0)))
    coat = foil * float(rng.uniform(0.6, 0.9)) if rng.random() < 0.5 else foil
    return Scene(
        label=label,
        edge=edge.astype(np.float32),
        boundary=boundary,
        line_width=line_width,
        wrinkle=wrinkle,
        wrinkle_contrast=wrinkle_contrast,
        foil_level=foil,
        coat_level=coat,
        coat_depth=float(rng.uniform(15.0, 45.0)),
        band_level=band,
        line_level=line,
        outer_level=outer,
        burrs=(),
        particles=(),
        defect="none",
        defect_rows=(0, 0),
        defect_polygon=np.zeros((0, 2), dtype=np.float32),
        defect_level=0.0,
    )


def _with_burrs(scene: Scene, rng: np.random.Generator, *, long: bool) -> Scene:
    if long:
        rows = _pick_rows(rng, int(rng.integers(1, 3)) + int(rng.integers(0, 3)), 14.0)
        n_long = max(1, min(len(rows), int(rng.integers(1, 3))))
    else:
        rows = _pick_rows(rng, int(rng.integers(1, 5)), 12.0)
        n_long = 0
    burrs = tuple(
        (_long_burr if i < n_long else _short_burr)(
            rng, scene.edge, scene.boundary, row, scene.line_width
        )
        for i, row in enumerate(rows)
    )
    return replace(scene, burrs=burrs)


def _with_defect(scene: Scene, rng: np.random.Generator) -> Scene:
    if rng.random() < 0.5:
        edge, rows = _crush(rng, scene.edge)
        return replace(scene, edge=edge, defect="crush", defect_rows=rows)
    polygon, rows = _tear(rng, scene.edge, scene.boundary)
    if rng.random() < 0.6:
        dark = min(scene.band_level, scene.outer_level)
        level = float(rng.uniform(5.0, max(dark - 25.0, 8.0)))
    else:
        top = max(scene.band_level, scene.line_level, scene.outer_level)
        level = float(rng.uniform(top + 15.0, scene.foil_level - 35.0))
    return replace(
        scene, defect="break", defect_rows=rows, defect_polygon=polygon, defect_level=level
    )


def sample_scene(label: str, rng: np.random.Generator) -> Scene:
    """Sample the geometry and grey levels of one crop of class ``label``."""
    if label not in CLASSES:
        msg = f"unknown pole-piece class {label!r}; expected one of {CLASSES}"
        raise ValueError(msg)
    scene = _base_scene(label, rng)
    if label in {"Short", "Long"}:
        scene = _with_burrs(scene, rng, long=label == "Long")
    elif label == "Powder":
        specks = _powder(rng, scene.edge, scene.boundary, scene.foil_level, scene.band_level)
        scene = replace(scene, particles=tuple(specks))
    elif label == "Other":
        scene = _with_defect(scene, rng)
    if rng.random() < 0.3:
        dark = min(scene.band_level, scene.outer_level, scene.line_level)
        dust = _dust(rng, scene.edge, scene.boundary, dark)
        scene = replace(scene, particles=scene.particles + tuple(dust))
    return scene


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
        fibres = _field(rng, 48, 12) * float(rng.uniform(1.0, 4.0))
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
            level += _field(rng, 16, 16) * float(rng.uniform(1.0, 6.0))
        img += (level - img) * hole

    cover = np.clip(edge - _COLS + 0.5, 0.0, 1.0)
    if scene.burrs:
        burrs = _fill([_burr_polygon(scene, b) for b in scene.burrs])
        cover = np.maximum(cover, burrs)
    coat = np.clip(edge - scene.coat_depth - _COLS + 0.5, 0.0, 1.0)
    foil = scene.foil_level + (scene.coat_level - scene.foil_level) * coat
    if not clean:
        mottle = _field(rng, 7, 7) * float(rng.uniform(0.01, 0.05))
        streaks = _field(rng, 4, 56) * float(rng.uniform(0.01, 0.05))
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
        smear = darken * (1.0 + (0.0 if clean else 0.5) * _field(rng, 28, 28))
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
    img += _grain(rng) * scale
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
