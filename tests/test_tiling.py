import doctest
import itertools

import numpy as np
import pytest

from linevision import tiling
from linevision.tiling import axis_starts, plan_tiles, stitch, tiles_ready


def test_doctests():
    failures, _ = doctest.testmod(tiling)
    assert failures == 0


@pytest.mark.parametrize("height", [1, 500, 1024, 1025, 3000])
@pytest.mark.parametrize("width", [7, 1024, 2100])
@pytest.mark.parametrize(("tile", "overlap"), [(1024, 0), (1024, 64), (256, 32), (100, 37)])
def test_every_pixel_covered_and_owned_exactly_once(height, width, tile, overlap):
    plan = plan_tiles(height, width, tile, overlap)
    cover = np.zeros((height, width), np.uint8)
    owned = np.zeros((height, width), np.uint8)
    for t in plan:
        assert 0 <= t.y0 < t.y1 <= height
        assert 0 <= t.x0 < t.x1 <= width
        assert t.y1 - t.y0 == min(tile, height)
        assert t.x1 - t.x0 == min(tile, width)
        assert t.y0 <= t.own_y0 < t.own_y1 <= t.y1
        assert t.x0 <= t.own_x0 < t.own_x1 <= t.x1
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
        owned[t.own_y0 : t.own_y1, t.own_x0 : t.own_x1] += 1
    assert cover.min() >= 1
    assert (owned == 1).all()


def test_overlap_between_neighbours_is_at_least_requested():
    starts = axis_starts(18000, 1024, 64)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g <= 1024 - 64 for g in gaps)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(0, 10, 0), (10, 0, 0), (10, 8, 8), (10, 8, -1)]
)
def test_bad_arguments_raise(length, tile, overlap):
    with pytest.raises(ValueError):
        axis_starts(length, tile, overlap)


def test_stitch_reassembles_the_frame_from_tile_views():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (3000, 2100), dtype=np.uint8)
    plan = plan_tiles(*frame.shape, 1024, 100)
    results = {(t.row, t.col): frame[t.y0 : t.y1, t.x0 : t.x1] for t in plan}
    out = stitch(plan, results, np.zeros_like(frame))
    assert np.array_equal(out, frame)


def test_tiles_are_views_not_copies():
    frame = np.zeros((2048, 2048), np.uint8)
    t = plan_tiles(*frame.shape, 1024, 0)[3]
    view = frame[t.y0 : t.y1, t.x0 : t.x1]
    assert np.shares_memory(view, frame)


def test_tiles_ready_grows_with_lines_and_ends_with_all():
    plan = plan_tiles(18000, 4000, 1024, 64)
    seen = 0
    for lines in range(0, 18001, 1000):
        ready = tiles_ready(plan, lines)
        assert len(ready) >= seen
        assert all(t.y1 <= lines for t in ready)
        seen = len(ready)
    assert seen == len(plan)


def test_stitch_rejects_wrong_result_shape():
    plan = plan_tiles(100, 100, 64, 0)
    with pytest.raises(ValueError, match="result shape"):
        stitch(plan, {(0, 0): np.zeros((3, 3))}, np.zeros((100, 100)))
