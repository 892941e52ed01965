"""The held-out split: stratified per class, every class present, too few images refused."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from linevision.cli import main
from linevision.synth import pole_piece
from linevision.synth.contract import DataError
from linevision.train.folder_data import (
    MIN_PER_CLASS,
    MIN_TRAIN_PER_CLASS,
    ImageSet,
    split_per_class,
    stratified_split,
)


def image_set(counts: list[int]) -> ImageSet:
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    images = np.zeros((len(labels), 4, 4), dtype=np.uint8)
    classes = tuple(pole_piece.CLASSES[: len(counts)])
    return ImageSet(images, labels, classes, "plant", "-")


def test_every_class_is_in_validation_in_proportion() -> None:
    counts = [200, 60, 30, 5, 12]
    train, val = split_per_class(image_set(counts), 0.15, seed=3)
    held = np.bincount(val.labels, minlength=len(counts))
    kept = np.bincount(train.labels, minlength=len(counts))
    assert held.tolist() == [30, 9, 4, 1, 2]  # 15 % each, rounded, at least one
    assert (kept + held).tolist() == counts
    assert kept.min() >= MIN_TRAIN_PER_CLASS


def test_a_small_class_keeps_enough_to_train_on() -> None:
    labels = np.array([0] * 40 + [1] * 5)
    keep, held = stratified_split(labels, 0.5, seed=0)
    assert np.bincount(labels[held]).tolist() == [20, 1]
    assert np.bincount(labels[keep]).tolist() == [20, 4]
    keep, held = stratified_split(np.array([0] * 10 + [1]), 0.2, seed=0)
    assert np.bincount(np.array([0] * 10 + [1])[held], minlength=2).tolist() == [2, 0]


def test_too_few_images_of_a_class_is_an_error_naming_it() -> None:
    with pytest.raises(DataError) as error:
        split_per_class(image_set([10, 2, 10, 10, 0]), 0.15, seed=0)
    message = str(error.value)
    assert "class 'Short' has 2" in message
    assert "class 'Other' has 0" in message
    assert "'Normal'" not in message
    assert f"at least {MIN_PER_CLASS} per class" in message


def test_the_train_command_refuses_such_a_folder(tmp_path: Path, capsys) -> None:
    pytest.importorskip("torch")
    data = tmp_path / "data"
    pole_piece.write_dataset(data, 6, seed=5)
    with (data / "labels.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    long_rows = [r for r in rows[1:] if r[1] == "Long"]
    kept = [rows[0], *(r for r in rows[1:] if r[1] != "Long"), *long_rows[:2]]
    with (data / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows(kept)
    args = ["train", "--station", "pole_piece", "--data", str(data), "--out", str(tmp_path / "m")]
    assert main([*args, "--minutes", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "class 'Long' has 2 image(s)" in err
    assert f"at least {MIN_PER_CLASS} per class" in err
    assert not (tmp_path / "m").exists()
