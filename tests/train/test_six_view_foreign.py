"""``linevision train`` and ``eval`` for six_view on a folder this project's generator did not make.

The folder is drawn here in the contract's layout with its own look: colour (BGR) views of
other sizes than the model's, a printed label, shifted and re-lit captures, NG cells with a
dark blot or a bright line on one view. The supervised trainer (``--mode supervised``: with
12 good cells the default, anomaly mode, refuses the folder) must take it with its other
options at their defaults, register the captures, ship both graphs and a manifest, and
``eval`` must score it through the runtime.
"""

from __future__ import annotations

import csv
import json
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from linevision.cli import main
from linevision.inference.manifest import load_manifest

if TYPE_CHECKING:
    from pathlib import Path

SIZES = ((300, 210), (300, 210), (48, 210), (48, 210), (48, 300), (48, 300))
CELLS = 24


def _view(index: int, h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), (40, 45, 50), np.uint8)
    cv2.rectangle(img, (8, 6), (w - 9, h - 7), (150, 140, 135), -1)
    if h > 100:
        cv2.rectangle(img, (30, 40), (w - 30, 130), (230, 230, 225), -1)
        for row in range(3):
            cv2.putText(img, f"LV-{index}{row} 3.7V", (38, 70 + 25 * row), 0, 0.6, (30, 30, 30), 2)
    else:
        cv2.line(img, (20, h // 2), (w - 20, h // 2), (190, 185, 180), 3)
    return img


def _capture(view: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = view.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-1, 1), rng.uniform(0.99, 1.01))
    m[:, 2] += rng.uniform(-4, 4, 2)
    out = cv2.warpAffine(view, m, (w, h), borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    out = out * rng.uniform(0.9, 1.1) + rng.uniform(-6, 6) + rng.normal(0, 2, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def _write_folder(root: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    views = [_view(i, h, w) for i, (h, w) in enumerate(SIZES)]
    for i, view in enumerate(views, 1):
        (root / "reference").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "reference" / f"{i}.png"), view)
    rows = []
    for c in range(CELLS):
        label = "NG" if c % 2 else "OK"
        cell = [v.copy() for v in views]
        if label == "NG":
            v = int(rng.integers(0, 6))
            h, w = SIZES[v]
            x, y = int(rng.integers(20, w - 20)), int(rng.integers(10, h - 10))
            if c % 4 == 1:
                cv2.circle(cell[v], (x, y), 6, (20, 20, 20), -1)
            else:
                cv2.line(cell[v], (x - 15, y), (x + 15, y), (255, 255, 255), 2)
        name = f"cell{c:03d}"
        (root / name).mkdir()
        for i, img in enumerate(cell, 1):
            cv2.imwrite(str(root / name / f"{i}.png"), _capture(img, rng))
        rows.append((name, label))
    with (root / "labels.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("cell", "label"), *rows])


def test_six_view_trains_and_evaluates_on_a_foreign_folder(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    _write_folder(data, seed=3)
    out = tmp_path / "model"
    args = ["train", "--station", "six_view", "--data", str(data), "--out", str(out)]
    assert (
        main([*args, "--mode", "supervised", "--epochs", "1", "--minutes", "0.5", "--seed", "0"])
        == 0
    )
    manifest, _ = load_manifest(out)
    assert manifest.align == "affine"
    assert (out / "head.onnx").is_file()
    assert manifest.training["train_samples"] + manifest.training["val_samples"] == CELLS
    assert manifest.training["data"] == ["data"]  # the folder's name, not tmp_path's path
    capsys.readouterr()
    assert (
        main(["eval", "--station", "six_view", "--data", str(data), "--model", str(out), "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == CELLS
    assert sum(map(sum, report["confusion"])) == CELLS
    assert 0.0 <= report["auroc"] <= 1.0
    # a good cell whose camera saw nothing cannot be registered: NG, as in the daemon
    for c in range(0, CELLS, 2):
        cv2.imwrite(str(data / f"cell{c:03d}" / "1.png"), np.full((*SIZES[0], 3), 90, np.uint8))
    assert (
        main(["eval", "--station", "six_view", "--data", str(data), "--model", str(out), "--json"])
        == 0
    )
    blanked = json.loads(capsys.readouterr().out)
    assert blanked["n"] == CELLS
    assert blanked["ok_false_reject"] == 1.0


def test_a_view_scale_enlarges_every_view_and_the_head_follows() -> None:
    import torch  # noqa: PLC0415

    from linevision.train import six_view  # noqa: PLC0415

    station = six_view.scaled(2)
    assert [(v.height, v.width) for v in station.views] == [
        (2 * h, 2 * w) for h, w in ((v.height, v.width) for v in six_view.VIEWS)
    ]
    assert (station.input_spec.height, station.input_spec.width) == (768, 512)
    model = station.build()
    maps = [torch.randn(2, six_view.DIM, v.height // 8, v.width // 8) for v in station.views]
    assert model.head(maps, [m[:1].expand_as(m) for m in maps]).shape == (2, 2)
    assert six_view.scaled(1) is six_view.STATION
    with pytest.raises(ValueError, match="view-scale"):
        six_view.scaled(0)
