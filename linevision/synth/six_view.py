"""Synthetic six-view captures of polymer pouch cells (seed 000) and their reference views.

A product ``Design`` (sizes, tabs, label print, grey levels) gives six reference design views;
each cell is built from it with small tolerances (tab position and length, label placement,
sheen) and captured with a small shift, rotation and scale per view and its own lighting, gain
and noise: the reason seed 000 compares CNN features, not pixels. An NG cell carries one
defect: a dent, scratch, stain or corner damage in one of the six views, or a deformed tab
(bent, folded or out of position), which shows in every view that sees that tab. View sizes
(rows x cols): faces 384 x 256, top and bottom edges 64 x 256, long edges 64 x 384.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np
import numpy.typing as npt

from linevision.synth._common import (
    F32Array,
    U8Image,
    check_dataset_args,
    ellipse_polygon,
    fill,
    grain,
    is_ng,
    sample_rng,
    smooth_field,
    stroke,
    to_u8,
    write_csv,
    write_image,
)
from linevision.synth._common import uniform as _u
from linevision.synth._six_view_parts import (
    END,
    FACE,
    SIDE,
    VIEW_SHAPES,
    VIEWS,
    Build,
    Design,
    body_box,
    draw_view,
    sample_design,
    tab_quad,
)

if TYPE_CHECKING:
    from pathlib import Path

CLASSES: Final = ("OK", "NG")
NG_KINDS: Final = ("dent", "scratch", "stain", "corner_damage", "tab_deform")
KINDS: Final = ("OK", *NG_KINDS)
__all__ = [
    "CLASSES",
    "END",
    "FACE",
    "KINDS",
    "NG_KINDS",
    "SIDE",
    "VIEWS",
    "VIEW_SHAPES",
    "Build",
    "Capture",
    "Cell",
    "Defect",
    "Design",
    "canonical_views",
    "defect_masks",
    "generate",
    "nominal_build",
    "reference_views",
    "render",
    "sample_cell",
    "sample_design",
    "write_dataset",
]

_MASK_LEVEL: Final = 6.0
_LEVEL_RANGE: Final = (10.0, 245.0)


@dataclass(frozen=True, eq=False)
class Defect:
    """A surface defect in one canonical view: a polygon, a polyline (``width`` > 0) or a dent.

    ``level``: a dent's depth, corner damage's grey (the background showing through), a
    stain's or scratch's contrast to the surface under it.
    """

    kind: str
    view: int
    points: F32Array
    level: float
    width: float = 0.0


@dataclass(frozen=True, eq=False)
class Cell:
    kind: str
    design: Design
    build: Build
    healthy: Build
    defect: Defect | None = None

    @property
    def label(self) -> str:
        return "OK" if self.kind == "OK" else "NG"

    def without_defect(self) -> Cell:
        return replace(self, kind="OK", build=self.healthy, defect=None)


@dataclass(frozen=True, eq=False)
class Capture:
    """Six captured views, their defect masks (255 = defect) and the canonical-to-view warps."""

    views: tuple[U8Image, ...]
    masks: tuple[U8Image, ...]
    matrices: tuple[npt.NDArray[np.float64], ...]
    kind: str = "OK"

    @property
    def label(self) -> str:
        return "OK" if self.kind == "OK" else "NG"


def nominal_build(design: Design) -> Build:
    """The cell exactly as designed: the build behind the reference views."""
    return Build((tab_quad(design, 0), tab_quad(design, 1)), (0.0, 0.0), (0.8, 0.0, 0.06))


def _build(design: Design, rng: np.random.Generator) -> Build:
    tabs = tuple(tab_quad(design, i, _u(rng, -1.0, 1.0), _u(rng, -1.5, 1.5)) for i in (0, 1))
    shift = (_u(rng, -1.5, 1.5), _u(rng, -1.5, 1.5))
    sheen = (_u(rng, 0.0, np.pi), _u(rng, -0.8, 0.8), _u(rng, 0.03, 0.12))
    return Build((tabs[0], tabs[1]), shift, sheen)


def _deform_tab(design: Design, build: Build, rng: np.random.Generator) -> Build:
    index = int(rng.integers(0, 2))
    quad = build.tabs[index].copy()
    style = rng.random()
    if style < 0.4:
        hinge = np.array([quad[:, 0].mean(), design.seal_top - 5.0], dtype=np.float32)
        angle = np.deg2rad((1.0 if rng.random() < 0.5 else -1.0) * _u(rng, 12.0, 35.0))
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        quad[:2] = ((quad[:2] - hinge) @ rot.T + hinge).astype(np.float32)
    elif style < 0.7:
        length = float(quad[2, 1] - quad[0, 1])
        quad[:2, 1] += _u(rng, 0.35, 0.6) * length
    else:
        quad[:, 0] += (1.0 if rng.random() < 0.5 else -1.0) * _u(rng, 5.0, 10.0)
    tabs = (quad, build.tabs[1]) if index == 0 else (build.tabs[0], quad)
    return replace(build, tabs=tabs)


def _surface_defect(kind: str, design: Design, rng: np.random.Generator) -> Defect:
    view = int(rng.choice(VIEWS))
    x0, y0, x1, y1 = body_box(design, view)
    small = min(x1 - x0, y1 - y0)
    dark = rng.random() < 0.6
    if kind == "corner_damage":
        cx, cy = (x0, x1)[int(rng.integers(0, 2))], (y0, y1)[int(rng.integers(0, 2))]
        sx, sy = (1.0 if cx == x0 else -1.0), (1.0 if cy == y0 else -1.0)
        legs = (_u(rng, 6.0, min(20.0, 0.45 * small)), _u(rng, 6.0, min(20.0, 0.45 * small)))
        t = np.linspace(0.0, 1.0, 6)[1:-1]
        cut = np.stack([cx + sx * legs[0] * (1.0 - t), cy + sy * legs[1] * t], axis=1)
        cut += rng.uniform(-1.2, 1.2, cut.shape)
        corner = np.array([[cx - 3.0 * sx, cy - 3.0 * sy], [cx + sx * legs[0], cy - 3.0 * sy]])
        end = np.array([[cx - 3.0 * sx, cy + sy * legs[1]]])
        polygon = np.concatenate([corner, cut, end]).astype(np.float32)
        return Defect(kind, view, polygon, design.background + _u(rng, 0.0, 25.0))
    margin = 0.2 * small
    centre = (_u(rng, x0 + margin, x1 - margin), _u(rng, y0 + margin, y1 - margin))
    if kind == "dent":
        radius = _u(rng, 4.0, min(16.0, 0.3 * small))
        shape = np.array([[centre[0], centre[1]], [radius * _u(rng, 1.0, 1.8), radius]])
        return Defect(kind, view, shape.astype(np.float32), _u(rng, 18.0, 40.0))
    if kind == "scratch":
        length = _u(rng, 15.0, min(150.0, 0.8 * max(x1 - x0, y1 - y0)))
        angle = _u(rng, 0.0, np.pi)
        t = np.linspace(-0.5, 0.5, 6) * length
        curve = _u(rng, -0.08, 0.08) * length * (1.0 - (2.0 * t / length) ** 2)
        xs = np.clip(centre[0] + t * np.cos(angle) - curve * np.sin(angle), x0 + 2.0, x1 - 2.0)
        ys = np.clip(centre[1] + t * np.sin(angle) + curve * np.cos(angle), y0 + 2.0, y1 - 2.0)
        delta = -_u(rng, 35.0, 70.0) if dark else _u(rng, 35.0, 70.0)
        points = np.stack([xs, ys], axis=1).astype(np.float32)
        return Defect(kind, view, points, delta, _u(rng, 0.8, 1.6))
    radius = _u(rng, 5.0, min(22.0, 0.35 * small))
    radii = (radius * _u(rng, 1.0, 1.8), radius)
    polygon = ellipse_polygon(centre, radii, _u(rng, 0.0, 180.0), rng.uniform(0.6, 1.3, 14))
    delta = -_u(rng, 25.0, 60.0) if dark else _u(rng, 25.0, 50.0)
    return Defect(kind, view, polygon, delta)


def sample_cell(design: Design, kind: str, rng: np.random.Generator) -> Cell:
    """Sample one cell of ``design``: ``kind`` is ``"OK"`` or one of ``NG_KINDS``."""
    if kind not in KINDS:
        msg = f"unknown six-view kind {kind!r}; expected one of {KINDS}"
        raise ValueError(msg)
    healthy = _build(design, rng)
    if kind == "tab_deform":
        return Cell(kind, design, _deform_tab(design, healthy, rng), healthy)
    defect = None if kind == "OK" else _surface_defect(kind, design, rng)
    return Cell(kind, design, healthy, healthy, defect)


def _apply(img: F32Array, defect: Defect) -> None:
    shape = (img.shape[0], img.shape[1])
    if defect.kind == "dent":
        (cx, cy), (rx, ry) = defect.points
        rows = np.arange(shape[0], dtype=np.float32)[:, None] - cy
        cols = np.arange(shape[1], dtype=np.float32)[None, :] - cx
        bump = np.exp(-((cols / rx) ** 2 + (rows / ry) ** 2))
        img += defect.level * bump * (-2.0 * cols / rx - 0.4)
        return
    if defect.kind == "scratch":
        cover = stroke(shape, defect.points, defect.width)
    else:
        cover = fill(shape, [defect.points])
    if defect.kind == "corner_damage":
        img += (defect.level - img) * cover
        return
    if defect.kind == "stain":
        cover = np.asarray(cv2.GaussianBlur(cover, (0, 0), 1.5), dtype=np.float32) * 0.8
    img += (_surface_level(img, cover, defect.level) - img) * cover


def _surface_level(img: F32Array, cover: F32Array, contrast: float) -> float:
    """The grey of a stain or scratch: ``contrast`` from the surface it lies on.

    The surface is the median under the defect (a face, an edge, the label print); the sign
    flips when the level would leave the 8-bit range, so the defect always shows.
    """
    if not np.any(cover > 0.0):
        return float(np.median(img))
    base = float(np.median(img[cover >= 0.5 * float(cover.max())]))
    level = base + contrast
    return level if _LEVEL_RANGE[0] <= level <= _LEVEL_RANGE[1] else base - contrast


def canonical_views(cell: Cell) -> tuple[F32Array, ...]:
    """The six views of ``cell`` before capture (no warp, lighting or noise)."""
    views = []
    for view in VIEWS:
        img = draw_view(cell.design, cell.build, view)
        if cell.defect is not None and cell.defect.view == view:
            _apply(img, cell.defect)
        views.append(img)
    return tuple(views)


def defect_masks(cell: Cell) -> tuple[U8Image, ...]:
    """Per canonical view, 255 where the cell differs visibly from itself without the defect."""
    if cell.kind == "OK":
        return tuple(np.zeros(s, dtype=np.uint8) for s in VIEW_SHAPES)
    healthy = canonical_views(cell.without_defect())
    masks = []
    for now, then in zip(canonical_views(cell), healthy, strict=True):
        moved = (np.abs(now - then) > _MASK_LEVEL).astype(np.uint8)
        masks.append(np.asarray(cv2.dilate(moved, np.ones((3, 3), np.uint8)) * 255, np.uint8))
    return tuple(masks)


def _capture(
    img: F32Array, mask: U8Image, rng: np.random.Generator
) -> tuple[U8Image, U8Image, npt.NDArray[np.float64]]:
    h, w = img.shape
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    matrix = np.asarray(
        cv2.getRotationMatrix2D(centre, _u(rng, -2.0, 2.0), _u(rng, 0.985, 1.015)), np.float64
    )
    matrix[:, 2] += rng.uniform(-5.0, 5.0, size=2)
    size = (w, h)
    out = np.asarray(
        cv2.warpAffine(img, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
        dtype=np.float32,
    )
    moved = cv2.warpAffine(mask, matrix, size, flags=cv2.INTER_NEAREST)
    rows = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    cols = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    light = 1.0 + _u(rng, -0.1, 0.1) * cols + _u(rng, -0.1, 0.1) * rows
    out = out * light * _u(rng, 0.85, 1.15) + _u(rng, -8.0, 8.0)
    out += smooth_field(rng, (6, 4), (h, w)) * _u(rng, 1.0, 4.0)
    out = np.asarray(cv2.GaussianBlur(out, (0, 0), _u(rng, 0.4, 0.9)), dtype=np.float32)
    out += grain(rng, (h, w)) * _u(rng, 1.5, 3.5)
    return to_u8(out), np.asarray(moved, dtype=np.uint8), matrix


def render(cell: Cell, rng: np.random.Generator, *, clean: bool = False) -> Capture:
    """Capture the six views of ``cell``; ``clean=True``: no warp, lighting or noise.

    The draws from ``rng`` do not depend on the cell, so two cells captured with equal
    generators get the same warps, lighting and noise.
    """
    views, masks = canonical_views(cell), defect_masks(cell)
    if clean:
        eye = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        return Capture(tuple(to_u8(v) for v in views), masks, (eye,) * 6, cell.kind)
    shots = [_capture(v, m, rng) for v, m in zip(views, masks, strict=True)]
    return Capture(
        tuple(s[0] for s in shots),
        tuple(s[1] for s in shots),
        tuple(s[2] for s in shots),
        cell.kind,
    )


def reference_views(design: Design) -> tuple[U8Image, ...]:
    """The six reference design views: the nominal cell, clean and aligned."""
    cell = Cell("OK", design, nominal_build(design), nominal_build(design))
    return render(cell, np.random.default_rng(0), clean=True).views


def generate(design: Design, kind: str, rng: np.random.Generator) -> Capture:
    """The six captured views of one cell of ``design`` of ``kind``, with defect masks."""
    return render(sample_cell(design, kind, rng), rng)


def dataset_kind(index: int, ng_fraction: float) -> str:
    """The kind of cell ``index`` of a dataset: NG kinds take turns among the NG cells."""
    if not is_ng(index, ng_fraction):
        return "OK"
    return NG_KINDS[int(index * ng_fraction) % len(NG_KINDS)]


def dataset_design(seed: int) -> Design:
    """The product of a dataset written with ``seed``."""
    return sample_design(sample_rng(seed, 0))


def write_dataset(
    out_dir: Path,
    n: int,
    seed: int,
    *,
    ng_fraction: float = 0.5,
    design_seed: int | None = None,
) -> int:
    """Write ``reference/1..6.png``, ``<cell>/1..6.png`` and ``labels.csv``; return ``n``.

    The product is ``dataset_design(design_seed)`` (default ``seed``), the cells are drawn
    from ``seed``: two folders with one ``design_seed`` and different seeds hold disjoint
    cells of one product (good cells to calibrate on, and a test set).
    """
    check_dataset_args(n, ng_fraction)
    design = dataset_design(seed if design_seed is None else design_seed)
    for view, image in zip(VIEWS, reference_views(design), strict=True):
        write_image(out_dir / "reference" / f"{view}.png", image)
    rows = []
    for i in range(n):
        kind = dataset_kind(i, ng_fraction)
        capture = generate(design, kind, sample_rng(seed, 1, i))
        cell = f"{i:05d}_{kind}"
        for view, image in zip(VIEWS, capture.views, strict=True):
            write_image(out_dir / cell / f"{view}.png", image)
        rows.append((cell, capture.label, kind))
    write_csv(out_dir / "labels.csv", ("cell", "label", "kind"), rows)
    return n
