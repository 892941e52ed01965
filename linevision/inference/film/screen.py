"""The first stage of blue-film inspection: a local-deviation screen at full resolution.

``local_deviation`` (the default of new models) flags any local change of the film's
appearance: brightness, texture or colour. Per channel (B, G, R): the pixel smoothed over
``smooth`` x ``smooth`` (a matched filter for defects of a few pixels) less a ``kernel`` x
``kernel`` box background; less the column's own offset, that deviation's mean over
``column`` lines (a line-scan camera's column gain stripes run the whole frame; a defect is
shorter); divided by the channel's spread on good film (``spread``, calibrated, in the
manifest). The signal is ``UNIT`` x the largest of the three in spread units: a dark or
light spot of the film's own hue, a crease, a bubble's rim, a break or a grey particle all
raise it. A scratch along the lines longer than ``column`` looks like a column stripe
except near its ends.

With ``scale`` 2 (new models) the band is first area-averaged 2 x 2 and every size above is
in those pixels: the averaging is the matched filter for a defect of a few frame pixels
(``smooth`` 1), and the rest costs a quarter. The second stage looks at the film downscaled
by two as well. ``scale`` 1 (older manifests) screens at full resolution.

The background's size sets what counts as local. Light falloff and mottle are far broader
and drop out; a soft wrinkle (a ridge some 10 px or more across) mostly follows the
background too, while a defect's edge or a crease is sharper than the kernel and stands out
whatever the defect's size (inside a defect larger than the kernel, its rim still does).

``chroma_tophat`` (older manifests) keys on the film's colour only: |box_blur(B - R) - (B -
R)|, box-smoothed. A defect that changes brightness but not hue passes it.

Where the screen signal reaches the manifest's threshold,
:mod:`linevision.inference.film.inspector` scores a window around it with the anomaly graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import cv2
import numpy as np
import numpy.typing as npt

from linevision.inference.manifest import ScreenSpec

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

U8Image = npt.NDArray[np.uint8]

UNIT: Final = 4.0
"""Signal levels per spread of ``local_deviation`` (the signed deviation saturates at 32)."""
OFFSET: Final = 128.0
"""The signed deviation's zero in its uint8 plane."""
CHANNELS: Final = 3
BAND: Final = 1024
"""Lines per band where a whole tile or frame is screened here (bounded scratch memory)."""


class ScreenScratch:
    """Preallocated planes for :func:`screen_signal_into` on bands of up to ``rows`` x ``width``.

    Fresh multi-megabyte arrays per band cost page faults on every call in a busy process
    (3x the arithmetic here); these are allocated once and grow only for a taller band.
    ``width`` and ``rows`` are the screened planes' (the band's over the screen's scale).
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.rows = 0
        self._planes: list[U8Image] = []
        self._reduced = np.zeros((0, 0, CHANNELS), np.uint8)

    def planes(self, rows: int, width: int | None = None) -> list[U8Image]:
        """Seven uint8 (rows, width) views: B, G, R and four work planes."""
        if width is not None and width != self.width:
            self.width, self.rows = width, 0
        if rows > self.rows:
            self.rows = rows
            self._planes = [np.zeros((rows, self.width), np.uint8) for _ in range(7)]
        return [p[:rows] for p in self._planes]

    def reduced(self, band: U8Image, scale: int) -> U8Image:
        """``band`` area-averaged ``scale`` x ``scale`` (its rows and columns cut to multiples
        of ``scale``), in a preallocated buffer; ``band`` itself at scale 1."""
        if scale == 1:
            return band
        rows, width = band.shape[0] // scale, band.shape[1] // scale
        if rows > self._reduced.shape[0] or width != self._reduced.shape[1]:
            self._reduced = np.zeros((max(rows, self._reduced.shape[0]), width, CHANNELS), np.uint8)
        out = self._reduced[:rows]
        cv2.resize(
            band[: rows * scale, : width * scale],
            (width, rows),
            dst=out,
            interpolation=cv2.INTER_AREA,
        )
        return out


def _chroma_tophat_into(band: U8Image, spec: ScreenSpec, scratch: ScreenScratch) -> U8Image:
    rows = band.shape[0]
    blue, green, red, chroma, background, signal, smooth = scratch.planes(rows, band.shape[1])
    cv2.split(band, [blue, green, red])
    cv2.subtract(blue, red, dst=chroma)
    cv2.blur(chroma, (spec.kernel, spec.kernel), dst=background)
    cv2.absdiff(background, chroma, dst=signal)
    if spec.smooth > 1:
        cv2.blur(signal, (spec.smooth, spec.smooth), dst=smooth)
        return smooth
    return signal


def _channel_into(  # noqa: PLR0913  (planes are the caller's scratch)
    plane: U8Image,
    spec: ScreenSpec,
    gain: float,
    target: U8Image,
    *,
    smooth: U8Image,
    background: U8Image,
    deviation: U8Image,
) -> None:
    """|deviation - column offset| of one channel into ``target``, ``gain`` levels per grey level.

    The signed deviation is held as 128 + ``gain`` x (smoothed - background), saturating at
    0 and 255 (far beyond any threshold); every step is a uint8 pass.
    """
    cv2.blur(plane, (spec.kernel, spec.kernel), dst=background)
    if spec.smooth > 1:
        cv2.blur(plane, (spec.smooth, spec.smooth), dst=smooth)
    else:
        smooth[:] = plane
    cv2.addWeighted(smooth, gain, background, -gain, OFFSET, dst=deviation)
    if spec.column > 1:
        cv2.blur(deviation, (1, spec.column), dst=smooth)
    else:
        smooth.fill(int(OFFSET))
    cv2.absdiff(deviation, smooth, dst=target)


def _local_deviation_into(band: U8Image, spec: ScreenSpec, scratch: ScreenScratch) -> U8Image:
    band = scratch.reduced(band, spec.scale)
    rows = band.shape[0]
    blue, green, red, smooth, background, deviation, out = scratch.planes(rows, band.shape[1])
    cv2.split(band, [blue, green, red])
    spread = spec.spread or (1.0, 1.0, 1.0)
    # the blue plane's work planes are free once its level is in ``out``; the next channels'
    # levels go to their own (spent) plane and are folded into ``out`` by a maximum
    for i, plane in enumerate((blue, green, red)):
        target = out if i == 0 else plane
        _channel_into(
            plane,
            spec,
            UNIT / spread[i],
            target,
            smooth=smooth,
            background=background,
            deviation=deviation,
        )
        if i:
            cv2.max(out, target, dst=out)
    return out


def screen_signal_into(band: U8Image, spec: ScreenSpec, scratch: ScreenScratch) -> U8Image:
    """The screen signal of a BGR band, written into ``scratch`` (the result is a view of it).

    One value per ``spec.scale`` x ``spec.scale`` pixels of the band (band row ``y`` is
    signal row ``y // spec.scale``). Rows within ``spec.halo`` of the band's top and bottom
    see a cut neighbourhood; the inspector passes bands with that many extra lines on each
    side inside the frame, starting on a multiple of the scale.
    """
    if spec.method == "chroma_tophat":
        return _chroma_tophat_into(band, spec, scratch)
    return _local_deviation_into(band, spec, scratch)


def screen_signal(tile: U8Image, spec: ScreenSpec) -> U8Image:
    """The screen signal of a whole BGR tile (a fresh array, one value per ``spec.scale``
    x ``spec.scale`` pixels)."""
    scratch = ScreenScratch(tile.shape[1])
    return np.array(screen_signal_into(tile, spec, scratch), dtype=np.uint8)


def _bands(height: int, halo: int, rows: int = BAND) -> Iterator[tuple[int, int, int, int]]:
    """(top, bottom, y0, y1): rows [y0, y1) of a frame and the lines [top, bottom) they need."""
    for y0 in range(0, height, rows):
        y1 = min(y0 + rows, height)
        yield max(y0 - halo, 0), min(y1 + halo, height), y0, y1


def screen_score(image: U8Image, spec: ScreenSpec) -> float:
    """The largest screen signal of a BGR tile or frame (screened in bands of ``BAND`` lines);
    it is flagged at ``spec.threshold``."""
    scratch = ScreenScratch(image.shape[1])
    best, s = 0, spec.scale
    for top, bottom, y0, y1 in _bands(image.shape[0], spec.halo):
        band = screen_signal_into(image[top:bottom], spec, scratch)
        rows = band[(y0 - top) // s : (y1 - top) // s]
        if rows.size:
            best = max(best, int(rows.max()))
    return float(best)


def deviation_spread(images: Sequence[U8Image], spec: ScreenSpec) -> tuple[float, float, float]:
    """Each channel's robust spread on good film: 1.4826 x the median |deviation|, grey levels.

    The deviation is the screen's own (background, smoothing and column offset removed),
    pooled over ``images``; its median is read at 1/``UNIT`` of a grey level, interpolated.
    """
    counts = np.zeros((CHANNELS, 256), np.int64)
    for image in images:
        scratch = ScreenScratch(image.shape[1])
        s = spec.scale
        for top, bottom, y0, y1 in _bands(image.shape[0], spec.halo):
            band = scratch.reduced(image[top:bottom], s)
            planes = scratch.planes(band.shape[0], band.shape[1])
            cv2.split(band, planes[:CHANNELS])
            smooth, background, deviation, out = planes[CHANNELS:]
            for c in range(CHANNELS):
                _channel_into(
                    planes[c],
                    spec,
                    UNIT,
                    out,
                    smooth=smooth,
                    background=background,
                    deviation=deviation,
                )
                counts[c] += np.bincount(
                    out[(y0 - top) // s : (y1 - top) // s].ravel(), minlength=256
                )
    spread = []
    for c in range(CHANNELS):
        cumulative = np.cumsum(counts[c])
        half = cumulative[-1] / 2.0
        level = int(np.searchsorted(cumulative, half))
        below = cumulative[level - 1] if level else 0
        median = level - 0.5 + (half - below) / max(int(counts[c][level]), 1)
        spread.append(round(max(1.4826 * float(median) / UNIT, 1.0 / UNIT), 4))
    return (spread[0], spread[1], spread[2])


def calibrate_local_deviation(  # noqa: PLR0913  (one argument per manifest field)
    images: Sequence[U8Image],
    *,
    kernel: int = 9,
    smooth: int = 1,
    column: int = 127,
    scale: int = 2,
    margin: float = 1.5,
    ceiling: float = 250.0,
) -> tuple[ScreenSpec, list[float]]:
    """A ``local_deviation`` screen set from good film only, and each image's largest signal.

    The defaults screen the film area-averaged 2 x 2 with a 9 x 9 background and a 127-line
    column offset (18 and 254 frame pixels).

    ``images`` are good frames or tiles (ten frames are plenty). The per-channel spread comes
    from :func:`deviation_spread`; the threshold is ``margin`` x the largest signal any good
    image reaches, at most ``ceiling`` (the signal saturates at 255).
    """
    if not images:
        msg = "the screen needs at least one good image to calibrate on"
        raise ValueError(msg)
    probe = ScreenSpec(
        method="local_deviation",
        kernel=kernel,
        smooth=smooth,
        column=column,
        scale=scale,
        threshold=1.0,
    )
    spread = deviation_spread(images, probe)
    probe = probe.model_copy(update={"spread": spread})
    scores = [screen_score(image, probe) for image in images]
    threshold = min(margin * max(*scores, 1.0), ceiling)
    return probe.model_copy(update={"threshold": threshold}), scores
