"""Pixel residual of a registered capture against its reference (six_view's extra channels)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from linevision.inference.align import align, register
from linevision.inference.residual import (
    CHANNELS,
    EDGE,
    Envelope,
    channels,
    pooled,
    residual,
)
from linevision.synth import six_view as sv

DESIGN = sv.dataset_design(11)
REFERENCE = sv.reference_views(DESIGN)


def _dent_cell(seed: int) -> sv.Cell:
    """A dent on the front face (view 1), drawn again until it lands on the printed label."""
    x0, y0, x1, y1 = DESIGN.label_box
    for attempt in range(200):
        cell = sv.sample_cell(DESIGN, "dent", np.random.default_rng([seed, attempt]))
        assert cell.defect is not None
        (cx, cy), _ = cell.defect.points
        if cell.defect.view == 1 and x0 < cx < x1 and y0 < cy < y1:
            return cell
    pytest.fail("no dent on the label in 200 draws")


def test_a_uniform_gain_offset_and_light_slope_leave_no_residual() -> None:
    ref = REFERENCE[0]
    h, w = ref.shape
    slope = np.linspace(0.93, 1.07, w, dtype=np.float32)[None, :]
    lit = ref.astype(np.float32) * 0.9 * slope + 9.0
    assert lit.max() < 255.0  # no clipping
    lit = np.rint(lit).astype(np.uint8)
    out = residual(lit, Envelope.of(ref))
    assert out.shape == (h, w)
    assert float(np.abs(out).max()) < 3.0  # rounding to 8 bits only


def test_an_edge_moved_by_two_pixels_leaves_nothing_a_dark_spot_does() -> None:
    ref = np.full((96, 96), 200, np.uint8)
    ref[:, 40:56] = 40  # a printed bar
    env = Envelope.of(ref)
    moved = np.roll(ref, 2, axis=1)
    assert float(np.abs(residual(moved, env)).max()) < 3.0
    spot = ref.copy()
    spot[70:76, 70:76] = 120
    maps = channels(spot, env, 8)
    assert maps.shape == (CHANNELS, 12, 12)
    assert maps[1, 8:10, 8:10].max() > 1.0  # the fall, in the spot's cells
    assert maps[1, :6].max() < 0.1  # nothing far from it


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_dent_on_the_label_stands_above_its_healthy_twin(seed: int) -> None:
    """The same cell captured with the same camera draws, with and without its dent."""
    cell = _dent_cell(seed)
    dented = sv.render(cell, np.random.default_rng(seed)).views[0]
    healthy = sv.render(cell.without_defect(), np.random.default_rng(seed)).views[0]
    env = Envelope.of(REFERENCE[0])
    dent = channels(align(dented, REFERENCE[0]), env, 8).max()
    good = channels(align(healthy, REFERENCE[0]), env, 8).max()
    assert dent > 1.5 * good


def test_pooling_keeps_the_largest_rise_and_fall_per_cell() -> None:
    signed = np.zeros((16, 16), np.float32)
    signed[3, 4] = 64.0
    signed[12, 13] = -32.0
    out = pooled(signed, 8)
    assert out.shape == (2, 2, 2)
    np.testing.assert_allclose(out[0], [[2.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(out[1], [[0.0, 0.0], [0.0, 1.0]])


def test_a_capture_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        residual(np.zeros((10, 12), np.uint8), Envelope.of(np.zeros((10, 10), np.uint8)))


def test_pooling_equals_the_reshaped_maximum_on_random_maps() -> None:
    signed = np.random.default_rng(4).normal(0.0, 20.0, (70, 45)).astype(np.float32)
    cells = signed[:64, :40].reshape(8, 8, 5, 8)
    out = pooled(signed, 8)
    np.testing.assert_array_equal(out[0] * 32.0, cells.max(axis=(1, 3)))
    np.testing.assert_array_equal(out[1] * 32.0, -cells.min(axis=(1, 3)))


def test_what_was_not_seen_or_lies_on_the_frame_edge_leaves_no_residual() -> None:
    ref = np.full((64, 96), 120, np.uint8)
    env = Envelope.of(ref)
    capture = ref.copy()
    capture[20:26, 80:86] = 30  # a dark spot in a strip the camera did not see
    capture[20:26, 30:36] = 30  # the same spot where it did
    capture[:, :EDGE] = 250  # the frame's outermost columns
    seen = np.full(ref.shape, 255, np.uint8)
    seen[:, 78:] = 0
    out = residual(capture, env, seen)
    assert float(out[16:30, 26:40].min()) < -30.0
    assert float(np.abs(out[:, 84:]).max()) < 3.0
    assert float(np.abs(out[:, : 2 * EDGE]).max()) < 15.0  # only the blur of the masked edge
    unmasked = residual(capture, env)
    assert float(unmasked[16:30, 76:90].min()) < -30.0


def test_a_part_running_off_the_frame_leaves_no_residual_where_its_border_repeats() -> None:
    """A tab ending 8 px before the frame's end, captured 10 px further along: the camera's
    frame cuts it, and the registered view repeats the cut tab where the reference is dark."""
    ref = REFERENCE[4].copy()
    h, w = ref.shape
    ref[28:36, w - 60 : w - 8] = 220
    matrix = np.float32([[1.0, 0.0, 10.0], [0.0, 1.0, 0.0]])
    moved = cv2.warpAffine(ref, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
    env = Envelope.of(ref)
    pixels, seen = register(moved, ref)
    assert float(np.abs(residual(pixels, env)).max()) > 50.0  # the repeated tab, unmasked
    assert float(np.abs(residual(pixels, env, seen)).max()) < 8.0
