"""Register a captured view onto its reference view before the two are compared.

Cameras see each cell with a small shift, rotation and scale of their own (a few pixels, a
degree or two); the reference-compare networks tolerate one feature cell (8 px) of that, and
everything beyond shows as a difference that hides small defects. ``align`` estimates the
affine warp that maps the reference onto the capture by ECC (enhanced correlation
coefficient: insensitive to gain and offset) on a half-size copy and resamples the capture
into the reference's frame, so the features are compared where they belong. When ECC from
no shift does not converge, it starts again from the shift phase correlation finds (larger
displacements). A reference view with next to no structure (a plain band) is compared as
captured.

A warp that moves a corner of the view by more than ``MAX_CORNER_SHIFT`` of its diagonal, or
an ECC that does not converge (a blank, foreign or badly placed part), raises
``AlignmentError``: the runtime makes that cell NG with the reason rather than compare it
unregistered.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from linevision.types import PreprocessError

SCALE: Final = 0.5
ITERATIONS: Final = 50
EPSILON: Final = 1e-4
SMOOTHING: Final = 5
MAX_CORNER_SHIFT: Final = 0.08
FEATURELESS_STD: Final = 2.0
SEEN_MARGIN: Final = 1

Pixels = npt.NDArray[np.uint8]
Warp = npt.NDArray[np.float32]


class AlignmentError(PreprocessError):
    """A capture that cannot be registered onto its reference view."""


def _gray(image: Pixels) -> npt.NDArray[np.float32]:
    img = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    small = cv2.resize(img, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.float32)


def _initial_shift(template: npt.NDArray[np.float32], image: npt.NDArray[np.float32]) -> Warp:
    """A translation-only start for ECC from phase correlation (larger shifts converge)."""
    window = cv2.createHanningWindow((template.shape[1], template.shape[0]), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(template, image, window)
    start = np.eye(2, 3, dtype=np.float32)
    start[:, 2] = (dx, dy)
    return start


def _featureless(template: npt.NDArray[np.float32]) -> bool:
    """Too little structure to register on: the view is compared as captured."""
    smooth = cv2.GaussianBlur(template, (0, 0), 1.0)
    return float(np.std(smooth)) < FEATURELESS_STD


def estimate(image: Pixels, reference: Pixels) -> Warp:
    """The 2 x 3 affine warp taking reference coordinates to ``image`` coordinates."""
    if image.shape[:2] != reference.shape[:2]:
        msg = f"capture {image.shape[:2]} and reference {reference.shape[:2]} differ in size"
        raise AlignmentError(msg)
    template, moving = _gray(reference), _gray(image)
    if _featureless(template):
        return np.eye(2, 3, dtype=np.float32)
    try:
        return _ecc(template, moving, np.eye(2, 3, dtype=np.float32), image.shape[:2])
    except AlignmentError:
        return _ecc(template, moving, _initial_shift(template, moving), image.shape[:2])


def _ecc(
    template: npt.NDArray[np.float32],
    moving: npt.NDArray[np.float32],
    start: Warp,
    shape: tuple[int, ...],
) -> Warp:
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ITERATIONS, EPSILON)
    everywhere = np.full(template.shape, 255, dtype=np.uint8)
    try:
        _, found = cv2.findTransformECC(
            template, moving, start, cv2.MOTION_AFFINE, criteria, everywhere, SMOOTHING
        )
    except cv2.error as exc:
        msg = f"no registration onto the reference ({str(exc).strip().splitlines()[-1][:120]})"
        raise AlignmentError(msg) from exc
    warp = np.asarray(found, dtype=np.float32)
    warp[:, 2] /= SCALE
    h, w = shape[0], shape[1]
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], np.float32)
    moved = corners @ warp.T - corners[:, :2]
    shift = float(np.hypot(moved[:, 0], moved[:, 1]).max())
    limit = MAX_CORNER_SHIFT * float(np.hypot(h, w))
    if not np.isfinite(shift) or shift > limit:
        msg = f"registration moves a corner {shift:.0f} px (limit {limit:.0f} px)"
        raise AlignmentError(msg)
    return warp


def align(image: Pixels, reference: Pixels) -> Pixels:
    """``image`` resampled into ``reference``'s frame (same size, 8-bit, gray or BGR)."""
    return _warp(image, estimate(image, reference), reference.shape[:2])


def register(image: Pixels, reference: Pixels) -> tuple[Pixels, Pixels]:
    """``align``, and where the result was seen: 255 where it was resampled from inside the
    captured frame (at least ``SEEN_MARGIN`` px in), 0 where the frame's border was repeated.

    A capture shifted against its reference lacks a strip along one side; the registered view
    repeats the capture's last row or column there, which is no observation of the part.
    """
    warp = estimate(image, reference)
    shape = reference.shape[:2]
    frame = np.full(image.shape[:2], 255, dtype=np.uint8)
    seen = _warp(frame, warp, shape, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT)
    side = 2 * SEEN_MARGIN + 1
    kernel = np.ones((side, side), np.uint8)
    inside = cv2.erode(seen, kernel, borderType=cv2.BORDER_REPLICATE)
    return _warp(image, warp, shape), np.asarray(inside, dtype=np.uint8)


def _warp(
    image: Pixels,
    warp: Warp,
    shape: tuple[int, ...],
    interpolation: int = cv2.INTER_LINEAR,
    border: int = cv2.BORDER_REPLICATE,
) -> Pixels:
    """``image`` sampled at ``warp`` of each pixel of a ``shape`` frame (outside: ``border``,
    zero when constant)."""
    out = cv2.warpAffine(
        image,
        warp,
        (shape[1], shape[0]),
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=border,
        borderValue=0,
    )
    return np.asarray(out, dtype=np.uint8)
