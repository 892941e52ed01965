"""Registration of a capture onto its reference view (ECC, affine) before comparison."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from linevision.inference.align import SEEN_MARGIN, AlignmentError, align, estimate, register
from linevision.synth import six_view as sv

REFERENCE = sv.reference_views(sv.dataset_design(7))


def _captured(
    view: np.ndarray, angle: float, scale: float, shift: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    h, w = view.shape
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, scale)
    matrix[:, 2] += shift
    moved = cv2.warpAffine(view.astype(np.float32), matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
    noise = np.random.default_rng(seed).normal(0.0, 2.0, moved.shape)
    out = np.clip(moved * 1.1 - 6.0 + noise, 0, 255).astype(np.uint8)
    return out, matrix


def _mismatch(a: np.ndarray, b: np.ndarray) -> float:
    """99th percentile of |a - b| after each is scaled to zero mean and unit spread."""
    za = (a - a.mean()) / a.std()
    zb = (b - b.mean()) / b.std()
    return float(np.percentile(np.abs(za - zb), 99))


@pytest.mark.parametrize("view", range(6))
def test_a_shifted_rotated_scaled_capture_is_brought_back_onto_its_reference(view: int) -> None:
    ref = REFERENCE[view]
    image, matrix = _captured(ref, 1.8, 1.012, (4.5, -3.5), seed=view)
    warp = estimate(image, ref)
    h, w = ref.shape
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float)
    assert np.abs(corners @ warp.T - corners @ matrix.T).max() < 1.0  # sub-pixel
    aligned = align(image, ref)
    assert aligned.shape == ref.shape
    assert aligned.dtype == np.uint8
    assert _mismatch(aligned, ref) < 0.5 * _mismatch(image, ref)


def test_a_colour_capture_is_aligned_and_stays_colour() -> None:
    ref = REFERENCE[0]
    image, _ = _captured(ref, -1.0, 0.99, (-3.0, 2.0), seed=9)
    out = align(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), cv2.cvtColor(ref, cv2.COLOR_GRAY2BGR))
    assert out.shape == (*ref.shape, 3)
    assert _mismatch(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), ref) < 0.5 * _mismatch(image, ref)


def test_a_blank_capture_cannot_be_registered() -> None:
    ref = REFERENCE[0]
    with pytest.raises(AlignmentError, match="no registration"):
        align(np.full_like(ref, 128), ref)


def test_a_part_far_out_of_place_is_refused() -> None:
    ref = REFERENCE[0]
    h, w = ref.shape
    far = np.float32([[1, 0, 0.3 * w], [0, 1, 0.25 * h]])
    image = cv2.warpAffine(ref, far, (w, h), borderMode=cv2.BORDER_REPLICATE)
    with pytest.raises(AlignmentError):
        align(image, ref)


def test_a_capture_of_another_size_is_refused() -> None:
    with pytest.raises(AlignmentError, match="differ in size"):
        align(REFERENCE[2], REFERENCE[0])


def test_a_shift_beyond_the_ecc_basin_is_found_from_phase_correlation() -> None:
    ref = REFERENCE[0]
    image, matrix = _captured(ref, 0.8, 1.0, (18.0, -14.0), seed=4)
    warp = estimate(image, ref)
    assert np.abs(warp[:, 2] - matrix[:, 2]).max() < 1.0


def test_a_featureless_view_is_compared_as_captured() -> None:
    band = np.full((64, 256), 150, np.uint8)
    image = np.clip(band + np.random.default_rng(1).normal(0, 1.0, band.shape), 0, 255)
    out = align(image.astype(np.uint8), band)
    assert np.array_equal(out, image.astype(np.uint8))


def test_register_marks_the_strip_a_shifted_capture_never_saw() -> None:
    ref = REFERENCE[0]
    image, _ = _captured(ref, 0.0, 1.0, (-6.0, 0.0), seed=11)  # the part moved 6 px left
    pixels, seen = register(image, ref)
    np.testing.assert_array_equal(pixels, align(image, ref))
    h, w = ref.shape
    assert seen.shape == (h, w)
    assert seen.dtype == np.uint8
    # the reference's first 6 columns lie outside the capture; one more column of margin
    assert not seen[:, : 6 + SEEN_MARGIN].any()
    assert seen[:, 8 + SEEN_MARGIN :].all()
