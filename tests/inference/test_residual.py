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
    edge_residual,
    pooled,
    residual,
)
from linevision.synth import six_view as sv
from linevision.synth._six_view_parts import body_box

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
    assert maps.shape == (CHANNELS["envelope"], 12, 12)
    assert maps[1, 8:10, 8:10].max() > 1.0  # the fall, in the spot's cells
    assert maps[1, :6].max() < 0.1  # nothing far from it


def _banded(border: int) -> np.ndarray:
    """A bright pouch with a dark band whose lower border runs along row ``border``."""
    img = np.full((96, 160), 190, np.uint8)
    img[20:border] = 60
    return img


def test_a_line_along_a_border_hides_in_the_envelope_but_not_in_the_slopes() -> None:
    """A bright scratch 2 px inside a dark band's border lies between the border's two grey
    levels, so the envelope accepts all of it; where it starts and ends it adds slopes across
    the border's direction that the reference has nowhere near, which the edge channel shows.
    The border itself moved by 2 px leaves neither."""
    ref = _banded(60)
    env = Envelope.of(ref)
    moved = _banded(62)
    scratched = ref.copy()
    scratched[58, 30:130] = 170  # 1 px wide, 2 px inside the border, 110 levels bright
    assert float(np.abs(residual(scratched, env)).max()) < 1.0  # hidden in the envelope
    assert float(edge_residual(moved, env).max()) < 1.0
    edges = edge_residual(scratched, env)
    assert float(edges[50:66, 26:34].max()) > 5.0  # its start
    assert float(edges[50:66, 126:134].max()) > 5.0  # its end
    maps = channels(scratched, env, 8, mode="envelope_edges")
    assert maps.shape == (CHANNELS["envelope_edges"], 12, 20)
    assert np.array_equal(maps[:2], channels(scratched, env, 8))  # the envelope's two first
    assert maps[2, 7, 3] > 0.5
    assert maps[2, 7, 16] > 0.5
    assert maps[2, :5].max() < 0.05  # nothing far from it
    assert float(np.abs(channels(moved, env, 8, mode="envelope_edges")).max()) < 0.05


def _border_scratch(seed: int) -> sv.Cell:
    """A scratch on an edge view that the generator pressed against the body's border (at
    least three of its points clamped 2 px inside), drawn again until one is."""
    for attempt in range(2000):
        cell = sv.sample_cell(DESIGN, "scratch", np.random.default_rng([seed, attempt]))
        assert cell.defect is not None
        if cell.defect.view in {1, 2}:
            continue
        x0, y0, x1, y1 = body_box(DESIGN, cell.defect.view)
        xs, ys = cell.defect.points[:, 0], cell.defect.points[:, 1]
        on_border = np.isclose(xs, x0 + 2) | np.isclose(xs, x1 - 2)
        on_border |= np.isclose(ys, y0 + 2) | np.isclose(ys, y1 - 2)
        if int(on_border.sum()) >= 3:
            return cell
    pytest.fail("no scratch along a border in 2000 draws")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_scratch_along_an_edge_views_border_shows_in_the_edge_channel(seed: int) -> None:
    cell = _border_scratch(seed)
    assert cell.defect is not None
    v = cell.defect.view - 1
    env = Envelope.of(REFERENCE[v])
    scratched = sv.render(cell, np.random.default_rng(seed)).views[v]
    healthy = sv.render(cell.without_defect(), np.random.default_rng(seed)).views[v]
    edge = []
    for img in (scratched, healthy):
        registered, seen = register(img, REFERENCE[v])
        edge.append(channels(registered, env, 8, seen, mode="envelope_edges")[2].max())
    assert edge[0] > 2.5 * edge[1]


def test_the_edge_channel_keeps_to_what_was_seen() -> None:
    ref = _banded(60)
    env = Envelope.of(ref)
    scratched = ref.copy()
    scratched[58, 30:130] = 170
    seen = np.full(ref.shape, 255, np.uint8)
    seen[:, :80] = 0
    out = edge_residual(scratched, env, seen)
    assert float(out[:, : 80 - 3].max()) == 0.0  # the scratch's start was not seen
    assert float(out[:, 120:].max()) > 5.0  # its end was


def test_mode_none_has_no_channels() -> None:
    ref = _banded(60)
    with pytest.raises(ValueError, match="no residual channels"):
        channels(ref, Envelope.of(ref), 8, mode="none")


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
