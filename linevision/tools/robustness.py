"""Shifts of a test image the way a line drifts: pure functions on 8-bit arrays.

``linevision eval --robustness`` (``tools.robustness_run``) passes every test image through
one of these before the runtime sees it. Each takes a gray (H, W) or BGR (H, W, 3) ``uint8``
image and returns a new one of the same shape and dtype; none keeps state, and the only
random one (``add_noise``) draws from the generator it is given.

Defect contrast (``blend``): an NG image ``x`` and its defect-free counterpart ``c`` give
``c + alpha * (x - c)``; at ``alpha = 1`` the image is unchanged, at 0 it is the counterpart.
The counterpart is the best estimate of the same part without its defect that the folder
holds (``counterpart``): the station's reference view registered onto the image and matched in
brightness; else, where the folder outlines the defect (a mask), the image with the outlined
region replaced by a median of its surroundings; else the most similar good image of the
folder in its most similar pose (turned, mirrored), registered the same way.

>>> import numpy as np
>>> flat = np.full((4, 4), 100, np.uint8)
>>> int(gain(flat, 1.3)[0, 0]), int(gamma(flat, 1.4)[0, 0])
(130, 69)
>>> int(blend(np.full((4, 4), 200, np.uint8), flat, 0.25)[0, 0])
125
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Sequence

    from linevision.types import Image

Floats = npt.NDArray[np.float32]
NOISE_FLOOR: Final = 1.0
"""Gray levels of sensor noise assumed when an image looks noiseless (``add_noise``)."""
_LAPLACE: Final = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _u8(values: npt.ArrayLike) -> Image:
    return np.asarray(np.clip(np.rint(values), 0, 255), dtype=np.uint8)


def _gray(image: Image) -> Floats:
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    return np.asarray(gray, dtype=np.float32)


def gain(image: Image, factor: float) -> Image:
    """Every pixel times ``factor`` (exposure or lamp power), clipped to 0..255."""
    return _u8(image.astype(np.float32) * factor)


def gamma(image: Image, exponent: float) -> Image:
    """``255 * (x / 255) ** exponent``: below 1 lifts the shadows, above 1 darkens them."""
    table = _u8(255.0 * (np.arange(256, dtype=np.float64) / 255.0) ** exponent)
    return np.asarray(table[image], dtype=np.uint8)


def blur(image: Image, sigma: float) -> Image:
    """A Gaussian blur of ``sigma`` px (focus drift, motion)."""
    return np.asarray(cv2.GaussianBlur(image, (0, 0), sigmaX=sigma), dtype=np.uint8)


def noise_sigma(image: Image) -> float:
    """The image's sensor noise in gray levels (Immerkaer's Laplacian estimate).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> noisy = np.clip(128 + rng.normal(0, 4, (200, 200)), 0, 255).astype(np.uint8)
    >>> round(noise_sigma(noisy))
    4
    """
    gray = _gray(image)
    if min(gray.shape) < 3:
        return 0.0
    response = cv2.filter2D(gray, cv2.CV_32F, _LAPLACE)[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2.0) * np.abs(response).mean() / 6.0)


def add_noise(image: Image, factor: float, rng: np.random.Generator) -> Image:
    """Sensor noise ``factor`` times as strong: Gaussian noise added on top of the image's own.

    The image's noise ``s`` (``noise_sigma``, at least ``NOISE_FLOOR``) grows to ``factor * s``
    by adding independent noise of ``s * sqrt(factor**2 - 1)``.
    """
    if factor <= 1.0:
        return image.copy()
    sigma = max(noise_sigma(image), NOISE_FLOOR) * math.sqrt(factor**2 - 1.0)
    return _u8(image.astype(np.float32) + rng.normal(0.0, sigma, image.shape))


def vignette(image: Image, strength: float) -> Image:
    """Light falloff: brightness times ``1 - strength * r**2``, ``r`` 1 in the corners."""
    h, w = image.shape[:2]
    ys = (np.arange(h, dtype=np.float32) - (h - 1) / 2.0) / max((h - 1) / 2.0, 1.0)
    xs = (np.arange(w, dtype=np.float32) - (w - 1) / 2.0) / max((w - 1) / 2.0, 1.0)
    falloff = 1.0 - strength * (ys[:, None] ** 2 + xs[None, :] ** 2) / 2.0
    if image.ndim == 3:
        falloff = falloff[:, :, None]
    return _u8(image.astype(np.float32) * falloff)


def _warp(image: Image, matrix: npt.NDArray[np.float64]) -> Image:
    h, w = image.shape[:2]
    out = cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    return np.asarray(out, dtype=np.uint8)


def translate(image: Image, dx: float, dy: float) -> Image:
    """The image moved ``dx`` px right and ``dy`` px down; the border is mirrored."""
    return _warp(image, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]))


def rotate(image: Image, degrees: float) -> Image:
    """The image turned ``degrees`` counter-clockwise about its centre; mirrored border."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
    return _warp(image, np.asarray(matrix, dtype=np.float64))


def blend(image: Image, counterpart: Image, alpha: float) -> Image:
    """``counterpart + alpha * (image - counterpart)``: the defect at ``alpha`` of its contrast."""
    if image.shape != counterpart.shape:
        msg = f"image {image.shape} and counterpart {counterpart.shape} differ in shape"
        raise ValueError(msg)
    c = counterpart.astype(np.float32)
    return _u8(c + alpha * (image.astype(np.float32) - c))


def _like(other: Image, image: Image) -> Image:
    """``other`` at ``image``'s size and channel count."""
    if other.ndim == 3 and image.ndim == 2:
        other = np.asarray(cv2.cvtColor(other, cv2.COLOR_BGR2GRAY), np.uint8)
    elif other.ndim == 2 and image.ndim == 3:
        other = np.asarray(cv2.cvtColor(other, cv2.COLOR_GRAY2BGR), np.uint8)
    if other.shape[:2] != image.shape[:2]:
        size = (image.shape[1], image.shape[0])
        other = np.asarray(cv2.resize(other, size, interpolation=cv2.INTER_AREA), np.uint8)
    return other


def register(other: Image, image: Image) -> Image:
    """``other`` moved onto ``image`` (phase correlation, translation only), same brightness."""
    other = _like(other, image)
    a, b = _gray(image), _gray(other)
    window = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(b, a, window)
    moved = translate(other, dx, dy)
    mean = float(_gray(moved).mean())
    return gain(moved, float(a.mean()) / mean) if mean > 0 else moved


def _poses(image: Image) -> list[Image]:
    """``image`` as the line may also present the part: turned by 90-degree steps, mirrored.

    A square image has the eight poses of the square; another only its four flips.
    """
    flips = [image, image[:, ::-1], image[::-1], image[::-1, ::-1]]
    if image.shape[0] == image.shape[1]:
        turned = np.swapaxes(image, 0, 1)
        flips += [turned, turned[:, ::-1], turned[::-1], turned[::-1, ::-1]]
    return [np.ascontiguousarray(f) for f in flips]


def _thumb(image: Image) -> Floats:
    small = cv2.resize(_gray(image), (32, 32), interpolation=cv2.INTER_AREA)
    return np.asarray(small - small.mean(), dtype=np.float32)


def nearest(image: Image, pool: Sequence[Image], shortlist: int = 5) -> Image:
    """The good image of ``pool`` most like ``image``, in its best pose, registered onto it.

    Every pose (``_poses``) of every candidate is compared on 32 x 32 thumbnails (means
    removed); the ``shortlist`` closest are registered (``register``) and the one with the
    smallest mean absolute difference to ``image`` at full size wins.
    """
    if not pool:
        msg = "nearest needs at least one candidate image"
        raise ValueError(msg)
    target = _thumb(image)
    poses = [pose for other in pool for pose in _poses(_like(other, image))]
    coarse = [float(np.abs(target - _thumb(p)).mean()) for p in poses]
    best = [poses[i] for i in np.argsort(coarse, kind="stable")[:shortlist]]
    full = _gray(image)
    moved = [register(p, image) for p in best]
    return min(moved, key=lambda m: float(np.abs(full - _gray(m)).mean()))


def masked_counterpart(image: Image, mask: npt.NDArray[np.uint8], kernel: int = 31) -> Image:
    """``image`` with the outlined defect (``mask`` non-zero) replaced by a local median.

    The mask is widened by ``kernel // 2`` px and feathered, so the replaced region meets the
    untouched film without a seam; ``kernel`` (odd) must exceed the defect's width.
    """
    k = kernel | 1
    region = (mask > 0).astype(np.uint8)
    grown = cv2.dilate(region, np.ones((k // 2 | 1, k // 2 | 1), np.uint8))
    weight = cv2.GaussianBlur(grown.astype(np.float32), (0, 0), sigmaX=k / 6.0)
    weight = np.maximum(weight, grown.astype(np.float32))
    background = cv2.medianBlur(image, k).astype(np.float32)
    if image.ndim == 3:
        weight = weight[:, :, None]
    return _u8(image.astype(np.float32) * (1.0 - weight) + background * weight)


def counterpart(
    image: Image,
    *,
    reference: Image | None = None,
    mask: npt.NDArray[np.uint8] | None = None,
    pool: Sequence[Image] = (),
) -> Image:
    """The folder's best estimate of ``image`` without its defect (see the module's notes).

    Without a reference, a mask or good images the fallback is a median of 31 px: it keeps
    what is larger than the defects and drops what is smaller, texture included.
    """
    if reference is not None:
        return register(reference, image)
    if mask is not None and mask.shape[:2] == image.shape[:2]:
        return masked_counterpart(image, mask)
    if pool:
        return nearest(image, pool)
    return np.asarray(cv2.medianBlur(image, 31), dtype=np.uint8)
