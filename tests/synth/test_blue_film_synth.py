"""The blue-film generator: frame and tile shapes, speed, line-scan look, tiny defects in masks."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from linevision.synth import blue_film as bf


def test_kinds_and_defaults() -> None:
    assert bf.CLASSES == ("OK", "NG")
    assert bf.NG_KINDS == ("break", "white", "black")
    assert (bf.WIDTH, bf.HEIGHT, bf.TILE, bf.MIN_DEFECT_PX) == (4000, 18000, 1024, 3)


def test_frame_shapes_dtypes_and_seed_determinism() -> None:
    a = bf.generate_frame(np.random.default_rng(1), ("break", "white"), width=1024, height=2048)
    b = bf.generate_frame(np.random.default_rng(1), ("break", "white"), width=1024, height=2048)
    c = bf.generate_frame(np.random.default_rng(2), ("break", "white"), width=1024, height=2048)
    assert a.image.shape == (2048, 1024, 3)
    assert a.mask.shape == (2048, 1024)
    assert a.image.dtype == a.mask.dtype == np.uint8
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)
    assert a.label == "NG"
    assert [d.kind for d in a.defects] == ["break", "white"]
    good = bf.generate_frame(np.random.default_rng(1), width=1024, height=1024)
    assert good.label == "OK"
    assert not good.mask.any()


def test_the_film_is_blue() -> None:
    image = bf.generate_tile(np.random.default_rng(0)).image
    b, g, r = (float(image[..., k].mean()) for k in range(3))
    assert b > g + 30.0 > r + 60.0


def test_full_frame_has_every_defect_in_its_mask() -> None:
    frame = bf.generate_frame(np.random.default_rng(0), ("break", "white", "black"))
    assert frame.image.shape == (18000, 4000, 3)
    assert frame.mask.shape == (18000, 4000)
    for defect in frame.defects:
        assert frame.mask[round(defect.y), round(defect.x)] == 255


def test_line_scan_look_light_profile_and_column_pattern() -> None:
    frame = bf.generate_frame(np.random.default_rng(4), width=4000, height=1024)
    cols = frame.image[..., 0].astype(np.float32).mean(axis=0)
    assert cols[:200].mean() < cols[1900:2100].mean() - 2.0
    assert cols[-200:].mean() < cols[1900:2100].mean() - 2.0
    smooth = cv2.GaussianBlur(cols[None, :], (0, 0), 8.0)[0]
    assert float((cols - smooth)[50:-50].std()) > 0.3


@pytest.mark.parametrize("kind", bf.NG_KINDS)
def test_three_pixel_defects_are_visible_and_in_the_mask(kind: str) -> None:
    for seed in range(5):
        bad = bf.generate_tile(np.random.default_rng(seed), kind, defect_px=3)
        good = bf.generate_tile(np.random.default_rng(seed), "OK")
        assert bad.defects[0].size == 3
        count, _, stats, _ = cv2.connectedComponentsWithStats(bad.mask)
        assert count == 2
        width, height = stats[1, cv2.CC_STAT_WIDTH], stats[1, cv2.CC_STAT_HEIGHT]
        assert 2 <= min(width, height) <= max(width, height) <= 5
        diff = np.abs(bad.image.astype(np.int16) - good.image.astype(np.int16)).max(axis=2)
        assert diff[bad.mask > 0].max() >= 40
        near = cv2.dilate(bad.mask, np.ones((5, 5), np.uint8)) > 0
        assert diff[~near].max() == 0


def test_defect_sizes_range_from_three_pixels_up() -> None:
    sizes = []
    for seed in range(40):
        tile = bf.generate_tile(np.random.default_rng(seed), bf.NG_KINDS[seed % 3], size=256)
        sizes.append(tile.defects[0].size)
        assert tile.mask.any()
    assert min(sizes) < 5.0
    assert max(sizes) > 20.0


def test_tile_default_size_and_kinds() -> None:
    tile = bf.generate_tile(np.random.default_rng(0), "black")
    assert tile.image.shape == (1024, 1024, 3)
    assert tile.label == "NG"
    with pytest.raises(ValueError, match="unknown blue-film kind"):
        bf.generate_tile(np.random.default_rng(0), "scratch")


def test_write_dataset_frames_masks_and_ok_only(tmp_path) -> None:
    assert bf.write_dataset(tmp_path / "mixed", 4, seed=3, size=(1024, 1536)) == 4
    with (tmp_path / "mixed" / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["OK", "NG", "OK", "NG"]
    for row in rows:
        image = cv2.imread(str(tmp_path / "mixed" / row["image"]), cv2.IMREAD_UNCHANGED)
        assert image.shape == (1536, 1024, 3)
        assert (row["mask"] == "") == (row["label"] == "OK")
        if row["mask"]:
            mask = cv2.imread(str(tmp_path / "mixed" / row["mask"]), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (1536, 1024)
            assert mask.any()
    bf.write_dataset(tmp_path / "good", 2, seed=3, size=(1024, 1024), ng_fraction=0.0)
    with (tmp_path / "good" / "labels.csv").open() as f:
        assert [r["label"] for r in csv.DictReader(f)] == ["OK", "OK"]
