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

The reference's envelope (``Envelope``) is computed once per recipe; a capture costs one fit,
two comparisons, two blurs and a pooling (about a millisecond for a 384 x 256 view).

>>> import numpy as np
>>> ref = np.full((64, 64), 120, np.uint8)
>>> env = Envelope.of(ref)
>>> flat = channels(ref, env, 8)
>>> flat.shape, float(np.abs(flat).max()) < 0.05
((2, 8, 8), True)
>>> spot = ref.copy(); spot[30:34, 30:34] = 40
>>> bool(channels(spot, env, 8)[1].max() > 0.5)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

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
CHANNELS: Final = 2
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
        return cls(ref, low, high, np.ascontiguousarray(design, dtype=np.float32), flat)


def _gray(image: U8Array) -> F32Array:
    img = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return np.asarray(img, dtype=np.float32)


def _coordinates(shape: tuple[int, ...]) -> tuple[F32Array, F32Array]:
    h, w = shape[0], shape[1]
    xs = np.broadcast_to(np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :], (h, w))
    ys = np.broadcast_to(np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None], (h, w))
    return xs, ys


def residual(registered: U8Array, envelope: Envelope, seen: U8Array | None = None) -> F32Array:
    """Signed residual (grey levels) of a capture already registered onto the reference.

    ``seen``: non-zero where the registered capture was observed (``align.register``); the
    residual is zero elsewhere and within ``EDGE`` px of the frame's edge.
    """
    img = _gray(registered)
    if img.shape != envelope.reference.shape:
        msg = f"capture {img.shape} and reference {envelope.reference.shape} differ in size"
        raise ValueError(msg)
    sub = img[::FIT_STEP, ::FIT_STEP].ravel()[envelope.fit]
    coef, *_ = np.linalg.lstsq(envelope.design, sub, rcond=None)
    a, b, c, d = (float(v) for v in coef)
    xs, ys = _coordinates(img.shape)
    gain = np.maximum(a + b * xs + c * ys, MIN_GAIN)
    matched = (img - d) / gain
    out = np.maximum(matched - envelope.high, 0.0) - np.maximum(envelope.low - matched, 0.0)
    if seen is not None:
        out[seen == 0] = 0.0
    out[:EDGE] = 0.0
    out[-EDGE:] = 0.0
    out[:, :EDGE] = 0.0
    out[:, -EDGE:] = 0.0
    out = np.asarray(cv2.GaussianBlur(out, (0, 0), BLUR), dtype=np.float32)
    return np.asarray(out - _low_pass(out), dtype=np.float32)


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


def pooled(signed: F32Array, stride: int) -> F32Array:
    """(2, H / stride, W / stride): the largest rise and the largest fall per cell, scaled."""
    h, w = signed.shape[0] // stride, signed.shape[1] // stride
    square = np.ones((stride, stride), np.uint8)
    # a max (min) filter anchored at each cell's top-left corner, read at those corners
    rise = cv2.dilate(signed, square, anchor=(0, 0))[: h * stride : stride, : w * stride : stride]
    fall = -cv2.erode(signed, square, anchor=(0, 0))[: h * stride : stride, : w * stride : stride]
    return np.stack([rise, fall]).astype(np.float32) * np.float32(1.0 / SCALE)


def channels(
    registered: U8Array, envelope: Envelope, stride: int, seen: U8Array | None = None
) -> F32Array:
    """The residual channels of one registered capture at the encoder's ``stride``."""
    return pooled(residual(registered, envelope, seen), stride)
