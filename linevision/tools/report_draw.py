"""The pictures of ``linevision eval --report``, drawn with OpenCV into 8-bit BGR arrays.

``histograms`` draws the OK and the NG score histograms one above the other on a shared
score axis, with the model's threshold as a vertical line of ``THRESHOLD_BGR`` through both
panels (``x_of`` gives its column). ``thumbnail`` shrinks a test image for the page.

>>> x_of(0.5, 0.0, 1.0)
390
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from linevision.types import Image

WIDTH: Final = 720
PANEL: Final = 180
LEFT: Final = 90
RIGHT: Final = 30
TOP: Final = 75
GAP: Final = 40
BOTTOM: Final = 60
HEIGHT: Final = TOP + 2 * PANEL + GAP + BOTTOM
BINS: Final = 40
WHITE: Final = (255, 255, 255)
INK: Final = (40, 40, 40)
GRID: Final = (225, 225, 225)
OK_BGR: Final = (90, 160, 60)
NG_BGR: Final = (60, 60, 200)
THRESHOLD_BGR: Final = (0, 140, 255)
"""The threshold line's colour (orange); no other element of the histogram uses it."""
FONT: Final = cv2.FONT_HERSHEY_SIMPLEX


def x_of(value: float, lo: float, hi: float) -> int:
    """The pixel column of score ``value`` on an axis from ``lo`` to ``hi``."""
    span = hi - lo if hi > lo else 1.0
    inner = WIDTH - LEFT - RIGHT
    return LEFT + round((min(max(value, lo), hi) - lo) / span * inner)


def score_range(scores: Sequence[float], threshold: float | None) -> tuple[float, float]:
    """0..1 for probabilities; else the scores' and the threshold's range with a margin."""
    values = [*scores, *([threshold] if threshold is not None else [])]
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    margin = (hi - lo) * 0.05 or 1.0
    return lo - margin, hi + margin


def _text(image: Image, text: str, org: tuple[int, int], scale: float = 0.45) -> None:
    cv2.putText(image, text, org, FONT, scale, INK, 1, cv2.LINE_AA)


def _panel(  # noqa: PLR0913  (one panel: its place, its data and its axis)
    canvas: Image,
    top: int,
    *,
    scores: Sequence[float],
    colour: tuple[int, int, int],
    title: str,
    axis: tuple[float, float],
) -> None:
    lo, hi = axis
    bottom = top + PANEL
    counts, edges = np.histogram(np.asarray(scores, dtype=np.float64), BINS, (lo, hi))
    peak = max(int(counts.max()) if counts.size else 0, 1)
    for k in range(5):
        y = bottom - round(k / 4 * (PANEL - 10))
        cv2.line(canvas, (LEFT, y), (WIDTH - RIGHT, y), GRID, 1)
        _text(canvas, f"{peak * k / 4:.0f}", (LEFT - 40, y + 4), 0.4)
    for count, left, right in zip(counts, edges[:-1], edges[1:], strict=True):
        if count:
            y = bottom - round(count / peak * (PANEL - 10))
            x0, x1 = x_of(float(left), lo, hi), x_of(float(right), lo, hi) - 1
            cv2.rectangle(canvas, (x0, y), (max(x1, x0), bottom), colour, cv2.FILLED)
    cv2.rectangle(canvas, (LEFT, top), (WIDTH - RIGHT, bottom), INK, 1)
    _text(canvas, f"{title} (n = {len(scores)})", (LEFT, top - 8), 0.5)
    cv2.putText(canvas, "count", (8, top + PANEL // 2), FONT, 0.4, INK, 1, cv2.LINE_AA)


def histograms(
    ok_scores: Sequence[float],
    ng_scores: Sequence[float],
    threshold: float | None,
    score_name: str = "NG score",
) -> Image:
    """OK (top) and NG (bottom) score histograms with the threshold line, as a BGR image."""
    canvas = np.full((HEIGHT, WIDTH, 3), WHITE, dtype=np.uint8)
    axis = score_range([*ok_scores, *ng_scores], threshold)
    title = f"{score_name} of OK and NG samples"
    cv2.putText(canvas, title, (LEFT, 28), FONT, 0.65, INK, 1, cv2.LINE_AA)
    _panel(canvas, TOP, scores=ok_scores, colour=OK_BGR, title="OK samples", axis=axis)
    bottom_panel = TOP + PANEL + GAP
    _panel(canvas, bottom_panel, scores=ng_scores, colour=NG_BGR, title="NG samples", axis=axis)
    base = TOP + 2 * PANEL + GAP
    lo, hi = axis
    for k in range(6):
        value = lo + (hi - lo) * k / 5
        x = x_of(value, lo, hi)
        cv2.line(canvas, (x, base), (x, base + 5), INK, 1)
        _text(canvas, f"{value:.3g}", (x - 12, base + 20), 0.4)
    _text(canvas, f"{score_name} (NG above the threshold)", (LEFT + 150, base + 45), 0.5)
    if threshold is not None:
        x = x_of(threshold, lo, hi)
        cv2.line(canvas, (x, TOP), (x, base), THRESHOLD_BGR, 2)
        label = f"threshold {threshold:.4g}"
        (tw, th), _ = cv2.getTextSize(label, FONT, 0.45, 1)
        tx = x + 6 if x + 6 + tw < WIDTH - RIGHT else x - 6 - tw
        ty = TOP + 8 + th
        cv2.rectangle(canvas, (tx - 2, ty - th - 3), (tx + tw + 2, ty + 4), WHITE, cv2.FILLED)
        cv2.putText(canvas, label, (tx, ty), FONT, 0.45, INK, 1, cv2.LINE_AA)
    return canvas


def thumbnail(image: Image, size: int = 200) -> Image:
    """``image`` with its longer side ``size`` px (never enlarged), in BGR."""
    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    h, w = bgr.shape[:2]
    scale = min(size / max(h, w), 1.0)
    if scale < 1.0:
        dsize = (max(round(w * scale), 1), max(round(h * scale), 1))
        bgr = cv2.resize(bgr, dsize, interpolation=cv2.INTER_AREA)
    return np.asarray(bgr, dtype=np.uint8)
