"""The parts of a seal-edge scene: its geometry, grey levels, defect marks and their sampling.

Rows grow from the cell body (top) to the background (bottom); every line of the edge is one
row value per image column. Sizes are in pixels at ``PX_PER_MM``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from linevision.synth._common import (
    F32Array,
    ellipse_polygon,
    fill,
    profile,
    stroke,
)
from linevision.synth._common import uniform as _u

HEIGHT: Final = 128
WIDTH: Final = 512
PX_PER_MM: Final = 10.0
SEAL_MM: Final = 6.0
MARGIN_MM: Final = 1.0
MARGIN_TOL_MM: Final = 0.3
FLANGE_MM: Final = 0.5
TRIM_TOL_MM: Final = 0.2
_SHAPE: Final = (HEIGHT, WIDTH)
_COLS: Final = np.arange(WIDTH, dtype=np.float32)
_CENTRE_COL: Final = (WIDTH - 1) / 2.0


@dataclass(frozen=True, eq=False)
class Geometry:
    """Rows of the edge's lines, one value per image column."""

    body: F32Array
    seal_in: F32Array
    seal_out: F32Array
    trim: F32Array

    @property
    def margin_mm(self) -> F32Array:
        return np.asarray((self.seal_in - self.body) / PX_PER_MM, dtype=np.float32)

    @property
    def seal_mm(self) -> F32Array:
        end = np.minimum(self.seal_out, self.trim)
        return np.asarray((end - self.seal_in) / PX_PER_MM, dtype=np.float32)

    @property
    def flange_mm(self) -> F32Array:
        return np.asarray((self.trim - self.seal_out) / PX_PER_MM, dtype=np.float32)

    def lines(self) -> tuple[F32Array, F32Array, F32Array, F32Array]:
        """Body edge, seal lines (the outer one cut short by the trim) and trimmed edge."""
        return (self.body, self.seal_in, np.minimum(self.seal_out, self.trim), self.trim)


@dataclass(frozen=True)
class Look:
    body: float
    margin: float
    seal: float
    flange: float
    edge: float
    background: float
    emboss: float
    period: float
    angle: float
    phase: float
    imprint: float


@dataclass(frozen=True, eq=False)
class Mark:
    """A local defect: a filled polygon (``width`` 0) or a polyline, painted and/or shaded.

    The mark's pixels move towards ``level`` by ``opacity``; ``relief`` adds shading across
    the mark (light from the left), as a crease or a raised bubble shows it.
    """

    points: F32Array
    level: float
    opacity: float = 1.0
    width: float = 0.0
    relief: float = 0.0

    def cover(self) -> F32Array:
        if self.width > 0.0:
            return stroke(_SHAPE, self.points, self.width)
        return fill(_SHAPE, [self.points])


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def sample_base(rng: np.random.Generator) -> tuple[Geometry, Look]:
    tilt = _u(rng, -0.006, 0.006) * (_COLS - _CENTRE_COL)
    head = (_u(rng, 20.0, 30.0) + tilt).astype(np.float32)
    margin = _u(rng, MARGIN_MM - 0.22, MARGIN_MM + 0.22) * PX_PER_MM
    body = head - margin + _u(rng, 0.1, 0.5) * profile(rng, int(rng.integers(3, 9)), WIDTH)
    seal_out = head + SEAL_MM * PX_PER_MM + _u(rng, -0.5, 0.5)
    flange = _u(rng, FLANGE_MM - 0.15, FLANGE_MM + 0.15) * PX_PER_MM
    rough = 0.25 * profile(rng, int(rng.integers(40, 120)), WIDTH)
    trim = seal_out + flange + rough
    geometry = Geometry(body.astype(np.float32), head, seal_out.astype(np.float32), trim)
    seal = _u(rng, 115.0, 150.0)
    look = Look(
        body=_u(rng, 85.0, 130.0),
        margin=seal + _u(rng, 22.0, 50.0),
        seal=seal,
        flange=seal + _u(rng, 30.0, 60.0),
        edge=_u(rng, 220.0, 250.0),
        background=_u(rng, 12.0, 45.0),
        emboss=_u(rng, 14.0, 28.0),
        period=_u(rng, 5.0, 9.0),
        angle=_u(rng, 30.0, 60.0),
        phase=_u(rng, 0.0, 2.0 * np.pi),
        imprint=_u(rng, 10.0, 25.0),
    )
    return geometry, look


def misplace(geometry: Geometry, rng: np.random.Generator) -> Geometry:
    if rng.random() < 0.5:
        off = _u(rng, 0.5, 0.9) if rng.random() < 0.5 else -_u(rng, 0.5, 0.85)
        margin_now = float(geometry.margin_mm.mean())
        shift = np.float32((MARGIN_MM + off - margin_now) * PX_PER_MM)
        return replace(
            geometry,
            seal_in=geometry.seal_in + shift,
            seal_out=geometry.seal_out + shift,
            trim=geometry.trim + shift,
        )
    off = _sign(rng) * _u(rng, 0.4, 0.8)
    flange_now = float(geometry.flange_mm.mean())
    shift = np.float32((FLANGE_MM + off - flange_now) * PX_PER_MM)
    return replace(geometry, trim=geometry.trim + shift)


def make_uneven(geometry: Geometry, rng: np.random.Generator) -> Geometry:
    depth = _u(rng, 6.0, 16.0)
    room = float((geometry.seal_in - geometry.body).min()) - 3.0
    if depth <= room and rng.random() < 0.3:
        depth = -depth
    if rng.random() < 0.4:
        ramp = np.linspace(0.0, 1.0, WIDTH, dtype=np.float32)
        delta = depth * (ramp if rng.random() < 0.5 else ramp[::-1])
    else:
        length = _u(rng, 40.0, 200.0)
        centre = _u(rng, length / 3.0, WIDTH - length / 3.0)
        x = np.clip((_COLS - centre) / (length / 2.0), -1.0, 1.0)
        delta = depth * 0.5 * (1.0 + np.cos(np.pi * x))
    return replace(geometry, seal_in=(geometry.seal_in + delta).astype(np.float32))


def crack_marks(geometry: Geometry, look: Look, rng: np.random.Generator) -> list[Mark]:
    x0 = _u(rng, 20.0, WIDTH - 20.0)
    y0 = float(geometry.trim[round(x0)]) + 1.5
    if rng.random() < 0.3:
        half = _u(rng, 2.5, 12.0)
        depth = _u(rng, 3.0, 12.0)
        xs = np.linspace(x0 - half, x0 + half, 9)
        ys = y0 - 1.5 - depth * np.sin(np.linspace(0.0, np.pi, 9)) * rng.uniform(0.6, 1.0, 9)
        top = np.stack([xs, ys], axis=1)
        bottom = np.array([[x0 + half, y0 + 2.0], [x0 - half, y0 + 2.0]])
        polygon = np.concatenate([top, bottom]).astype(np.float32)
        return [Mark(polygon, look.background)]
    level = look.background + _u(rng, 0.0, 20.0)
    opacity = _u(rng, 0.8, 1.0)
    length = _u(rng, 8.0, 45.0)
    steps = int(rng.integers(4, 9))
    ys = y0 - np.linspace(0.0, length, steps)
    xs = x0 + np.cumsum(rng.uniform(-0.6, 0.6, steps) * length / steps)
    marks = [Mark(np.stack([xs, ys], axis=1).astype(np.float32), level, opacity, _u(rng, 0.8, 2.0))]
    if rng.random() < 0.4 and steps > 4:
        k = int(rng.integers(1, steps - 2))
        branch = _u(rng, 0.3, 0.6) * length
        bx = xs[k] + np.linspace(0.0, _sign(rng) * branch * 0.7, 4)
        by = ys[k] - np.linspace(0.0, branch * 0.7, 4)
        points = np.stack([bx, by], axis=1).astype(np.float32)
        marks.append(Mark(points, level, opacity, _u(rng, 0.7, 1.4)))
    return marks


def foreign_marks(geometry: Geometry, rng: np.random.Generator) -> list[Mark]:
    marks = []
    for _ in range(int(rng.integers(1, 4))):
        x = _u(rng, 10.0, WIDTH - 10.0)
        col = round(x)
        y = _u(rng, float(geometry.seal_in[col]) - 4.0, float(geometry.trim[col]) - 3.0)
        level = _u(rng, 5.0, 60.0) if rng.random() < 0.6 else _u(rng, 215.0, 250.0)
        if rng.random() < 0.7:
            r = _u(rng, 1.5, 6.0)
            radii = (r * _u(rng, 1.0, 2.0), r)
            scale = rng.uniform(0.8, 1.2, 16)
            polygon = ellipse_polygon((x, y), radii, _u(rng, 0.0, 180.0), scale)
            marks.append(Mark(polygon, level, _u(rng, 0.8, 1.0)))
        else:
            length = _u(rng, 15.0, 70.0)
            angle = _u(rng, 0.0, np.pi)
            bend = np.cumsum(rng.normal(0.0, 0.25, 8))
            t = np.linspace(-0.5, 0.5, 8) * length
            xs = x + t * np.cos(angle + 0.1 * bend)
            ys = y + t * np.sin(angle + 0.1 * bend)
            points = np.stack([xs, ys], axis=1).astype(np.float32)
            marks.append(Mark(points, level, _u(rng, 0.75, 1.0), _u(rng, 0.8, 1.6)))
    return marks


def wrinkle_marks(geometry: Geometry, look: Look, rng: np.random.Generator) -> list[Mark]:
    count = int(rng.integers(3, 9))
    spacing = _u(rng, 5.0, 15.0)
    start = _u(rng, 10.0, WIDTH - 10.0 - count * spacing)
    slant = _u(rng, -0.45, 0.45)
    contrast = _sign(rng) * _u(rng, 18.0, 40.0)
    marks = []
    for i in range(count):
        x = start + i * spacing + _u(rng, -1.5, 1.5)
        top = float(geometry.seal_in[round(x)]) - _u(rng, 2.0, 9.0)
        bottom = top + _u(rng, 14.0, 45.0)
        ys = np.linspace(top, bottom, 5)
        xs = x + slant * (ys - top) + rng.normal(0.0, 0.4, 5)
        points = np.stack([xs, ys], axis=1).astype(np.float32)
        marks.append(Mark(points, 0.0, 0.0, _u(rng, 1.0, 2.0), contrast * _u(rng, 0.7, 1.0)))
    if rng.random() < 0.5:
        xs = np.linspace(start - 4.0, start + count * spacing + 4.0, 12)
        seal_in = np.interp(xs, _COLS, geometry.seal_in)
        up = seal_in - rng.uniform(1.5, 4.0, 12)
        polygon = np.concatenate(
            [np.stack([xs, up], axis=1), np.stack([xs[::-1], seal_in[::-1] + 0.5], axis=1)]
        ).astype(np.float32)
        marks.append(Mark(polygon, min(look.margin + _u(rng, 25.0, 60.0), 245.0), 0.8))
    return marks


def bubble_marks(geometry: Geometry, look: Look, rng: np.random.Generator) -> list[Mark]:
    marks = []
    level = look.seal + _u(rng, 12.0, 35.0)
    if rng.random() < 0.3:
        x = _u(rng, 20.0, WIDTH - 20.0)
        half = _u(rng, 1.5, 4.5)
        top = float(geometry.seal_in[round(x)]) - 1.0
        bottom = float(min(geometry.seal_out[round(x)], geometry.trim[round(x)])) + 1.0
        lean = _u(rng, -6.0, 6.0)
        polygon = np.array(
            [
                [x - half, top],
                [x + half, top],
                [x + half + lean, bottom],
                [x - half + lean, bottom],
            ],
            dtype=np.float32,
        )
        return [Mark(polygon, level, 0.85, relief=_u(rng, 10.0, 25.0))]
    for _ in range(int(rng.integers(1, 4))):
        x = _u(rng, 25.0, WIDTH - 25.0)
        top = float(geometry.seal_in[round(x)])
        band = float(geometry.seal_out[round(x)]) - top
        ry = _u(rng, 3.0, min(14.0, band / 2.0 - 4.0))
        y = _u(rng, top + ry + 3.0, top + band - ry - 3.0)
        radii = (_u(rng, 5.0, 22.0), ry)
        polygon = ellipse_polygon((x, y), radii, _u(rng, -10.0, 10.0), rng.uniform(0.9, 1.1, 20))
        relief = _sign(rng) * _u(rng, 10.0, 25.0)
        marks.append(Mark(polygon, level, _u(rng, 0.7, 0.95), relief=relief))
    return marks
