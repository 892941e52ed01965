"""The pole-piece crop generator: determinism, shapes, the folder contract, class geometry."""

from __future__ import annotations

import csv
import time

import cv2
import numpy as np
import pytest

from linevision.synth import pole_piece as pp

N_SCENES = 30


def _scenes(label: str, seed: int = 11) -> list[tuple[pp.Scene, np.ndarray]]:
    """Scenes of one class with their clean (canonical, nuisance-free) renderings."""
    out = []
    for i in range(N_SCENES):
        rng = np.random.default_rng([seed, pp.CLASSES.index(label), i])
        scene = pp.sample_scene(label, rng)
        out.append((scene, pp.render(scene, rng, clean=True)))
    return out


def _bright(scene: pp.Scene, image: np.ndarray) -> np.ndarray:
    """Pixels at foil brightness: above the midpoint of foil and the brightest separator level."""
    top = max(scene.band_level, scene.line_level, scene.outer_level)
    return image.astype(np.float32) > (scene.foil_level + top) / 2.0


def _cols() -> np.ndarray:
    return np.arange(pp.SIZE, dtype=np.float32)[None, :]


def _beyond_line(scene: pp.Scene) -> np.ndarray:
    return _cols() > scene.boundary[:, None] + scene.line_width / 2.0 + 1.0


def _last_bright_col(mask: np.ndarray) -> np.ndarray:
    cols = np.where(mask, np.arange(pp.SIZE)[None, :], -1)
    return cols.max(axis=1)


def test_classes_are_the_papers_five() -> None:
    assert pp.CLASSES == ("Normal", "Short", "Long", "Powder", "Other")


def test_generate_shape_dtype_and_seed_determinism() -> None:
    for label in pp.CLASSES:
        a = pp.generate(label, np.random.default_rng(3))
        b = pp.generate(label, np.random.default_rng(3))
        c = pp.generate(label, np.random.default_rng(4))
        assert a.shape == (224, 224)
        assert a.dtype == np.uint8
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)


def test_generate_rejects_unknown_label() -> None:
    with pytest.raises(ValueError, match="unknown pole-piece class"):
        pp.generate("Burr", np.random.default_rng(0))


def test_generate_batch_shapes_labels_and_determinism() -> None:
    images, labels = pp.generate_batch(3, seed=7)
    assert images.shape == (15, 224, 224)
    assert images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    again, _ = pp.generate_batch(3, seed=7)
    other, _ = pp.generate_batch(3, seed=8)
    assert np.array_equal(images, again)
    assert not np.array_equal(images, other)
    assert all(float(img.std()) > 5.0 for img in images)


def test_generate_batch_prefix_is_stable_when_count_grows() -> None:
    small, _ = pp.generate_batch(1, seed=5)
    large, _ = pp.generate_batch(2, seed=5)
    assert np.array_equal(small, large[0::2])


def test_generate_batch_rejects_negative_count() -> None:
    with pytest.raises(ValueError, match="n_per_class"):
        pp.generate_batch(-1, seed=0)


def test_write_dataset_folder_contract(tmp_path) -> None:
    count = pp.write_dataset(tmp_path / "ds", n_per_class=2, seed=9)
    assert count == 10
    images, labels = pp.generate_batch(2, seed=9)
    with (tmp_path / "ds" / "labels.csv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "label"]
    expected = [[f"{c}/{c}_{i:05d}.png", c] for c in pp.CLASSES for i in range(2)]
    assert rows[1:] == expected
    for (name, _), image in zip(expected, images, strict=True):
        loaded = cv2.imread(str(tmp_path / "ds" / name), cv2.IMREAD_UNCHANGED)
        assert loaded.dtype == np.uint8
        assert loaded.shape == (224, 224)
        assert np.array_equal(loaded, image)
    assert [pp.CLASSES[k] for k in labels] == [row[1] for row in expected]
    assert len(list((tmp_path / "ds").rglob("*.png"))) == 10


def test_scene_geometry_matches_the_class() -> None:
    for scene, _ in _scenes("Normal"):
        assert not scene.burrs
        assert scene.defect == "none"
    for scene, _ in _scenes("Short"):
        assert scene.burrs
        for burr in scene.burrs:
            limit = scene.boundary_at(burr.tip_row) - scene.line_width / 2.0
            assert scene.burr_tip_col(burr) < limit
    for scene, _ in _scenes("Long"):
        crossing = [
            b
            for b in scene.burrs
            if scene.burr_tip_col(b) > scene.boundary_at(b.tip_row) + scene.line_width / 2.0 + 2.0
        ]
        assert crossing
    for scene, _ in _scenes("Powder"):
        assert len(scene.particles) >= 5
        assert not scene.burrs
    for scene, _ in _scenes("Other"):
        assert scene.defect in {"crush", "break"}
        start, stop = scene.defect_rows
        assert stop - start >= 12


def test_long_burrs_cross_the_separator_line_in_pixels() -> None:
    for scene, image in _scenes("Long"):
        assert (_bright(scene, image) & _beyond_line(scene)).any()


def test_short_burrs_stay_short_of_the_separator_line_in_pixels() -> None:
    for scene, image in _scenes("Short"):
        bright = _bright(scene, image)
        assert not (bright & _beyond_line(scene)).any()
        protrusion = _last_bright_col(bright) - scene.edge
        assert protrusion.max() >= 4.0


def test_normal_edges_are_smooth_and_clear_of_the_band() -> None:
    for scene, image in _scenes("Normal"):
        bright = _bright(scene, image)
        assert not (bright & _beyond_line(scene)).any()
        edge = _last_bright_col(bright)
        assert np.abs(edge - scene.edge).max() <= 1.5
        assert np.abs(np.diff(edge)).max() <= 1


def test_powder_specks_lie_in_the_band_and_normal_band_is_clean() -> None:
    def band_specks(scene: pp.Scene, image: np.ndarray) -> int:
        cols = _cols()
        band = (cols > scene.edge[:, None] + 2.0) & (
            cols < scene.boundary[:, None] - scene.line_width / 2.0 - 2.0
        )
        odd = np.abs(image.astype(np.float32) - scene.band_level) > 20.0
        count, _ = cv2.connectedComponents((band & odd).astype(np.uint8))
        return count - 1

    assert all(band_specks(s, img) >= 1 for s, img in _scenes("Powder"))
    assert all(band_specks(s, img) == 0 for s, img in _scenes("Normal"))


def test_other_is_a_crushed_edge_or_a_torn_separator_in_pixels() -> None:
    kinds = set()
    for scene, image in _scenes("Other"):
        kinds.add(scene.defect)
        start, stop = scene.defect_rows
        mid = (start + stop) // 2
        if scene.defect == "crush":
            edge = _last_bright_col(_bright(scene, image))
            undisturbed = np.median(np.delete(edge, np.s_[start:stop]))
            assert edge[start:stop].min() <= undisturbed - 3
        else:
            col = round(scene.boundary_at(mid))
            assert abs(float(image[mid, col]) - scene.defect_level) < 2.0
    assert kinds == {"crush", "break"}


def test_nuisance_changes_pixels_but_not_the_scene() -> None:
    rng = np.random.default_rng(21)
    scene = pp.sample_scene("Short", rng)
    noisy = pp.render(scene, np.random.default_rng(1))
    clean = pp.render(scene, np.random.default_rng(1), clean=True)
    assert noisy.shape == clean.shape == (224, 224)
    assert not np.array_equal(noisy, clean)


def test_generation_is_fast() -> None:
    rng = np.random.default_rng(0)
    for label in pp.CLASSES:
        pp.generate(label, rng)
    start = time.perf_counter()
    n = 0
    for _ in range(20):
        for label in pp.CLASSES:
            pp.generate(label, rng)
            n += 1
    per_image_ms = (time.perf_counter() - start) / n * 1e3
    assert per_image_ms < 15.0
