"""Draw a verdict onto its frame: defect boxes, a caption band, crops around each defect.

Pure functions, array in, array out; the archive's writer thread calls them, never the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from linevision.types import Defect, Image

_NG = (40, 40, 230)
_OK = (60, 180, 60)
_MASK = (0, 215, 255)
_TEXT = (255, 255, 255)
_MIN_WIDTH = 480
_MAX_UPSCALE = 4
MIN_MARK = 14
"""Smallest box drawn on a whole view, px: a defect of a few pixels on a reduced copy still
shows (the box is then centred on it)."""
CROP_MIN = 96
CROP_MAX = 512
CROP_SHOW = 320
"""A crop is enlarged (nearest neighbour, a whole factor up to 8) to about this side."""


@dataclass(frozen=True, slots=True)
class Caption:
    verdict: str
    reason: str | None
    label: str | None
    score: float | None
    station: str
    cell_id: int
    recipe: str | None = None

    def text(self) -> str:
        """One line for the band.

        >>> Caption("NG", "defect", "Long", 0.973, "pole_piece", 12, "A").text()
        'NG defect Long 0.97 | pole_piece cell 12 | recipe A'
        """
        parts = [self.verdict]
        parts += [x for x in (self.reason, self.label) if x]
        if self.score is not None:
            parts.append(f"{self.score:.2f}")
        head = " ".join(parts)
        tail = f" | recipe {self.recipe}" if self.recipe else ""
        return f"{head} | {self.station} cell {self.cell_id}{tail}"


@dataclass(frozen=True, slots=True)
class Drawn:
    """A drawn whole view and where its frame went: ``band`` rows of caption on top, then the
    frame enlarged ``zoom`` times; ``strip``: turned a quarter left (lines run left to right)."""

    image: Image
    band: int
    zoom: int
    strip: bool


def to_bgr(image: Image) -> Image:
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if image.shape[2] == 1:
        return np.asarray(cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    return image.copy()


def turned(d: Defect, width: int) -> Defect:
    """``d`` in an image of ``width`` columns turned a quarter left (``cv2.ROTATE_90_
    COUNTERCLOCKWISE``): line y becomes column y.

    >>> turned(Defect("x", 1.0, 10, 200, 30, 4), 500)
    Defect(kind='x', score=1.0, x=200, y=460, w=4, h=30)
    """
    return Defect(d.kind, d.score, d.y, width - d.x - d.w, d.h, d.w)


def _mark(body: Image, d: Defect, colour: tuple[int, int, int], thick: int) -> None:
    w, h = max(d.w, MIN_MARK), max(d.h, MIN_MARK)
    x, y = d.x + d.w // 2 - w // 2, d.y + d.h // 2 - h // 2
    cv2.rectangle(body, (x, y), (x + w - 1, y + h - 1), colour, thick)
    text = f"{d.kind} {d.score:.2f}"
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * thick, 1)
    at = (min(max(x, 2), max(body.shape[1] - tw - 2, 2)), max(y - 4, 12))
    cv2.putText(body, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.45 * thick, colour, 1, cv2.LINE_AA)


def draw(
    image: Image, caption: Caption, defects: tuple[Defect, ...], *, strip: bool = False
) -> Image:
    """A BGR copy of ``image`` with a band above it and a box per located defect."""
    return draw_view(image, caption, defects, strip=strip).image


def draw_view(
    image: Image, caption: Caption, defects: tuple[Defect, ...], *, strip: bool = False
) -> Drawn:
    """``draw``, and where the frame went. Small frames are enlarged (nearest neighbour, up
    to 4x) so the caption stays legible; ``strip`` turns a line-scan frame a quarter left.

    >>> out = draw_view(np.zeros((40, 60), np.uint8), Caption("NG", "defect", "x", 0.5, "s", 1),
    ...                 (Defect("burr", 0.9, 5, 5, 10, 10),))
    >>> out.image.shape[0] > 160, out.image.shape[1:], out.zoom
    (True, (240, 3), 4)
    """
    body = to_bgr(image)
    if strip:
        defects = tuple(turned(d, body.shape[1]) for d in defects)
        body = np.ascontiguousarray(cv2.rotate(body, cv2.ROTATE_90_COUNTERCLOCKWISE))
    k = min(_MAX_UPSCALE, max(1, -(-_MIN_WIDTH // max(body.shape[1], 1))))
    if k > 1:
        body = np.asarray(
            cv2.resize(body, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST), dtype=np.uint8
        )
    h, w = body.shape[:2]
    colour = _NG if caption.verdict == "NG" else _OK
    thick = max(1, round(min(h, w) / 250))
    for d in defects:
        if d.w > 0 and d.h > 0:
            _mark(body, Defect(d.kind, d.score, d.x * k, d.y * k, d.w * k, d.h * k), colour, thick)
    scale = max(0.5, min(w / 600.0, 1.5))
    band_h = round(22 * scale) + 6
    band = np.zeros((band_h, w, 3), np.uint8)
    band[:] = colour
    cv2.putText(
        band,
        caption.text(),
        (4, band_h - 8),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5 * scale,
        _TEXT,
        1,
        cv2.LINE_AA,
    )
    return Drawn(np.vstack([band, body]), band_h, k, strip)


def _span(start: int, length: int, size: int) -> tuple[int, int]:
    side = min(max(length + 2 * max(24, length // 2), CROP_MIN), CROP_MAX, size)
    lo = min(max(start + length // 2 - side // 2, 0), size - side)
    return lo, side


def crop_window(d: Defect, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x, y, w, h) around the box ``d`` in an image of ``shape`` (rows, columns): the box
    with half its size (at least 24 px) each side, at least ``CROP_MIN`` and at most
    ``CROP_MAX`` px a side (a larger box is cut around its centre), inside the image.

    >>> crop_window(Defect("x", 1.0, 10, 20, 8, 8), (224, 224))
    (0, 0, 96, 96)
    >>> crop_window(Defect("x", 1.0, 1000, 500, 300, 40), (2000, 4000))
    (894, 472, 512, 96)
    >>> crop_window(Defect("x", 1.0, 0, 10, 4000, 40), (2000, 4000))
    (1744, 0, 512, 96)
    """
    x, w = _span(d.x, d.w, shape[1])
    y, h = _span(d.y, d.h, shape[0])
    return x, y, w, h


def crop_zoom(w: int, h: int) -> int:
    """The whole factor a crop of w x h is enlarged by: about ``CROP_SHOW`` px, 1 to 8.

    >>> crop_zoom(96, 96), crop_zoom(512, 96), crop_zoom(20, 20)
    (3, 1, 8)
    """
    return max(1, min(8, CROP_SHOW // max(w, h, 1)))


def draw_crop(
    pixels: Image, box: Defect, mask: Image | None = None, *, verdict: str = "NG"
) -> tuple[Image, int]:
    """``pixels`` (a crop, full resolution) enlarged by ``crop_zoom`` with the box ``box``
    (in the crop's pixels) outlined just outside it, and ``mask``'s outline; and the zoom.

    The defect's own pixels are left as they are: each source pixel is a k x k block.

    >>> img, k = draw_crop(np.zeros((96, 96), np.uint8), Defect("x", 1.0, 40, 40, 8, 8))
    >>> k, img.shape, img[40 * 3 - 1, 40 * 3 + 5].tolist(), img[40 * 3 + 2, 40 * 3 + 2].tolist()
    (3, (288, 288, 3), [40, 40, 230], [0, 0, 0])
    """
    h, w = pixels.shape[:2]
    k = crop_zoom(w, h)
    body = to_bgr(pixels)
    body = np.ascontiguousarray(
        cv2.resize(body, (w * k, h * k), interpolation=cv2.INTER_NEAREST), dtype=np.uint8
    )
    if mask is not None and mask.any():
        big = cv2.resize(mask, (w * k, h * k), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(body, contours, -1, _MASK, 1)
    colour = _NG if verdict == "NG" else _OK
    x0, y0 = box.x * k - 1, box.y * k - 1
    x1, y1 = (box.x + box.w) * k, (box.y + box.h) * k
    cv2.rectangle(body, (x0 - 2, y0 - 2), (x1 + 2, y1 + 2), (0, 0, 0), 1)
    cv2.rectangle(body, (x0 - 1, y0 - 1), (x1 + 1, y1 + 1), colour, 1)
    cv2.rectangle(body, (x0, y0), (x1, y1), colour, 1)
    return body, k


def encode_jpeg(image: Image, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        msg = f"cannot encode an image of shape {image.shape} as JPEG"
        raise ValueError(msg)
    return bytes(buf.tobytes())


def encode_png(image: Image) -> bytes:
    """Lossless, fast compression: the frame as the camera gave it, for a dataset."""
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        msg = f"cannot encode an image of shape {image.shape} as PNG"
        raise ValueError(msg)
    return bytes(buf.tobytes())
