"""Draw a verdict onto its frame: defect boxes and a caption band (pure, array in, array out)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from linevision.types import Defect, Image

_NG = (40, 40, 230)
_OK = (60, 180, 60)
_TEXT = (255, 255, 255)
_MIN_WIDTH = 480
_MAX_UPSCALE = 4


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


def to_bgr(image: Image) -> Image:
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if image.shape[2] == 1:
        return np.asarray(cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    return image.copy()


def draw(image: Image, caption: Caption, defects: tuple[Defect, ...]) -> Image:
    """A BGR copy of ``image`` with a band above it and a box per located defect.

    Small frames are enlarged (nearest neighbour, up to 4x) so the caption stays legible.

    >>> out = draw(np.zeros((40, 60), np.uint8), Caption("NG", "defect", "x", 0.5, "s", 1),
    ...            (Defect("burr", 0.9, 5, 5, 10, 10),))
    >>> out.shape[0] > 160, out.shape[1:]
    (True, (240, 3))
    """
    body = to_bgr(image)
    k = min(_MAX_UPSCALE, max(1, -(-_MIN_WIDTH // max(body.shape[1], 1))))
    if k > 1:
        body = np.asarray(
            cv2.resize(body, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST), dtype=np.uint8
        )
    h, w = body.shape[:2]
    colour = _NG if caption.verdict == "NG" else _OK
    thick = max(1, round(min(h, w) / 250))
    for d in defects:
        if d.w <= 0 or d.h <= 0:
            continue
        x, y = d.x * k, d.y * k
        cv2.rectangle(body, (x, y), (x + d.w * k - 1, y + d.h * k - 1), colour, thick)
        cv2.putText(
            body,
            f"{d.kind} {d.score:.2f}",
            (x, max(y - 4, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45 * thick,
            colour,
            1,
            cv2.LINE_AA,
        )
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
    return np.vstack([band, body])


def encode_jpeg(image: Image, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        msg = f"cannot encode an image of shape {image.shape} as JPEG"
        raise ValueError(msg)
    return bytes(buf.tobytes())
