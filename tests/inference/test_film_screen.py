"""The blue-film screen (first stage) on generated film: normal variation passes, any local
change of brightness, texture or colour is flagged; strip by strip as on the whole tile.

The film comes from :mod:`tests.inference.film_tiles`, not from ``linevision.synth``.
"""

from __future__ import annotations

import numpy as np
import pytest

from linevision.inference.film.screen import (
    ScreenScratch,
    calibrate_local_deviation,
    screen_score,
    screen_signal,
    screen_signal_into,
)
from linevision.inference.manifest import ScreenSpec, TileAnomalySpec
from tests.inference import film_tiles

TRAIN = tuple(range(8))
FRESH = tuple(range(100, 112))
HUE_KEPT = ("dark_spot", "light_spot", "bright_break", "dark_break", "crease", "bubble")


FULL_RESOLUTION = {"kernel": 15, "smooth": 3, "column": 255, "scale": 1}
"""The screen as models before the 2 x 2 area-averaged one ran it (they still load)."""


@pytest.fixture(scope="module", params=["half", "full"])
def screen(request: pytest.FixtureRequest) -> ScreenSpec:
    sizes = FULL_RESOLUTION if request.param == "full" else {}
    spec, scores = calibrate_local_deviation([film_tiles.good_tile(s) for s in TRAIN], **sizes)
    assert spec.method == "local_deviation"
    assert spec.scale == (1 if request.param == "full" else 2)
    assert spec.threshold > max(scores)
    return spec


@pytest.fixture(scope="module")
def tophat() -> ScreenSpec:
    """The colour-only screen as the blue-film model shipped it before ``local_deviation``."""
    return ScreenSpec(method="chroma_tophat", kernel=31, smooth=3, threshold=27.0)


def test_good_film_passes(screen: ScreenSpec) -> None:
    # mottle, soft wrinkles, column stripes, light falloff and noise, on tiles not calibrated on
    scores = [screen_score(film_tiles.good_tile(s), screen) for s in FRESH]
    assert max(scores) < screen.threshold, scores


@pytest.mark.parametrize("kind", film_tiles.DEFECTS)
@pytest.mark.parametrize("contrast", [1.0, 0.5])
def test_every_defect_kind_is_flagged(screen: ScreenSpec, kind: str, contrast: float) -> None:
    for seed in (200, 201, 202):
        tile = film_tiles.defect_tile(seed, kind, contrast)
        assert screen_score(tile, screen) >= screen.threshold, (kind, contrast, seed)


@pytest.mark.parametrize("kind", HUE_KEPT)
def test_the_colour_screen_misses_what_keeps_the_hue(
    screen: ScreenSpec, tophat: ScreenSpec, kind: str
) -> None:
    # B - R scales with brightness: the colour screen sees only the strongest such changes
    tile = film_tiles.defect_tile(200, kind, 0.5)
    assert screen_score(tile, tophat) < tophat.threshold
    assert screen_score(tile, screen) >= screen.threshold


def test_the_colour_screen_is_blind_to_an_even_shadow(
    screen: ScreenSpec, tophat: ScreenSpec
) -> None:
    # the same loss in every channel leaves B - R as it was, at any contrast
    tile = film_tiles.defect_tile(200, "shadow", 1.0)
    assert screen_score(tile, tophat) < tophat.threshold
    assert screen_score(tile, screen) >= screen.threshold


def test_the_colour_screen_still_loads_and_sees_grey_matter(tophat: ScreenSpec) -> None:
    assert ScreenSpec.model_validate(tophat.model_dump()).method == "chroma_tophat"
    tile = film_tiles.defect_tile(200, "grey_particle", 1.0)
    assert screen_score(tile, tophat) >= tophat.threshold


def test_bands_with_their_halo_match_the_whole_tile(screen: ScreenSpec) -> None:
    tile = film_tiles.defect_tile(203, "crease")
    whole = screen_signal(tile, screen)
    s, halo, height = screen.scale, screen.halo, tile.shape[0]
    assert whole.shape == (height // s, tile.shape[1] // s)
    scratch = ScreenScratch(tile.shape[1])
    planes = {p.ctypes.data for p in scratch.planes(height // s, tile.shape[1] // s)}
    for y0 in range(0, height, 96):
        y1 = min(y0 + 96, height)
        top, bottom = max(y0 - halo, 0), min(y1 + halo, height)
        band = screen_signal_into(tile[top:bottom], screen, scratch)
        np.testing.assert_array_equal(
            band[(y0 - top) // s : (y1 - top) // s], whole[y0 // s : y1 // s]
        )
        # the signal is one of the preallocated planes, not a fresh array
        assert scratch.rows == height // s
        assert band.base is not None
        assert any(band.ctypes.data == p for p in planes)


def test_calibration_needs_good_film_and_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="at least one good image"):
        calibrate_local_deviation([])
    with pytest.raises(ValueError, match="spread must be > 0"):
        ScreenSpec(
            method="local_deviation", kernel=15, smooth=3, threshold=9.0, spread=(1.0, 0.0, 1.0)
        )
    with pytest.raises(ValueError, match="belong to the local_deviation screen"):
        ScreenSpec(kernel=31, smooth=3, threshold=9.0, column=255)
    with pytest.raises(ValueError, match="belong to the local_deviation screen"):
        ScreenSpec(kernel=31, smooth=3, threshold=9.0, scale=2)


def test_a_screen_scale_that_splits_a_map_cell_is_refused() -> None:
    screen = {"method": "local_deviation", "kernel": 9, "smooth": 1, "threshold": 40.0}
    plan = {"tile": 1024, "overlap": 32, "downscale": 2, "score_threshold": 1.0, "roi": 256}
    TileAnomalySpec.model_validate({**plan, "map_stride": 16, "screen": {**screen, "scale": 2}})
    with pytest.raises(ValueError, match=r"map_stride 16 must be a multiple of screen\.scale"):
        TileAnomalySpec.model_validate({**plan, "map_stride": 16, "screen": {**screen, "scale": 3}})
