"""A pouch cell's design and how each of its six views is drawn (canonical, before capture).

Views: 1 front face (printed label), 2 back face (printed code; seen from behind, so mirrored),
3 tab edge (top, tabs seen end-on), 4 bottom edge, 5 left and 6 right long edge (folded side
seals). Faces are 384 x 256 (rows x cols) with the tabs at the top; the top and bottom edges
are 64 x 256 and the long edges 64 x 384, the cell's thickness running across the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from linevision.synth._common import F32Array, fill
from linevision.synth._common import uniform as _u

FACE: Final = (384, 256)
END: Final = (64, 256)
SIDE: Final = (64, 384)
VIEW_SHAPES: Final = (FACE, FACE, END, END, SIDE, SIDE)
VIEWS: Final = (1, 2, 3, 4, 5, 6)
_SIDE_START: Final = 24.0

Box = tuple[float, float, float, float]
Quad = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Design:
    """One product: sizes in face-view pixels, grey levels, the label's print."""

    body: Box
    seal_top: float
    tab_width: float
    tab_top: float
    tab_centres: tuple[float, float]
    thickness: tuple[float, float]
    pouch: float
    seal: float
    tabs: tuple[float, float]
    glue: float
    background: float
    label_box: Box
    label: float
    prints: npt.NDArray[np.float32]
    code: npt.NDArray[np.uint8]


@dataclass(frozen=True, eq=False)
class Build:
    """How one cell of the design came out: tab outlines (face view 1), label offset, sheen."""

    tabs: tuple[Quad, Quad]
    label_shift: tuple[float, float]
    sheen: tuple[float, float, float]


def tab_quad(design: Design, index: int, dx: float = 0.0, dlen: float = 0.0) -> Quad:
    """Tab ``index`` (0 left, 1 right in view 1) as four (x, y) corners, tip first."""
    c = design.tab_centres[index] + dx
    half = design.tab_width / 2.0
    top = design.tab_top - dlen
    bottom = design.seal_top + 6.0
    return np.array(
        [[c - half, top], [c + half, top], [c + half, bottom], [c - half, bottom]], dtype=np.float32
    )


def sample_design(rng: np.random.Generator) -> Design:
    w, h = FACE[1], FACE[0]
    x0 = _u(rng, 20.0, 30.0)
    y0 = _u(rng, 62.0, 76.0)
    body = (x0, y0, w - x0, h - _u(rng, 16.0, 26.0))
    seal_top = y0 - _u(rng, 20.0, 28.0)
    half_t = _u(rng, 14.0, 20.0)
    thickness = (END[0] / 2.0 - half_t, END[0] / 2.0 + half_t)
    bw, bh = body[2] - body[0], body[3] - body[1]
    lx0 = body[0] + bw * _u(rng, 0.12, 0.2)
    ly0 = body[1] + bh * _u(rng, 0.15, 0.3)
    label_box = (lx0, ly0, body[2] - bw * _u(rng, 0.12, 0.2), ly0 + bh * _u(rng, 0.3, 0.45))
    return Design(
        body=body,
        seal_top=seal_top,
        tab_width=_u(rng, 28.0, 40.0),
        tab_top=_u(rng, 8.0, 16.0),
        tab_centres=(x0 + bw * _u(rng, 0.24, 0.32), x0 + bw * _u(rng, 0.68, 0.76)),
        thickness=thickness,
        pouch=_u(rng, 135.0, 170.0),
        seal=_u(rng, 150.0, 185.0),
        tabs=(_u(rng, 195.0, 225.0), _u(rng, 160.0, 190.0)),
        glue=_u(rng, 200.0, 235.0),
        background=_u(rng, 15.0, 40.0),
        label_box=label_box,
        label=_u(rng, 200.0, 235.0),
        prints=_sample_prints(rng, label_box),
        code=(rng.random((12, 12)) < 0.5).astype(np.uint8),
    )


def _sample_prints(rng: np.random.Generator, box: Box) -> npt.NDArray[np.float32]:
    """Dark print on the label as (x0, y0, x1, y1) rectangles: text lines and a barcode."""
    x0, y0, x1, y1 = box
    rects: list[tuple[float, float, float, float]] = []
    y = y0 + 6.0
    for _ in range(int(rng.integers(2, 5))):
        x = x0 + 6.0
        end = x1 - 6.0 - _u(rng, 0.0, 0.4) * (x1 - x0)
        height = _u(rng, 4.0, 8.0)
        while x < end:
            word = _u(rng, 6.0, 22.0)
            rects.append((x, y, min(x + word, end), y + height))
            x += word + _u(rng, 3.0, 6.0)
        y += height + _u(rng, 4.0, 8.0)
    x = x0 + 8.0
    bar_bottom = y1 - 6.0
    bar_top = max(y + 2.0, bar_bottom - 26.0)
    while x < x1 - 10.0:
        bar = float(rng.choice([1.0, 2.0, 3.0]))
        rects.append((x, bar_top, x + bar, bar_bottom))
        x += bar + float(rng.choice([1.0, 2.0, 3.0]))
    return np.array(rects, dtype=np.float32)


def _rounded(box: Box, radius: float) -> F32Array:
    x0, y0, x1, y1 = box
    t = np.linspace(0.0, np.pi / 2.0, 6)
    arcs = []
    for cx, cy, start in (
        (x1 - radius, y1 - radius, 0.0),
        (x0 + radius, y1 - radius, np.pi / 2.0),
        (x0 + radius, y0 + radius, np.pi),
        (x1 - radius, y0 + radius, 1.5 * np.pi),
    ):
        arcs.append(np.stack([cx + radius * np.cos(start + t), cy + radius * np.sin(start + t)], 1))
    return np.concatenate(arcs).astype(np.float32)


def _shoulder(cover: F32Array, width: float) -> F32Array:
    """1 deep inside a region, falling towards its border like a rounded pouch edge."""
    inside = (cover > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    return np.asarray(1.0 - 0.3 * np.exp(-dist / width), dtype=np.float32)


def _sheen(shape: tuple[int, int], sheen: tuple[float, float, float]) -> F32Array:
    """A soft specular band across the view (computed coarse, then resized: it is smooth)."""
    rows = np.linspace(-1.0, 1.0, shape[0] // 8, dtype=np.float32)[:, None]
    cols = np.linspace(-1.0, 1.0, shape[1] // 8, dtype=np.float32)[None, :]
    angle, offset, strength = sheen
    u = cols * np.cos(angle) + rows * np.sin(angle) - offset
    coarse = np.asarray(1.0 + strength * np.exp(-(u**2) / 0.08), dtype=np.float32)
    return np.asarray(cv2.resize(coarse, (shape[1], shape[0])), dtype=np.float32)


_TAB_SHEEN: Final = 0.92 + 0.08 * _sheen(FACE, (1.57, -0.6, 0.5))


def _paint(img: F32Array, cover: F32Array, level: float | F32Array) -> None:
    img += (level - img) * cover


def face(design: Design, build: Build, *, back: bool) -> F32Array:
    """View 1 (``back=False``) or view 2, before capture."""
    d = design
    img = np.full(FACE, d.background, dtype=np.float32)
    x0, y0, x1, _ = d.body
    terrace = fill(
        FACE, [np.array([[x0, d.seal_top], [x1, d.seal_top], [x1, y0 + 4.0], [x0, y0 + 4.0]])]
    )
    _paint(img, terrace, d.seal)
    for quad, level in zip(build.tabs, d.tabs, strict=True):
        cover = fill(FACE, [quad])
        _paint(img, cover, level * _TAB_SHEEN)
        cx = float(quad[:, 0].mean())
        half = d.tab_width / 2.0 + 4.0
        glue = np.array(
            [
                [cx - half, d.seal_top - 5.0],
                [cx + half, d.seal_top - 5.0],
                [cx + half, d.seal_top + 5.0],
                [cx - half, d.seal_top + 5.0],
            ]
        )
        _paint(img, fill(FACE, [glue]) * 0.85, d.glue)
    body = fill(FACE, [_rounded(d.body, 8.0)])
    _paint(img, body, d.pouch * _shoulder(body, 5.0) * _sheen(FACE, build.sheen))
    if back:
        _code(img, d)
    else:
        _label(img, d, build.label_shift)
    return np.ascontiguousarray(img[:, ::-1]) if back else img


def _label(img: F32Array, d: Design, shift: tuple[float, float]) -> None:
    offset = np.array([shift[0], shift[1]], dtype=np.float32)
    x0, y0, x1, y1 = d.label_box
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32) + offset
    _paint(img, fill(FACE, [corners]), d.label)
    polys = [
        np.array([[a, b], [c, b], [c, e], [a, e]], dtype=np.float32) + offset
        for a, b, c, e in d.prints
    ]
    _paint(img, fill(FACE, polys) * 0.9, 35.0)


def _code(img: F32Array, d: Design) -> None:
    cell = 3.0
    x0 = d.body[0] + 20.0
    y0 = d.body[3] - 20.0 - cell * d.code.shape[0]
    rows, cols = np.nonzero(d.code)
    polys = [
        np.array(
            [
                [x0 + c * cell, y0 + r * cell],
                [x0 + (c + 1) * cell, y0 + r * cell],
                [x0 + (c + 1) * cell, y0 + (r + 1) * cell],
                [x0 + c * cell, y0 + (r + 1) * cell],
            ]
        )
        for r, c in zip(rows, cols, strict=True)
    ]
    _paint(img, fill(FACE, polys) * 0.8, 40.0)


def _band(
    shape: tuple[int, int], design: Design, x0: float, x1: float
) -> tuple[F32Array, F32Array]:
    """The pouch seen edge-on: its coverage and its level, rounded across the thickness."""
    t0, t1 = design.thickness
    box = (x0, t0, x1, t1)
    cover = fill(shape, [_rounded(box, 4.0)])
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    across = np.clip((rows - t0) / (t1 - t0), 0.0, 1.0)
    level = (
        design.pouch * (0.72 + 0.3 * np.sin(np.pi * across)) * np.ones((1, shape[1]), np.float32)
    )
    return cover, np.asarray(level, dtype=np.float32)


def end_view(design: Design, build: Build, *, tabs: bool) -> F32Array:
    """View 3 (``tabs=True``, the tab edge seen from above) or view 4 (bottom edge)."""
    d = design
    img = np.full(END, d.background, dtype=np.float32)
    cover, level = _band(END, d, d.body[0], d.body[2])
    _paint(img, cover, level)
    mid = END[0] / 2.0
    flange = np.array(
        [
            [d.body[0], mid - 1.5],
            [d.body[2], mid - 1.5],
            [d.body[2], mid + 1.5],
            [d.body[0], mid + 1.5],
        ]
    )
    _paint(img, fill(END, [flange]), d.seal if tabs else d.pouch * 0.6)
    if tabs:
        for quad, metal in zip(build.tabs, d.tabs, strict=True):
            a, b = float(quad[0, 0]), float(quad[1, 0])
            glue = np.array(
                [
                    [a - 4.0, mid - 4.5],
                    [b + 4.0, mid - 4.5],
                    [b + 4.0, mid + 4.5],
                    [a - 4.0, mid + 4.5],
                ]
            )
            _paint(img, fill(END, [glue]) * 0.85, d.glue)
            tip = np.array([[a, mid - 1.5], [b, mid - 1.5], [b, mid + 1.5], [a, mid + 1.5]])
            _paint(img, fill(END, [tip]), metal)
    return img


def side_col(design: Design, face_row: float) -> float:
    """The column in views 5 and 6 (before view 6's mirroring) of a face-view row."""
    return _SIDE_START + face_row - design.tab_top


def side_view(design: Design, build: Build, *, right: bool) -> F32Array:
    """View 5 (left long edge) or view 6 (right long edge, mirrored): side seal folded flat."""
    d = design
    img = np.full(SIDE, d.background, dtype=np.float32)
    mid = SIDE[0] / 2.0
    tip = side_col(d, float(build.tabs[1 if right else 0][0, 1]))
    a = side_col(d, d.seal_top)
    b = side_col(d, d.body[1])
    tab = np.array([[tip, mid - 1.0], [a, mid - 1.0], [a, mid + 1.0], [tip, mid + 1.0]])
    _paint(img, fill(SIDE, [tab]), d.tabs[1 if right else 0])
    terrace = np.array([[a, mid - 2.0], [b, mid - 2.0], [b, mid + 2.0], [a, mid + 2.0]])
    _paint(img, fill(SIDE, [terrace]), d.seal)
    cover, level = _band(SIDE, d, b - 4.0, side_col(d, d.body[3]))
    _paint(img, cover, level)
    t0, t1 = d.thickness
    fold = np.array(
        [
            [b + 4.0, t0 + 4.0],
            [side_col(d, d.body[3]) - 4.0, t0 + 4.0],
            [side_col(d, d.body[3]) - 4.0, t1 - 4.0],
            [b + 4.0, t1 - 4.0],
        ]
    )
    _paint(img, fill(SIDE, [fold]) * 0.7, d.seal)
    edge = fold.copy()
    edge[2:, 1] = t0 + 5.5
    _paint(img, fill(SIDE, [edge]) * 0.6, min(d.seal + 40.0, 250.0))
    return np.ascontiguousarray(img[:, ::-1]) if right else img


def body_box(design: Design, view: int) -> Box:
    """The pouch body's bounding box in canonical view ``view`` (1..6)."""
    x0, y0, x1, y1 = design.body
    t0, t1 = design.thickness
    if view == 1:
        return design.body
    if view == 2:
        return (FACE[1] - x1, y0, FACE[1] - x0, y1)
    if view in {3, 4}:
        return (x0, t0, x1, t1)
    a, b = side_col(design, y0), side_col(design, y1)
    if view == 5:
        return (a, t0, b, t1)
    return (SIDE[1] - b, t0, SIDE[1] - a, t1)


def draw_view(design: Design, build: Build, view: int) -> F32Array:
    if view in {1, 2}:
        return face(design, build, back=view == 2)
    if view in {3, 4}:
        return end_view(design, build, tabs=view == 3)
    return side_view(design, build, right=view == 6)
