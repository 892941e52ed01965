"""Anomaly mode: ``linevision train`` on good cells only, the model in the station, the errors.

A folder of good seal-edge strips (or good six-view cells of one product) and nothing else
trains an anomaly model (``--mode auto`` picks it); the folder it writes loads in the
comparison station, which flags generated defects of kinds it never saw and passes fresh
good cells. Small folders, so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from linevision.cli import main
from linevision.inference.manifest import ModelFileError, load_manifest
from linevision.inference.reference import ReferenceModel
from linevision.stations.reference import ReferenceImageError, ReferenceStation
from linevision.synth import seal_edge, six_view
from linevision.synth._common import sample_rng
from linevision.train import anomaly, mode
from linevision.types import Decision, Frame

if TYPE_CHECKING:
    from pathlib import Path

SEAL_GOOD = 100
SIX_GOOD = anomaly.MIN_GOOD
DESIGN = 7311
SEAL_KINDS = ("crack", "foreign_matter", "bubble")
SIX_KINDS = ("tab_deform", "stain", "scratch", "corner_damage")


def _train(data: Path, out: Path, station: str, *extra: str) -> int:
    args = ["train", "--station", station, "--data", str(data), "--out", str(out)]
    return main([*args, "--seed", "0", *extra, "--", "--threads", "1"])


@pytest.fixture(scope="module")
def seal_model(tmp_path_factory) -> Path:
    """An anomaly model trained on a folder of good seal strips alone, mode left to auto."""
    root = tmp_path_factory.mktemp("seal")
    seal_edge.write_dataset(root / "good", SEAL_GOOD, seed=71, ng_fraction=0.0)
    assert _train(root / "good", root / "model", "seal_edge") == 0
    return root / "model"


def _seal_station(model_dir: Path, reference: Path) -> ReferenceStation:
    return ReferenceStation("seal", "seal_edge", ReferenceModel(model_dir), ("cam",), reference, 0)


def _decide(station: ReferenceStation, cell_id: int, images: list[np.ndarray]) -> Decision:
    decision = None
    for camera, image in zip(station._order, images, strict=True):
        decision = station.inspect(Frame(camera, cell_id, cell_id, 0, 0, image))
    assert decision is not None
    return decision


def _verdict(station: ReferenceStation, cell_id: int, images: list[np.ndarray]) -> str:
    return _decide(station, cell_id, images).verdict


def test_auto_mode_trains_an_anomaly_model_from_good_cells_only(seal_model, capsys):
    manifest, _ = load_manifest(seal_model)
    assert manifest.anomaly is not None
    assert manifest.training["mode"] == "anomaly"
    assert manifest.anomaly.good_cells == SEAL_GOOD
    assert manifest.anomaly.ng_cells == 0
    assert manifest.kind == "reference_compare"
    assert set(manifest.files) == {"encoder", "head"}
    # the verdict score is 0.5 at the anomaly threshold: every runtime decides at 0.5
    assert manifest.runtime_variant("onnxruntime").threshold == 0.5
    # the fit and the exported graphs, run by the runtime from the images, agree
    assert float(str(manifest.metrics["runtime_max_abs_score_diff"])) < anomaly.CHECK_TOLERANCE
    assert float(str(manifest.training["minutes_used"])) < 1.0


def test_the_seal_station_flags_unseen_defects_and_passes_good_cells(seal_model, tmp_path):
    reference = tmp_path / "reference.png"
    seal_edge.write_dataset(tmp_path, 0, seed=0)  # writes the reference only
    station = _seal_station(seal_model, reference)
    good = [seal_edge.generate("OK", sample_rng(9001, i)).image for i in range(10)]
    bad = [
        seal_edge.generate(kind, sample_rng(9002, i)).image for kind in SEAL_KINDS for i in range(4)
    ]
    good_verdicts = [_verdict(station, i, [img]) for i, img in enumerate(good)]
    bad_verdicts = [_verdict(station, 100 + i, [img]) for i, img in enumerate(bad)]
    assert good_verdicts.count("NG") <= 1, good_verdicts
    assert bad_verdicts.count("NG") >= 10, bad_verdicts


def test_a_six_view_product_from_good_cells_flags_its_defects(tmp_path):
    good = tmp_path / "good"
    six_view.write_dataset(good, SIX_GOOD, seed=72, ng_fraction=0.0, design_seed=DESIGN)
    assert _train(good, tmp_path / "model", "six_view", "--mode", "anomaly") == 0
    manifest, _ = load_manifest(tmp_path / "model")
    assert manifest.anomaly is not None
    assert manifest.anomaly.photometric == "match_reference"
    assert manifest.anomaly.tolerance == 1
    assert manifest.align == "affine"
    model = ReferenceModel(tmp_path / "model")
    cameras = tuple(f"v{v}" for v in six_view.VIEWS)
    station = ReferenceStation("six", "six_view", model, cameras, good / "reference", 0)
    design = six_view.dataset_design(DESIGN)
    cells = [
        (k, six_view.generate(design, k, sample_rng(9003, j))) for j, k in enumerate(SIX_KINDS)
    ]
    cells += [("OK", six_view.generate(design, "OK", sample_rng(9004, j))) for j in range(4)]
    decisions = {
        (kind, i): _decide(station, i, list(capture.views))
        for i, (kind, capture) in enumerate(cells)
    }
    verdicts = {key: d.verdict for key, d in decisions.items()}
    # an NG cell's detail names the view that scored highest: the one with the defect
    for (kind, i), d in decisions.items():
        if kind != "OK" and d.verdict == "NG":
            assert d.detail is not None
            marked = [v for v, m in enumerate(cells[i][1].masks) if m.any()]
            assert d.detail().view == model.view_names[marked[0]], (kind, marked)
    missed = [k for (k, _), v in verdicts.items() if k != "OK" and v != "NG"]
    rejected = [k for (k, _), v in verdicts.items() if k == "OK" and v != "OK"]
    assert len(missed) <= 1, verdicts
    assert not rejected, verdicts


def test_other_reference_views_are_refused(seal_model, tmp_path):
    other = seal_edge.reference().copy()
    other[40:60, 100:140] = 255
    path = tmp_path / "other.png"
    import cv2  # noqa: PLC0415

    cv2.imwrite(str(path), other)
    with pytest.raises(ReferenceImageError, match="anomaly model learnt from good cells"):
        _seal_station(seal_model, path)


def test_the_runtime_refuses_a_manifest_it_cannot_run(seal_model, tmp_path):
    import shutil  # noqa: PLC0415

    copy = tmp_path / "model"
    shutil.copytree(seal_model, copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["anomaly"]["method"] = "knn_memory_bank"
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelFileError, match="'knn_memory_bank' is not one this runtime can run"):
        ReferenceModel(copy)
    manifest["anomaly"]["method"] = "gaussian_per_location"
    manifest["anomaly"]["reference_digests"] = []
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelFileError, match="reference_digests"):
        ReferenceModel(copy)


def test_calibrate_refuses_an_anomaly_model(seal_model, tmp_path, capsys):
    good = tmp_path / "good"
    six_view.write_dataset(good, 1, seed=1, ng_fraction=0.0)
    args = ["calibrate", "--station", "six_view", "--data", str(good)]
    assert main([*args, "--model", str(seal_model), "--out", str(tmp_path / "o")]) == 2
    assert "is an anomaly model" in capsys.readouterr().err


def test_supervised_mode_on_good_cells_says_to_use_anomaly_mode(tmp_path, capsys):
    seal_edge.write_dataset(tmp_path / "good", 8, seed=3, ng_fraction=0.0)
    code = _train(tmp_path / "good", tmp_path / "m", "seal_edge", "--mode", "supervised")
    assert code == 2
    err = capsys.readouterr().err
    assert "0 NG cells" in err
    assert "--mode anomaly" in err
    assert not (tmp_path / "m").exists()


def test_auto_picks_supervised_from_the_minimum_ng_count(tmp_path, monkeypatch, capsys):
    seal_edge.write_dataset(tmp_path / "d", 4, seed=3, ng_fraction=0.5)
    folders = [tmp_path / "d"]
    assert mode.count(folders, "seal_edge") == {"OK": 2, "NG": 2}
    assert mode.resolve("auto", folders, "seal_edge") == "anomaly"
    assert "anomaly mode (2 OK, 2 NG cells, fewer than" in capsys.readouterr().err
    monkeypatch.setattr(mode, "MIN_SUPERVISED_NG", 2)
    assert mode.resolve("auto", folders, "seal_edge") == "supervised"
    assert mode.resolve("anomaly", folders, "seal_edge") == "anomaly"
    with pytest.raises(ValueError, match="--mode"):
        mode.resolve("sometimes", folders, "seal_edge")


@pytest.mark.parametrize("problem", ["no_folder", "header_only", "unreadable_image"])
def test_an_empty_or_unreadable_folder_is_a_clear_error(tmp_path, capsys, problem):
    data = tmp_path / "data"
    if problem == "header_only":
        seal_edge.write_dataset(data, 0, seed=0)
        (data / "labels.csv").write_text("image,label\n", encoding="utf-8")
        expected = "no samples after the header"
    elif problem == "unreadable_image":
        seal_edge.write_dataset(data, anomaly.MIN_GOOD, seed=5, ng_fraction=0.0)
        broken = sorted((data / "images").iterdir())[3]
        broken.write_bytes(b"not a png")
        expected = broken.name
    else:
        expected = "labels.csv"
    code = _train(data, tmp_path / "m", "seal_edge", "--mode", "anomaly")
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_too_few_good_cells_names_the_count_needed(tmp_path, capsys):
    seal_edge.write_dataset(tmp_path / "few", anomaly.MIN_GOOD - 1, seed=5, ng_fraction=0.0)
    assert _train(tmp_path / "few", tmp_path / "m", "seal_edge") == 2
    assert f"at least {anomaly.MIN_GOOD}" in capsys.readouterr().err


def test_mode_is_refused_for_stations_with_one_way_to_train(tmp_path, capsys):
    args = ["train", "--station", "pole_piece", "--data", str(tmp_path), "--out", str(tmp_path)]
    assert main([*args, "--mode", "anomaly"]) == 2
    assert "--mode is for seal_edge and six_view" in capsys.readouterr().err
