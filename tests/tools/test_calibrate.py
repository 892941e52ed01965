"""``linevision calibrate``: a product's own six_view threshold from its good cells."""

from __future__ import annotations

import doctest
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from linevision.cli import main
from linevision.inference import calibration
from linevision.inference.manifest import ModelFileError, load_manifest
from linevision.inference.reference import ReferenceModel, margin
from linevision.stations.reference import ReferenceImageError, ReferenceStation
from linevision.synth import six_view
from linevision.synth.contract import read_labels, reference_paths
from linevision.tools import calibrate
from linevision.train.folder_data import read_image
from linevision.types import Frame

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "six_view"
DESIGN = 7101
CAMERAS = tuple(f"v{v}" for v in six_view.VIEWS)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """The fewest good cells calibration accepts, of one product."""
    out = tmp_path_factory.mktemp("good")
    six_view.write_dataset(out, calibrate.MIN_CELLS, seed=17, ng_fraction=0.0, design_seed=DESIGN)
    return out


@pytest.fixture(scope="module")
def margins(good) -> np.ndarray:
    model = ReferenceModel(MODEL_DIR)
    model.set_reference([read_image(p) for p in reference_paths(good, "six_view")])
    cells = calibrate.good_cells(good, "six_view").used
    return margin(model.logits(*calibrate.good_features(model, cells)))


@pytest.fixture(scope="module")
def strict(tmp_path_factory, margins) -> Path:
    """The shipped model with a threshold that rejects half of this product's good cells."""
    out = tmp_path_factory.mktemp("strict") / "six_view"
    shutil.copytree(MODEL_DIR, out)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    manifest["threshold"] = float(1.0 / (1.0 + np.exp(-np.median(margins))))
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, good, strict) -> Path:
    out = tmp_path_factory.mktemp("cal") / "six_view_7101"
    args = ["calibrate", "--station", "six_view", "--data", str(good)]
    assert main([*args, "--model", str(strict), "--out", str(out)]) == 0
    return out


def test_calibrate_writes_the_calibration_and_its_sha256(calibrated, strict, good, margins):
    manifest, _ = load_manifest(calibrated)  # the copy verifies: ONNX files and the listing
    shipped, _ = load_manifest(strict)
    cal = manifest.calibration
    assert cal is not None
    assert shipped.calibration is None
    assert (manifest.sha256, manifest.sha256s) == (shipped.sha256, shipped.sha256s)
    assert manifest.threshold == shipped.threshold
    assert manifest.version.startswith(f"{shipped.version}+cal.")
    assert cal.cells == cal.cells_given == calibrate.MIN_CELLS
    listing = (calibrated / cal.listing).read_bytes()
    assert hashlib.sha256(listing).hexdigest() == cal.data_sha256
    lines = listing.decode("utf-8").splitlines()
    assert len(lines) == 6 * (1 + calibrate.MIN_CELLS)  # the reference and every cell's views
    digest, name = lines[1].split("  ")
    assert name == "reference/2.png"
    assert digest == hashlib.sha256((good / name).read_bytes()).hexdigest()
    assert [x.name for x in cal.scores] == ["cell", *(str(v) for v in six_view.VIEWS)]
    assert cal.threshold == calibrate.THRESHOLD
    assert cal.good_scores["over_threshold"] == 0
    assert hashlib.sha256((calibrated / cal.features).read_bytes()).hexdigest() == (
        cal.features_sha256
    )
    model = ReferenceModel(calibrated)
    assert model.calibration == cal
    assert model.threshold == 0.5  # the calibrated score's threshold


@pytest.mark.parametrize("name", [calibrate.LISTING, calibrate.FEATURES])
def test_a_changed_calibration_file_does_not_verify(calibrated, tmp_path, name):
    copy = tmp_path / "copy"
    shutil.copytree(calibrated, copy)
    with (copy / name).open("ab") as fh:
        fh.write(b"0")
    with pytest.raises(ModelFileError, match=f"{name} has sha256"):
        ReferenceModel(copy)


def _inspect(station: ReferenceStation, folder: Path, cell_id: int) -> str:
    verdict = None
    for view, camera in zip(six_view.VIEWS, CAMERAS, strict=True):
        image = read_image(folder / f"{view}.png")
        frame = Frame(camera, cell_id, cell_id, 0, 0, image)
        verdict = station.inspect(frame)
    assert verdict is not None
    return verdict.verdict


def test_the_station_applies_the_calibration(good, strict, calibrated, margins):
    """The good cell scored highest: over the strict shipped threshold, but within the
    product's good range, so the station passes it once the model is calibrated."""
    cells = read_labels(good, "six_view")
    worst = cells[int(np.argmax(margins))].path
    best = cells[int(np.argmin(margins))].path
    verdicts = {}
    for name, folder in (("shipped", strict), ("calibrated", calibrated)):
        model = ReferenceModel(folder)
        station = ReferenceStation("six_view", "six_view", model, CAMERAS, good / "reference", 0)
        verdicts[name] = (_inspect(station, worst, 1), _inspect(station, best, 2))
    assert verdicts == {"shipped": ("NG", "OK"), "calibrated": ("OK", "OK")}


def test_too_few_good_cells_names_the_count_needed(tmp_path, capsys):
    data = tmp_path / "few"
    six_view.write_dataset(data, 8, seed=3, ng_fraction=0.5, design_seed=DESIGN)
    args = ["calibrate", "--station", "six_view", "--data", str(data), "--model", str(MODEL_DIR)]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"4 good (OK) cells; calibration needs at least {calibrate.MIN_CELLS}" in err
    assert not (tmp_path / "out").exists()


def test_at_most_fifty_good_cells_are_used(tmp_path):
    data = tmp_path / "many"
    six_view.write_dataset(data, 60, seed=5, ng_fraction=0.05, design_seed=DESIGN)
    ok = [c for c in read_labels(data, "six_view") if c.label == "OK"]
    assert len(ok) > calibrate.MAX_CELLS
    cells = calibrate.good_cells(data, "six_view")
    assert (cells.given, cells.ng_ignored) == (len(ok), 60 - len(ok))
    assert cells.used == tuple(ok[: calibrate.MAX_CELLS])


def test_calibration_doctests():
    failures, tried = doctest.testmod(calibration)
    assert (failures, tried > 0) == (0, True)


def test_the_typical_view_of_the_others_leaves_each_cell_out():
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(5, 3, 4, 2)).astype(np.float32)
    others = calibration.leave_one_out_means(stack)
    assert others.shape == (5, 1, 3, 4, 2)
    np.testing.assert_allclose(others[2, 0], np.delete(stack, 2, axis=0).mean(axis=0), atol=1e-6)


def test_the_view_rows_put_one_view_among_typical_ones():
    cell = [np.full((1, 2, 1, 1), v, np.float32) for v in (1.0, 2.0, 3.0)]
    typical = [np.zeros((1, 2, 1, 1), np.float32)] * 3
    rows = calibration.view_batch(cell, typical)
    # row 0: the cell as captured; row 1 + v: view v of the cell, the others typical
    assert [r[:, 0, 0, 0].tolist() for r in rows] == [
        [1.0, 1.0, 0.0, 0.0],
        [2.0, 0.0, 2.0, 0.0],
        [3.0, 0.0, 0.0, 3.0],
    ]


def test_calibrate_refuses_to_overwrite_the_model(good, tmp_path, capsys):
    copy = tmp_path / "m"
    shutil.copytree(MODEL_DIR, copy)
    args = ["calibrate", "--station", "six_view", "--data", str(good), "--model", str(copy)]
    assert main([*args, "--out", str(copy)]) == 2
    assert "is the model folder itself" in capsys.readouterr().err


def test_only_six_view_is_calibrated(good, tmp_path):
    seal = MODEL_DIR.parent / "seal_edge"
    with pytest.raises(calibrate.CalibrationError, match="for six_view, not seal_edge"):
        calibrate.calibrate("seal_edge", good, seal, tmp_path / "out")


def test_a_calibrated_station_refuses_other_reference_views(calibrated, tmp_path):
    other = tmp_path / "other"
    six_view.write_dataset(other, 0, seed=1, design_seed=DESIGN + 1)  # the reference only
    model = ReferenceModel(calibrated)
    with pytest.raises(ReferenceImageError, match=r"not the ones model .* was calibrated with"):
        ReferenceStation("six_view", "six_view", model, CAMERAS, other / "reference", 0)
