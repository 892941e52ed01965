"""Pixel residual of a registered capture against its reference view, pooled to the feature grid.

Seed 000 compares CNN features; at a stride of 8 px those blur a shallow dent on a printed
label into the label's own placement tolerance. This adds what the pixels say, at the
feature map's resolution, as extra channels beside the encoder's features:

1. gain and lighting: the registered capture is mapped onto the reference's grey levels by a
   least-squares fit ``capture ~ reference * (a + b x + c y) + d`` (a gain with a linear
   lighting slope and an offset), on every ``FIT_STEP``-th pixel where the reference is flat
   (its local range below ``FLAT``), so edges that moved do not bend the fit;
2. placement tolerance: the residual is how far each pixel lies above the largest or below
   the smallest reference value within ``RADIUS`` px (zero inside that envelope), so an edge
   that moved by a pixel or two (a label, a tab) leaves nothing;
3. smooth light: the residual is smoothed (sigma ``BLUR``) and its low frequencies (sigma
   ``HIGH_PASS``, blurred on a ``HIGH_PASS_SHRINK`` times smaller copy: a specular band, a
   lighting slope the plane did not take out) removed;
4. only what was seen: the residual is zero where the registered view repeats the capture's
   border (``seen`` from ``align.register``: the capture was shifted against the reference
   and lacks that strip) and within ``EDGE`` px of the frame's edge, where resampling and the
   lens's last rows leave nothing to compare; both made the largest residuals of good cells
   and taught the comparison to distrust a view's ends, where corner damage lies;
5. pooled to the encoder's stride: the largest positive and the largest negative value per
   cell, divided by ``SCALE``, as two channels.

Mode ``envelope_edges`` adds a third channel for what the envelope cannot see by
construction: within ``RADIUS`` px of a reference edge the envelope accepts any grey between
the edge's two sides, so a thin scratch running along a band's border, or a corner cut
ending on one, leaves no residual. The slopes do: both views are smoothed (sigma
``EDGE_SIGMA``) and their x and y slopes taken; the capture's slope is compared with the
range of the reference's slopes within ``RADIUS`` px, as the grey levels are. A border that
moved keeps its slope, so it stays inside that range; a scratch that crosses a border at an
angle, or starts, ends or bends within ``RADIUS`` px of one, adds slopes the reference has
nowhere near (across the border's direction, or against it). A line exactly parallel to a
border and 2 px inside it merges into the border's slope once smoothed; only its ends show.
The larger excess of the two directions, masked and blurred like the residual, pooled to its
largest value per cell (divided by ``EDGE_SCALE``).

The reference's envelope (``Envelope``) is computed once per recipe; a capture costs one fit,
two comparisons, two blurs and a pooling (about a millisecond for a 384 x 256 view), and the
edge channel a smoothing, two slopes, two comparisons and a blur more.

>>> import numpy as np
>>> ref = np.full((64, 64), 120, np.uint8)
>>> env = Envelope.of(ref)
>>> flat = channels(ref, env, 8)
>>> flat.shape, float(np.abs(flat).max()) < 0.05
((2, 8, 8), True)
>>> spot = ref.copy(); spot[30:34, 30:34] = 40
>>> bool(channels(spot, env, 8)[1].max() > 0.5)
True
>>> channels(spot, env, 8, mode="envelope_edges").shape
(3, 8, 8)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import cv2
import numpy as np
import numpy.typing as npt

VERSION: Final = 4
"""Changes whenever the channels change for the same images (training caches key on it)."""
RADIUS: Final = 2
FIT_STEP: Final = 4
BLUR: Final = 1.0
HIGH_PASS: Final = 10.0
HIGH_PASS_SHRINK: Final = 4
SCALE: Final = 32.0
Mode = Literal["none", "envelope", "envelope_edges"]
CHANNELS: Final[dict[str, int]] = {"none": 0, "envelope": 2, "envelope_edges": 3}
"""How many channels each mode (the manifest's ``residual``) adds to a view's features."""
EDGE_SIGMA: Final = 1.0
EDGE_SCALE: Final = 8.0
MIN_GAIN: Final = 0.2
FLAT: Final = 12.0
MIN_FIT_PIXELS: Final = 16
EDGE: Final = 3

F32Array = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True, eq=False)
class Envelope:
    """One reference view's grey levels and their local range, computed once per recipe."""

    reference: F32Array
    low: F32Array
    high: F32Array
    design: F32Array
    """(pixels of the fit, 4): the least-squares design matrix on the fit's pixel subset."""
    fit: npt.NDArray[np.bool_]
    """Which of the every-``FIT_STEP``-th pixels (raveled) take part in the fit."""
    slope_low: F32Array
    """(2, H, W): the smallest x and y slope of the smoothed reference within ``RADIUS``."""
    slope_high: F32Array

    @classmethod
    def of(cls, reference: U8Array) -> Envelope:
        ref = _gray(reference)
        kernel = np.ones((2 * RADIUS + 1, 2 * RADIUS + 1), np.uint8)
        low = np.asarray(cv2.erode(ref, kernel), dtype=np.float32)
        high = np.asarray(cv2.dilate(ref, kernel), dtype=np.float32)
        xs, ys = _coordinates(ref.shape)
        sub = (slice(None, None, FIT_STEP), slice(None, None, FIT_STEP))
        flat = ((high - low)[sub] < FLAT).ravel()
        if int(flat.sum()) < MIN_FIT_PIXELS:
            flat = np.ones_like(flat)
        r = ref[sub].ravel()[flat]
        design = np.stack(
            [r, r * xs[sub].ravel()[flat], r * ys[sub].ravel()[flat], np.ones_like(r)], axis=1
        )
        slopes = _slopes(ref)
        slope_low = np.stack([np.asarray(cv2.erode(g, kernel), np.float32) for g in slopes])
        slope_high = np.stack([np.asarray(cv2.dilate(g, kernel), np.float32) for g in slopes])
        design = np.ascontiguousarray(design, dtype=np.float32)
        return cls(ref, low, high, design, flat, slope_low, slope_high)


_SMOOTH: Final = cv2.getGaussianKernel(int(8 * EDGE_SIGMA + 1) | 1, EDGE_SIGMA, cv2.CV_32F)
# correlation with [-1/2, 0, 1/2] after the blur: (f(x + 1) - f(x - 1)) / 2
_DERIVATIVE: Final = np.convolve(_SMOOTH.ravel(), [-0.5, 0.0, 0.5]).astype(np.float32)[:, None]


def _slopes(img: F32Array) -> tuple[F32Array, F32Array]:
    """x and y slopes (grey levels per px) of ``img`` smoothed: central differences of the
    Gaussian blur (sigma ``EDGE_SIGMA``), each as one separable filter."""
    gx = cv2.sepFilter2D(img, cv2.CV_32F, _DERIVATIVE, _SMOOTH)
    gy = cv2.sepFilter2D(img, cv2.CV_32F, _SMOOTH, _DERIVATIVE)
    return np.asarray(gx, np.float32), np.asarray(gy, np.float32)


def _gray(image: U8Array) -> F32Array:
    img = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return np.asarray(img, dtype=np.float32)


def _coordinates(shape: tuple[int, ...]) -> tuple[F32Array, F32Array]:
    h, w = shape[0], shape[1]
    xs = np.broadcast_to(np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :], (h, w))
    ys = np.broadcast_to(np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None], (h, w))
    return xs, ys


def _matched(registered: U8Array, envelope: Envelope) -> F32Array:
    """The registered capture mapped onto the reference's grey levels (gain, slope, offset)."""
    img = _gray(registered)
    if img.shape != envelope.reference.shape:
        msg = f"capture {img.shape} and reference {envelope.reference.shape} differ in size"
        raise ValueError(msg)
    sub = img[::FIT_STEP, ::FIT_STEP].ravel()[envelope.fit]
    coef, *_ = np.linalg.lstsq(envelope.design, sub, rcond=None)
    a, b, c, d = (float(v) for v in coef)
    xs, ys = _coordinates(img.shape)
    gain = np.maximum(a + b * xs + c * ys, MIN_GAIN)
    return np.asarray((img - d) / gain, dtype=np.float32)


def matched(registered: U8Array, envelope: Envelope) -> F32Array:
    """The registered capture on the reference's grey levels (step 1), within 0..255.

    An anomaly model encodes this instead of the capture (``AnomalySpec.photometric``), so a
    change of gain, offset or a lighting slope is not a change of the part.
    """
    return np.asarray(np.clip(_matched(registered, envelope), 0.0, 255.0), dtype=np.float32)


def _masked_blur(out: F32Array, seen: U8Array | None) -> F32Array:
    """``out`` zeroed where not seen and within ``EDGE`` px of the frame, blurred (``BLUR``)."""
    if seen is not None:
        out[seen == 0] = 0.0
    out[:EDGE] = 0.0
    out[-EDGE:] = 0.0
    out[:, :EDGE] = 0.0
    out[:, -EDGE:] = 0.0
    return np.asarray(cv2.GaussianBlur(out, (0, 0), BLUR), dtype=np.float32)


def residual(registered: U8Array, envelope: Envelope, seen: U8Array | None = None) -> F32Array:
    """Signed residual (grey levels) of a capture already registered onto the reference.

    ``seen``: non-zero where the registered capture was observed (``align.register``); the
    residual is zero elsewhere and within ``EDGE`` px of the frame's edge.
    """
    return _signed(_matched(registered, envelope), envelope, seen)


def _signed(matched: F32Array, envelope: Envelope, seen: U8Array | None) -> F32Array:
    out = np.maximum(matched - envelope.high, 0.0) - np.maximum(envelope.low - matched, 0.0)
    out = _masked_blur(out, seen)
    return np.asarray(out - _low_pass(out), dtype=np.float32)


def edge_residual(registered: U8Array, envelope: Envelope, seen: U8Array | None = None) -> F32Array:
    """How far the capture's slopes lie outside the reference's within ``RADIUS`` (>= 0)."""
    return _edges(_matched(registered, envelope), envelope, seen)


def _edges(matched: F32Array, envelope: Envelope, seen: U8Array | None) -> F32Array:
    slopes = np.stack(_slopes(matched))
    excess = np.maximum(slopes - envelope.slope_high, 0.0) + np.maximum(
        envelope.slope_low - slopes, 0.0
    )
    return _masked_blur(np.asarray(excess.max(axis=0), dtype=np.float32), seen)


def _low_pass(img: F32Array) -> F32Array:
    """Gaussian blur of sigma ``HIGH_PASS`` on a smaller copy (~15x cheaper at 384 x 256)."""
    h, w = img.shape
    small = cv2.resize(
        img,
        (max(w // HIGH_PASS_SHRINK, 1), max(h // HIGH_PASS_SHRINK, 1)),
        interpolation=cv2.INTER_AREA,
    )
    blurred = cv2.GaussianBlur(small, (0, 0), HIGH_PASS / HIGH_PASS_SHRINK)
    return np.asarray(cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)


def _cell_max(img: F32Array, stride: int) -> F32Array:
    """The largest value of each ``stride`` x ``stride`` cell."""
    h, w = img.shape[0] // stride, img.shape[1] // stride
    square = np.ones((stride, stride), np.uint8)
    # a max filter anchored at each cell's top-left corner, read at those corners
    out = cv2.dilate(img, square, anchor=(0, 0))[: h * stride : stride, : w * stride : stride]
    return np.asarray(out, dtype=np.float32)


def pooled(signed: F32Array, stride: int) -> F32Array:
    """(2, H / stride, W / stride): the largest rise and the largest fall per cell, scaled."""
    rise = _cell_max(signed, stride)
    fall = _cell_max(-signed, stride)
    return np.stack([rise, fall]).astype(np.float32) * np.float32(1.0 / SCALE)


def channels(
    registered: U8Array,
    envelope: Envelope,
    stride: int,
    seen: U8Array | None = None,
    mode: Mode = "envelope",
) -> F32Array:
    """The residual channels (``CHANNELS[mode]``) of one registered capture at ``stride``."""
    if mode == "none":
        msg = "mode 'none' has no residual channels"
        raise ValueError(msg)
    matched = _matched(registered, envelope)
    out = pooled(_signed(matched, envelope, seen), stride)
    if mode == "envelope":
        return out
    edges = _cell_max(_edges(matched, envelope, seen), stride) * np.float32(1.0 / EDGE_SCALE)
    return np.concatenate([out, edges[None]]).astype(np.float32)


def hot_box(cells: F32Array, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) in an image of ``shape`` (rows, columns) that the per-cell map ``cells``
    covers: the cells connected to its largest value that reach half of it. None when the
    map holds nothing above zero.

    >>> m = np.zeros((8, 32), np.float32); m[2, 5] = 1.0; m[2, 6] = 0.6; m[6, 20] = 0.7
    >>> hot_box(m, (64, 256))
    (40, 16, 16, 8)
    >>> hot_box(np.zeros((8, 32), np.float32), (64, 256)) is None
    True
    """
    peak = float(cells.max())
    if peak <= 0.0:
        return None
    hot = np.asarray(cells >= 0.5 * peak, np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    cy, cx = np.unravel_index(int(np.argmax(cells)), cells.shape)
    x, y, w, h = (int(v) for v in stats[int(labels[cy, cx]), :4])
    sy, sx = shape[0] / cells.shape[0], shape[1] / cells.shape[1]
    x0, y0 = int(x * sx), int(y * sy)
    return x0, y0, int((x + w) * sx) - x0, int((y + h) * sy) - y0
