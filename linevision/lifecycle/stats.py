"""What the drift monitor measures on a cell, and how two distributions are compared (pure).

Per OK cell: the model's ``score`` and five image statistics, on the grey image (a colour
image is converted; one larger than ``max_side`` on a side is first reduced with
``INTER_AREA``, the same way for the baseline and the window):

- ``brightness``: mean grey level (0..255);
- ``contrast``: standard deviation of the grey levels (the spread of brightness);
- ``saturated``: percentage of pixels at 254 or 255;
- ``sharpness``: log10(1 + variance of the Laplacian / variance of the image): the share of
  fine detail in the picture, which a blurred lens lowers and a change of gain does not;
- ``noise``: sigma of the sensor noise, Immerkaer's estimate (J. Immerkaer, "Fast noise
  variance estimation", CVIU 64(2), 1996): the image filtered by the difference of two
  Laplacians, which cancels edges and smooth shading and leaves the noise.

Each is rounded to ``RESOLUTION`` so that changes far below what matters (a handful of
saturated pixels, a thousandth of a grey level) do not count as drift.

The comparison is the **population stability index** over the baseline's deciles:
``PSI = sum_i (w_i - b_i) * ln(w_i / b_i)``, ``b_i`` and ``w_i`` the shares of the baseline
and of the window in bin ``i``, each at least ``PSI_FLOOR``. The usual reading: below 0.1
no real change, 0.1 to 0.25 a change to watch (``drift_warning``), above 0.25 a significant
shift (``drift_critical``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from linevision.types import Image

STATISTICS = ("score", "brightness", "contrast", "saturated", "sharpness", "noise")
IMAGE_STATISTICS = STATISTICS[1:]
RESOLUTION = {
    "score": 0.001,
    "brightness": 0.5,
    "contrast": 0.25,
    "saturated": 0.1,
    "sharpness": 0.01,
    "noise": 0.05,
}
PSI_FLOOR = 1e-4
BINS = 10

_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _round(name: str, value: float) -> float:
    step = RESOLUTION[name]
    return round(round(value / step) * step, 6)


def grey(image: Image, max_side: int) -> npt.NDArray[np.uint8]:
    """The grey image the statistics are taken on (reduced to ``max_side`` at most)."""
    g = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = g.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        g = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
    return np.asarray(g, dtype=np.uint8)


def image_stats(image: Image, max_side: int = 512) -> dict[str, float]:
    """The image statistics of one picture.

    >>> flat = np.full((64, 64), 100, np.uint8)
    >>> image_stats(flat)
    {'brightness': 100.0, 'contrast': 0.0, 'saturated': 0.0, 'sharpness': 0.0, 'noise': 0.0}
    >>> noisy = np.clip(100 + np.random.default_rng(0).normal(0, 8, (256, 256)), 0, 255)
    >>> round(image_stats(noisy.astype(np.uint8))["noise"])
    8
    """
    g = grey(image, max_side)
    f = g.astype(np.float32)
    h, w = g.shape
    lap = cv2.Laplacian(f, cv2.CV_32F, ksize=1)
    if h > 2 and w > 2:
        n = cv2.filter2D(f, cv2.CV_32F, _NOISE_KERNEL)[1:-1, 1:-1]
        noise = math.sqrt(math.pi / 2.0) * float(np.abs(n).sum()) / (6.0 * (w - 2) * (h - 2))
    else:
        noise = 0.0
    raw = {
        "brightness": float(f.mean()),
        "contrast": float(f.std()),
        "saturated": 100.0 * float(np.count_nonzero(g >= 254)) / g.size,
        "sharpness": math.log10(1.0 + float(lap.var()) / max(float(f.var()), 1e-6)),
        "noise": noise,
    }
    return {k: _round(k, v) for k, v in raw.items()}


def score_stat(score: float) -> float:
    return _round("score", score)


def edges(baseline: Sequence[float], bins: int = BINS) -> list[float]:
    """The baseline's inner quantiles (deciles), duplicates removed: the bins' edges.

    >>> edges([float(x) for x in range(100)])
    [9.9, 19.8, 29.7, 39.6, 49.5, 59.4, 69.3, 79.2, 89.1]
    >>> edges([0.0] * 50)
    [0.0]
    """
    q = np.quantile(np.asarray(baseline, dtype=np.float64), np.arange(1, bins) / bins)
    return sorted({round(float(x), 9) for x in q})


def shares(values: Sequence[float], cut: Sequence[float]) -> npt.NDArray[np.float64]:
    """The share of ``values`` in each bin: ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    idx = np.searchsorted(np.asarray(cut), np.asarray(values, dtype=np.float64), side="left")
    counts = np.bincount(idx, minlength=len(cut) + 1).astype(np.float64)
    return np.asarray(counts / max(1, len(values)), dtype=np.float64)


def psi(baseline: Sequence[float], window: Sequence[float], bins: int = BINS) -> float:
    """The population stability index of ``window`` against ``baseline``.

    >>> base = [float(x % 50) for x in range(500)]
    >>> psi(base, base[:200])
    0.0
    >>> round(psi(base, [x + 10 for x in base[:200]]), 2)
    1.6
    >>> psi([0.0] * 100, [0.0] * 99 + [5.0]) < 0.1  # one cell of a hundred: not drift
    True
    """
    cut = edges(baseline, bins)
    b = np.maximum(shares(baseline, cut), PSI_FLOOR)
    w = np.maximum(shares(window, cut), PSI_FLOOR)
    return round(float(np.sum((w - b) * np.log(w / b))), 4)
