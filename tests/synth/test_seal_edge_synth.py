"""The seal-edge generator: determinism, tolerances of good seals, NG kinds in the right place."""

from __future__ import annotations

import csv
import time

import cv2
import numpy as np
import pytest

from linevision.synth import seal_edge as se

N = 20


def _scenes(kind: str, seed: int = 5) -> list[se.Scene]:
    return [se.sample_scene(kind, np.random.default_rng([seed, i])) for i in range(N)]


def test_kinds_and_classes() -> None:
    assert se.CLASSES == ("OK", "NG")
    assert se.NG_KINDS == (
        "crack",
        "uneven_width",
        "foreign_matter",
        "wrinkle",
        "bubble",
        "misplaced",
    )


def test_generate_shape_dtype_and_seed_determinism() -> None:
    for kind in se.KINDS:
        a = se.generate(kind, np.random.default_rng(3))
        b = se.generate(kind, np.random.default_rng(3))
        c = se.generate(kind, np.random.default_rng(4))
        assert a.image.shape == a.mask.shape == (se.HEIGHT, se.WIDTH) == (128, 512)
        assert a.image.dtype == a.mask.dtype == np.uint8
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.mask, b.mask)
        assert not np.array_equal(a.image, c.image)
        assert a.label == ("OK" if kind == "OK" else "NG")
        assert a.mask.any() == (kind != "OK")


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown seal-edge kind"):
        se.generate("scratch", np.random.default_rng(0))


def test_good_seals_vary_within_tolerance() -> None:
    scenes = _scenes("OK")
    for scene in scenes:
        g = scene.geometry
        assert np.all(np.abs(g.margin_mm - se.MARGIN_MM) <= se.MARGIN_TOL_MM)
        assert np.all(np.abs(g.flange_mm - se.FLANGE_MM) <= se.TRIM_TOL_MM)
        assert np.all(np.abs(g.seal_mm - se.SEAL_MM) <= 0.1)
        assert float(np.ptp(g.seal_mm)) <= 0.1
    margins = [float(s.geometry.margin_mm.mean()) for s in scenes]
    positions = [float(s.geometry.seal_in.mean()) for s in scenes]
    tilts = [float(s.geometry.seal_in[-1] - s.geometry.seal_in[0]) for s in scenes]
    assert np.ptp(margins) > 0.2
    assert np.ptp(positions) > 5.0
    assert np.ptp(tilts) > 2.0
    means = [float(se.render(s, np.random.default_rng(i)).mean()) for i, s in enumerate(scenes)]
    assert np.ptp(means) > 8.0


def test_the_trimmed_edge_is_where_the_geometry_puts_it() -> None:
    for i, scene in enumerate(_scenes("OK")):
        image = se.render(scene, np.random.default_rng(i)).astype(np.float32)
        drop = image[:-1] - image[1:]
        found = np.argmax(drop[60:], axis=0) + 60.5
        assert np.abs(found - scene.geometry.trim).max() < 1.5


def test_geometric_ng_kinds_are_out_of_tolerance() -> None:
    for scene in _scenes("misplaced"):
        g = scene.geometry
        margin_off = abs(float(g.margin_mm.mean()) - se.MARGIN_MM)
        flange_off = abs(float(g.flange_mm.mean()) - se.FLANGE_MM)
        assert margin_off >= se.MARGIN_TOL_MM + 0.15 or flange_off >= se.TRIM_TOL_MM + 0.15
    for scene in _scenes("uneven_width"):
        assert float(np.ptp(scene.geometry.seal_mm)) >= 0.55


@pytest.mark.parametrize("kind", se.NG_KINDS)
def test_each_ng_kind_differs_from_the_good_seal_inside_its_mask(kind: str) -> None:
    for i, scene in enumerate(_scenes(kind)):
        bad = se.render(scene, np.random.default_rng(i)).astype(np.float32)
        good = se.render(scene.without_defect(), np.random.default_rng(i)).astype(np.float32)
        mask = se.defect_mask(scene) > 0
        diff = np.abs(bad - good)
        near = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
        assert mask.any()
        assert diff[mask].max() >= 10.0
        assert diff[~near].max() <= 2.0


def test_subtle_defects_exist() -> None:
    small = [int((se.defect_mask(s) > 0).sum()) for s in _scenes("foreign_matter", seed=8)]
    short = [int((se.defect_mask(s) > 0).sum()) for s in _scenes("crack", seed=8)]
    assert min(small) < 60
    assert min(short) < 60


def test_reference_is_the_nominal_seal() -> None:
    ref = se.reference()
    assert ref.shape == (128, 512)
    assert ref.dtype == np.uint8
    assert np.array_equal(ref, se.reference())
    g = se.nominal_scene().geometry
    assert np.allclose(g.margin_mm, se.MARGIN_MM)
    assert np.allclose(g.seal_mm, se.SEAL_MM)
    assert np.allclose(g.flange_mm, se.FLANGE_MM)
    rows_ref = ref.mean(axis=1)
    for i in range(5):
        good = se.generate("OK", np.random.default_rng(i)).image
        assert np.corrcoef(rows_ref, good.astype(np.float32).mean(axis=1))[0, 1] > 0.5


def test_write_dataset_labels_reference_and_kinds(tmp_path) -> None:
    count = se.write_dataset(tmp_path, 14, seed=2)
    assert count == 14
    assert cv2.imread(str(tmp_path / "reference.png"), cv2.IMREAD_UNCHANGED).shape == (128, 512)
    with (tmp_path / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows].count("NG") == 7
    kinds = {r["image"].split("_", 1)[1].removesuffix(".png") for r in rows}
    assert kinds == set(se.KINDS)
    first = cv2.imread(str(tmp_path / rows[3]["image"]), cv2.IMREAD_UNCHANGED)
    again = se.generate(se.dataset_kind(3, 0.5), np.random.default_rng([2, 3])).image
    assert np.array_equal(first, again)


def test_generation_is_fast() -> None:
    rng = np.random.default_rng(0)
    se.generate("OK", rng)
    start = time.perf_counter()
    for i in range(35):
        se.generate(se.KINDS[i % len(se.KINDS)], rng)
    assert (time.perf_counter() - start) / 35 * 1e3 < 20.0
