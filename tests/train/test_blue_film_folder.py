"""``linevision train --station blue_film`` on folders of the contract: tiny frames, seconds.

The anomaly model trains on tiles cut from OK frames and is calibrated on held-out OK frames
only; NG frames with masks train the segmentation network into the same folder. The model
folder must load in the runtime (``FilmInspector``, ``FilmSegmenter``).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from linevision.cli import main
from linevision.inference.film.inspector import FilmInspector
from linevision.inference.film.segment import SEGMENT_FILE, SEGMENT_ROLE, FilmSegmenter
from linevision.inference.manifest import load_manifest, sha256_file
from linevision.synth import blue_film as synth
from linevision.synth.contract import DataError, read_labels
from linevision.tiling import plan_tiles

pytest.importorskip("torch")

from linevision.train import blue_film, blue_film_anomaly

SIDE = 1024
FAST = ["--train-tiles", "2", "--calibration-tiles", "2", "--threads", "1"]


def _train(data: Path, out: Path, *extra: str) -> int:
    args = ["train", "--station", "blue_film", "--data", str(data), "--out", str(out)]
    return main([*args, "--minutes", "0.1", "--epochs", "1", "--seed", "0", "--", *FAST, *extra])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Three OK and two NG 1024 x 1024 frames with masks."""
    out = tmp_path_factory.mktemp("film_mixed")
    synth.write_dataset(out, 5, seed=5, size=(SIDE, SIDE), ng_fraction=0.4)
    return out


def test_split_holds_out_whole_ok_frames(mixed: Path) -> None:
    split = blue_film.split_folder(mixed, seed=0)
    ok = {s.path for s in read_labels(mixed, "blue_film") if s.label == "OK"}
    held = {s.path for s in split.held_out}
    train = {s.path for s in split.train}
    assert held | train == ok
    assert not held & train
    assert len(held) == 1
    assert len(split.masked) == 2
    assert all(s.label == "NG" and s.mask is not None for s in split.masked)
    assert blue_film.split_folder(mixed, seed=0) == split


def test_training_tiles_are_windows_of_the_frames(tmp_path: Path) -> None:
    synth.write_dataset(tmp_path, 2, seed=6, size=(2048, SIDE), ng_fraction=0.0)
    samples = tuple(read_labels(tmp_path, "blue_film"))
    tiles = blue_film.frame_tiles(samples, 5, seed=0)
    assert len(tiles) == 5
    assert all(t.shape == (SIDE, SIDE, 3) for t in tiles)
    frames = [cv2.imread(str(s.path)) for s in samples]
    for tile in tiles:
        assert any(_offset(tile, f) is not None for f in frames)
    held = blue_film.held_out_tiles(samples[:1], 10, seed=0)
    assert len(held) == len(plan_tiles(SIDE, 2048, SIDE, blue_film.OVERLAP))
    assert len(blue_film.held_out_tiles(samples, 4, seed=0)) == 4


def _offset(tile: np.ndarray, frame: np.ndarray) -> int | None:
    """The column at which ``tile`` is a full-height window of ``frame``, if any."""
    for x in range(frame.shape[1] - tile.shape[1] + 1):
        if np.array_equal(tile[0, :16], frame[0, x : x + 16]) and np.array_equal(
            tile, frame[:, x : x + tile.shape[1]]
        ):
            return x
    return None


def test_one_ok_frame_is_not_enough(tmp_path: Path, capsys) -> None:
    synth.write_dataset(tmp_path / "d", 2, seed=7, size=(SIDE, SIDE), ng_fraction=0.5)
    assert _train(tmp_path / "d", tmp_path / "m") == 2
    assert "at least 2" in capsys.readouterr().err
    with pytest.raises(DataError):
        blue_film.split_folder(tmp_path / "d", seed=0)


def test_folder_with_masks_trains_both_networks(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert _train(mixed, out) == 0
    manifest, onnx_path = load_manifest(out)
    assert manifest.kind == "tile_anomaly"
    assert manifest.tile_anomaly is not None
    assert manifest.tile_anomaly.tile == SIDE
    assert manifest.files == {SEGMENT_ROLE: SEGMENT_FILE}
    assert manifest.sha256s[SEGMENT_ROLE] == sha256_file(out / SEGMENT_FILE)
    training = manifest.training
    assert training["data"] == mixed.name  # the folder's name, not tmp_path's absolute path
    assert training["train_frames"] == 2
    assert training["calibration_frames"] == 1
    assert training["epochs"] == 1
    segment = training[SEGMENT_ROLE]
    assert isinstance(segment, dict)
    assert segment["data"] == mixed.name
    assert segment["defect_regions"] == sum(
        cv2.connectedComponents((cv2.imread(str(s.mask), 0) > 0).astype(np.uint8))[0] - 1
        for s in read_labels(mixed, "blue_film")
        if s.mask is not None
    )
    # the threshold sits above every held-out good tile's score
    assert manifest.tile_anomaly.score_threshold > float(manifest.metrics["good_score_max"])
    inspector = FilmInspector(out, SIDE, SIDE, threads=1)
    for sample in read_labels(mixed, "blue_film"):
        if sample.label == "OK":
            frame = cv2.imread(str(sample.path))
            assert inspector.inspect_frame(frame).decision.verdict == "OK"
    segmenter = FilmSegmenter(out)
    crop = np.zeros((256, 256, 3), dtype=np.uint8)
    assert segmenter.mask(crop).shape == (256, 256)
    assert onnx_path.name == blue_film_anomaly.MODEL_FILE


def test_good_frames_only_train_the_anomaly_model(tmp_path: Path) -> None:
    data = tmp_path / "ok"
    synth.write_dataset(data, 2, seed=8, size=(SIDE, SIDE), ng_fraction=0.0)
    out = tmp_path / "model"
    assert _train(data, out) == 0
    manifest, _ = load_manifest(out)
    assert manifest.files == {}
    assert SEGMENT_ROLE not in manifest.training
    assert not (out / SEGMENT_FILE).exists()
    stored = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    screen = stored["tile_anomaly"]["screen"]
    assert screen["threshold"] > 0
    # the training sets the screen from good film: every channel's spread and its threshold
    assert screen["method"] == "local_deviation"
    assert all(s > 0 for s in screen["spread"])
    inspector = FilmInspector(out, SIDE, SIDE, threads=1)
    for sample in read_labels(data, "blue_film"):
        frame = cv2.imread(str(sample.path))
        assert inspector.inspect_frame(frame).decision.verdict == "OK"
