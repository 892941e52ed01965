"""The six-view generator: view sizes, capture shifts, NG kinds in the right view and place."""

from __future__ import annotations

import csv
import time

import cv2
import numpy as np
import pytest

from linevision.synth import six_view as sv

DESIGN = sv.dataset_design(1)
N = 8


def _cells(kind: str, seed: int = 3) -> list[sv.Cell]:
    return [sv.sample_cell(DESIGN, kind, np.random.default_rng([seed, i])) for i in range(N)]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def test_kinds_and_view_sizes() -> None:
    assert sv.CLASSES == ("OK", "NG")
    assert sv.NG_KINDS == ("dent", "scratch", "stain", "corner_damage", "tab_deform")
    assert sv.VIEW_SHAPES == ((384, 256), (384, 256), (64, 256), (64, 256), (64, 384), (64, 384))


def test_generate_shapes_dtypes_and_seed_determinism() -> None:
    for kind in sv.KINDS:
        a = sv.generate(DESIGN, kind, np.random.default_rng(2))
        b = sv.generate(DESIGN, kind, np.random.default_rng(2))
        c = sv.generate(DESIGN, kind, np.random.default_rng(5))
        assert [v.shape for v in a.views] == list(sv.VIEW_SHAPES)
        assert [m.shape for m in a.masks] == list(sv.VIEW_SHAPES)
        assert all(v.dtype == np.uint8 for v in a.views + a.masks)
        assert all(np.array_equal(x, y) for x, y in zip(a.views, b.views, strict=True))
        assert not np.array_equal(a.views[0], c.views[0])
        assert a.label == ("OK" if kind == "OK" else "NG")
    assert sv.dataset_design(1).body == DESIGN.body


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown six-view kind"):
        sv.sample_cell(DESIGN, "crack", np.random.default_rng(0))


def test_reference_views_are_clean_and_aligned() -> None:
    refs = sv.reference_views(DESIGN)
    assert [r.shape for r in refs] == list(sv.VIEW_SHAPES)
    assert all(np.array_equal(a, b) for a, b in zip(refs, sv.reference_views(DESIGN), strict=True))
    other = sv.reference_views(sv.dataset_design(2))
    assert not np.array_equal(refs[0], other[0])


def test_captures_are_shifted_and_rotated_against_the_reference() -> None:
    refs = sv.reference_views(DESIGN)
    angles, shifts = [], []
    for i, cell in enumerate(_cells("OK")):
        capture = sv.render(cell, np.random.default_rng(i))
        for view, (image, matrix) in enumerate(zip(capture.views, capture.matrices, strict=True)):
            angle = np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0]))
            h, w = sv.VIEW_SHAPES[view]
            centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
            shift = matrix[:, :2] @ centre + matrix[:, 2] - centre
            angles.append(abs(angle))
            shifts.append(float(np.hypot(*shift)))
            assert abs(angle) <= 2.0
            assert np.hypot(*shift) <= 7.5
            if view == 0:
                warped = cv2.warpAffine(refs[0], matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
                assert _corr(image, warped) > _corr(image, refs[0])
    assert max(angles) > 1.0
    assert max(shifts) > 4.0
    assert np.mean(shifts) > 1.0


def test_lighting_changes_between_captures() -> None:
    cell = _cells("OK")[0]
    means = [float(sv.render(cell, np.random.default_rng(i)).views[0].mean()) for i in range(8)]
    assert np.ptp(means) > 5.0


def test_ok_cells_have_empty_masks_and_vary_within_tolerance() -> None:
    for cell in _cells("OK"):
        assert not any(m.any() for m in sv.defect_masks(cell))
        nominal = sv.nominal_build(DESIGN)
        for quad, ref in zip(cell.build.tabs, nominal.tabs, strict=True):
            assert np.abs(quad - ref).max() <= 1.6
        assert max(abs(s) for s in cell.build.label_shift) <= 1.5


@pytest.mark.parametrize("kind", sv.NG_KINDS)
def test_each_ng_kind_differs_from_the_good_cell_inside_its_mask(kind: str) -> None:
    for i, cell in enumerate(_cells(kind)):
        bad = sv.render(cell, np.random.default_rng(i))
        good = sv.render(cell.without_defect(), np.random.default_rng(i))
        marked = [v for v, m in enumerate(bad.masks) if m.any()]
        assert marked
        if kind != "tab_deform":
            assert marked == [cell.defect.view - 1]
        else:
            assert set(marked) <= {0, 1, 2, 4, 5}
            assert marked[0] in {0, 1, 2}
        for now, then, mask in zip(bad.views, good.views, bad.masks, strict=True):
            diff = np.abs(now.astype(np.float32) - then.astype(np.float32))
            near = cv2.dilate(mask, np.ones((7, 7), np.uint8)) > 0
            assert diff[~near].max() <= 8.0  # the mask marks changes above 6 grey levels
            if mask.any():
                assert diff[mask > 0].max() >= 12.0


def test_write_dataset_layout(tmp_path) -> None:
    assert sv.write_dataset(tmp_path, 4, seed=1) == 4
    for view in range(1, 7):
        ref = cv2.imread(str(tmp_path / "reference" / f"{view}.png"), cv2.IMREAD_UNCHANGED)
        assert ref.shape == sv.VIEW_SHAPES[view - 1]
    with (tmp_path / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["OK", "NG", "OK", "NG"]
    for row in rows:
        assert sorted(p.name for p in (tmp_path / row["cell"]).iterdir()) == [
            f"{v}.png" for v in range(1, 7)
        ]


def test_generation_is_fast() -> None:
    rng = np.random.default_rng(0)
    sv.generate(DESIGN, "OK", rng)
    start = time.perf_counter()
    for i in range(12):
        sv.generate(DESIGN, sv.KINDS[i % len(sv.KINDS)], rng)
    assert (time.perf_counter() - start) / 12 * 1e3 < 60.0


@pytest.mark.parametrize("kind", ["stain", "scratch"])
def test_stains_and_scratches_keep_their_contrast_on_any_surface(kind: str) -> None:
    """The contrast is to the surface under the defect (face, edge or label), not a fixed grey."""
    ratios = []
    for i in range(60):
        cell = sv.sample_cell(sv.dataset_design(i), kind, np.random.default_rng([11, i]))
        assert cell.defect is not None
        v = cell.defect.view - 1
        now = sv.canonical_views(cell)[v]
        then = sv.canonical_views(cell.without_defect())[v]
        ratios.append(float(np.abs(now - then).max()) / abs(cell.defect.level))
    assert min(ratios) >= 0.5
