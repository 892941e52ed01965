"""Synthetic seal-edge images of pouch cells (seed 001) and the reference image of a good seal.

An image is a 128 x 512 grayscale strip at 10 px/mm (12.8 mm across the edge, 51.2 mm along
it); the sealed edge runs along the strip. From top to bottom: the cell body with the pouch
shoulder, the unsealed margin (set point 1.0 mm, tolerance +-0.3 mm; the machine allows set
points of 0.5-2.0 mm), the 6.0 mm seal band with the seal head's knurl embossing, the flange
left by the trim knife (0.5 mm, trim accuracy +-0.2 mm), the cut edge catching the light, and
the dark background. OK seals vary in position, tilt, margin, flange, grey levels and
lighting within those tolerances; each NG kind is one of the defects the patent names, some of
them subtle. A scene (geometry, grey levels, defect marks) is sampled first and then rendered,
so the defect mask and the same cell without its defect are available to tests and training.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

from linevision.synth._common import (
    F32Array,
    U8Image,
    check_dataset_args,
    grain,
    is_ng,
    sample_rng,
    smooth_field,
    to_u8,
    write_csv,
    write_image,
)
from linevision.synth._common import uniform as _u
from linevision.synth._seal_parts import (
    FLANGE_MM,
    HEIGHT,
    MARGIN_MM,
    MARGIN_TOL_MM,
    PX_PER_MM,
    SEAL_MM,
    TRIM_TOL_MM,
    WIDTH,
    Geometry,
    Look,
    Mark,
    bubble_marks,
    crack_marks,
    foreign_marks,
    make_uneven,
    misplace,
    sample_base,
    wrinkle_marks,
)

if TYPE_CHECKING:
    from pathlib import Path

CLASSES: Final = ("OK", "NG")
NG_KINDS: Final = ("crack", "uneven_width", "foreign_matter", "wrinkle", "bubble", "misplaced")
KINDS: Final = ("OK", *NG_KINDS)
__all__ = [
    "CLASSES",
    "FLANGE_MM",
    "HEIGHT",
    "KINDS",
    "MARGIN_MM",
    "MARGIN_TOL_MM",
    "NG_KINDS",
    "PX_PER_MM",
    "SEAL_MM",
    "TRIM_TOL_MM",
    "WIDTH",
    "Geometry",
    "Look",
    "Mark",
    "Scene",
    "SealSample",
    "dataset_kind",
    "defect_mask",
    "generate",
    "nominal_scene",
    "reference",
    "render",
    "sample_scene",
    "write_dataset",
]

_SHAPE: Final = (HEIGHT, WIDTH)
_ROWS: Final = np.arange(HEIGHT, dtype=np.float32)[:, None]
_COLS: Final = np.arange(WIDTH, dtype=np.float32)
_CENTRE_COL: Final = (WIDTH - 1) / 2.0


@dataclass(frozen=True, eq=False)
class Scene:
    """One seal: its geometry, the same cell's geometry without a geometric defect, marks."""

    kind: str
    geometry: Geometry
    healthy: Geometry
    look: Look
    marks: tuple[Mark, ...] = ()

    @property
    def label(self) -> str:
        return "OK" if self.kind == "OK" else "NG"

    def without_defect(self) -> Scene:
        return replace(self, kind="OK", geometry=self.healthy, marks=())


@dataclass(frozen=True, eq=False)
class SealSample:
    image: U8Image
    mask: U8Image
    kind: str

    @property
    def label(self) -> str:
        return "OK" if self.kind == "OK" else "NG"


def sample_scene(kind: str, rng: np.random.Generator) -> Scene:
    """Sample one seal of ``kind`` (``"OK"`` or one of ``NG_KINDS``)."""
    if kind not in KINDS:
        msg = f"unknown seal-edge kind {kind!r}; expected one of {KINDS}"
        raise ValueError(msg)
    healthy, look = sample_base(rng)
    geometry = healthy
    marks: list[Mark] = []
    if kind == "misplaced":
        geometry = misplace(healthy, rng)
    elif kind == "uneven_width":
        geometry = make_uneven(healthy, rng)
    elif kind == "crack":
        marks = crack_marks(healthy, look, rng)
    elif kind == "foreign_matter":
        marks = foreign_marks(healthy, rng)
    elif kind == "wrinkle":
        marks = wrinkle_marks(healthy, look, rng)
    elif kind == "bubble":
        marks = bubble_marks(healthy, look, rng)
    return Scene(kind, geometry, healthy, look, tuple(marks))


def _below(line: F32Array) -> F32Array:
    return np.asarray(np.clip(_ROWS - line[None, :] + 0.5, 0.0, 1.0), dtype=np.float32)


def _on(line: F32Array, width: float) -> F32Array:
    return np.asarray(
        np.clip(width / 2.0 + 0.5 - np.abs(_ROWS - line[None, :]), 0.0, 1.0), dtype=np.float32
    )


_ZERO: Final = np.zeros(_SHAPE, dtype=np.float32)


def _canonical(scene: Scene, fields: tuple[F32Array, F32Array, F32Array]) -> F32Array:
    g, k = scene.geometry, scene.look
    mottle, ripple, pressure = fields
    seal_end = np.minimum(g.seal_out, g.trim)
    above = np.maximum(g.body[None, :] - _ROWS, 0.0)
    img = k.body * (1.0 - 0.35 * np.exp(-above / 4.0)) + 12.0 * np.exp(
        -(((above - 10.0) / 5.0) ** 2)
    )
    img = img + mottle
    img += (k.margin + ripple - img) * _below(g.body)
    a = np.deg2rad(k.angle)
    u = (2.0 * np.pi / k.period) * (_COLS[None, :] * np.cos(a) + _ROWS * np.sin(a))
    v = (2.0 * np.pi / k.period) * (_COLS[None, :] * np.cos(a) - _ROWS * np.sin(a))
    knurl = np.tanh(1.5 * np.sin(u + k.phase)) + np.tanh(1.5 * np.sin(v - k.phase))
    seal = k.seal + 0.5 * k.emboss * knurl * (1.0 + pressure)
    img += (seal - img) * _below(g.seal_in)
    img += (k.flange + ripple - img) * _below(seal_end)
    img -= k.imprint * (_on(g.seal_in, 1.5) + _on(seal_end, 1.5) * (g.seal_out < g.trim))
    img += (k.edge - img) * _on(g.trim - 0.75, 1.5)
    img += (k.background - img) * _below(g.trim)
    for mark in scene.marks:
        cover = mark.cover()
        if mark.opacity > 0.0:
            img += (mark.level - img) * cover * mark.opacity
        if mark.relief != 0.0:
            img += mark.relief * (np.roll(cover, 1, axis=1) - np.roll(cover, -1, axis=1))
    return np.asarray(img, dtype=np.float32)


def render(scene: Scene, rng: np.random.Generator, *, clean: bool = False) -> U8Image:
    """Render ``scene`` to a ``HEIGHT`` x ``WIDTH`` uint8 image.

    The draws from ``rng`` do not depend on the scene, so two scenes rendered with equal
    generators differ only where their content differs. ``clean=True`` leaves out texture
    variation, lighting, blur and noise and draws nothing.
    """
    if clean:
        return to_u8(_canonical(scene, (_ZERO, _ZERO, _ZERO)))
    fields = (
        smooth_field(rng, (4, 16), _SHAPE) * _u(rng, 1.5, 6.0),
        smooth_field(rng, (3, 24), _SHAPE) * _u(rng, 1.5, 6.0),
        smooth_field(rng, (4, 32), _SHAPE) * _u(rng, 0.05, 0.2),
    )
    img = _canonical(scene, fields)
    gx, gy = _u(rng, -0.12, 0.12), _u(rng, -0.08, 0.08)
    cols = (_COLS[None, :] - _CENTRE_COL) / _CENTRE_COL
    rows = (_ROWS - HEIGHT / 2.0) / (HEIGHT / 2.0)
    light = 1.0 + gx * cols + gy * rows - _u(rng, 0.0, 0.1) * cols**2
    img = img * light * _u(rng, 0.85, 1.15) + _u(rng, -10.0, 10.0)
    img = np.asarray(cv2.GaussianBlur(img, (0, 0), _u(rng, 0.4, 0.9)), dtype=np.float32)
    sigma, shot = _u(rng, 1.5, 4.0), _u(rng, 0.0, 0.25)
    img += grain(rng, _SHAPE) * (sigma + shot * np.sqrt(np.maximum(img, 0.0)))
    return to_u8(img)


def defect_mask(scene: Scene) -> U8Image:
    """255 where the seal differs from the same cell without its defect, else 0."""
    moved = np.zeros(_SHAPE, dtype=bool)
    for now, then in zip(scene.geometry.lines(), scene.healthy.lines(), strict=True):
        moved |= np.abs(_below(now) - _below(then)) > 0.1
    mask = cv2.dilate(moved.astype(np.uint8), np.ones((3, 3), np.uint8))
    for mark in scene.marks:
        cover = mark.cover()
        if mark.relief != 0.0:
            mask[cv2.dilate(cover, np.ones((1, 3), np.uint8)) > 0.3] = 1
        mask[cover > 0.3] = 1
    return np.asarray(mask * 255, dtype=np.uint8)


def nominal_scene() -> Scene:
    """The design seal: centred, square to the strip, every dimension at its set point."""
    head = np.full(WIDTH, 15.0 + MARGIN_MM * PX_PER_MM, dtype=np.float32)
    seal_out = head + SEAL_MM * PX_PER_MM
    geometry = Geometry(
        head - MARGIN_MM * PX_PER_MM, head, seal_out, seal_out + FLANGE_MM * PX_PER_MM
    )
    look = Look(108.0, 168.0, 132.0, 177.0, 235.0, 28.0, 21.0, 7.0, 45.0, 0.0, 17.0)
    return Scene("OK", geometry, geometry, look)


def reference() -> U8Image:
    """The reference image of a good seal (nominal geometry, no texture variation or noise)."""
    return render(nominal_scene(), np.random.default_rng(0), clean=True)


def generate(kind: str, rng: np.random.Generator) -> SealSample:
    """One seal-edge image of ``kind`` (``"OK"`` or an NG kind) with its defect mask."""
    scene = sample_scene(kind, rng)
    return SealSample(render(scene, rng), defect_mask(scene), kind)


def dataset_kind(index: int, ng_fraction: float) -> str:
    """The kind of sample ``index`` of a dataset: NG kinds take turns among the NG samples."""
    if not is_ng(index, ng_fraction):
        return "OK"
    return NG_KINDS[int(index * ng_fraction) % len(NG_KINDS)]


def write_dataset(out_dir: Path, n: int, seed: int, *, ng_fraction: float = 0.5) -> int:
    """Write ``reference.png``, ``images/NNNNN_<kind>.png`` and ``labels.csv``; return ``n``."""
    check_dataset_args(n, ng_fraction)
    write_image(out_dir / "reference.png", reference())
    rows = []
    for i in range(n):
        kind = dataset_kind(i, ng_fraction)
        sample = generate(kind, sample_rng(seed, i))
        name = f"images/{i:05d}_{kind}.png"
        write_image(out_dir / name, sample.image)
        rows.append((name, sample.label, kind))
    write_csv(out_dir / "labels.csv", ("image", "label", "kind"), rows)
    return n
