"""Pole-piece scenes: the geometry and grey levels behind each generated crop.

In the canonical frame the coated foil fills the left of the crop and its cut edge runs
roughly vertically; the separator band lies right of the edge up to a boundary line.
``sample_scene`` draws one scene per class; ``linevision.synth.pole_piece`` renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal

import cv2
import numpy as np
import numpy.typing as npt

SIZE: Final = 224
CLASSES: Final = ("Normal", "Short", "Long", "Powder", "Other")

F32Array = npt.NDArray[np.float32]
Defect = Literal["none", "crush", "break"]

_CENTRE: Final = (SIZE - 1) / 2.0
_ROWS: Final = np.arange(SIZE, dtype=np.float32)
_MARGIN_ROWS: Final = 10
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


def smooth_field(rng: np.random.Generator, rows: int, cols: int) -> F32Array:
    """A smooth zero-mean random field of shape ``(SIZE, SIZE)``, unit standard deviation."""
    small = rng.standard_normal((rows, cols), dtype=np.float32)
    small *= np.float32(1.0 / max(float(small.std()), 1e-6))
    quarter = cv2.resize(small, (SIZE // 4, SIZE // 4), interpolation=cv2.INTER_CUBIC)
    return np.asarray(cv2.resize(quarter, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR))


def grain(rng: np.random.Generator) -> F32Array:
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
