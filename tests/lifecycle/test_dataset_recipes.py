"""A six_view dataset has one reference: reviewed cells of two recipes are exported one recipe
at a time, each with its own reference views (the archive and the reviews are the real ones)."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from linevision.config import ArchiveConfig, StationConfig
from linevision.daemon.archive import Archive
from linevision.lifecycle.dataset import DatasetError, export
from linevision.lifecycle.review import StationRules, record
from linevision.lifecycle_config import ReviewConfig
from linevision.synth.contract import VIEW_NAMES, read_labels
from linevision.types import Decision, ModelRef, Verdict

RUN = "cd" * 16


def _views(seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, 255, (64, 96), dtype=np.uint8) for _ in range(6))


def _reference(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    for name, view in zip(VIEW_NAMES, _views(seed), strict=True):
        assert cv2.imwrite(str(folder / name), view)
    return folder


def test_cells_of_two_recipes_export_one_recipe_at_a_time(tmp_path: Path) -> None:
    archive = Archive(
        tmp_path / "archive",
        ArchiveConfig(dir=tmp_path / "archive"),
        RUN,
        review=ReviewConfig(),
        kinds={"six_view": "six_view"},
    )
    archive.start()
    model = ModelRef("six_view", "1", "ab" * 32)
    recipes = {1: "pouch_a", 2: "pouch_b", 3: "pouch_a"}
    for seq, recipe in recipes.items():
        views = _views(seq)
        decision = Decision("NG", "defect", "NG", 0.97, (), model, views=views)
        v = Verdict(
            "six_view", seq, decision, time.time_ns(), time.monotonic_ns(), views[0], recipe=recipe
        )
        archive.listener(v, seq, 3.0)
    archive.stop()
    rules = {"six_view": StationRules("six_view")}
    for seq in recipes:
        record(
            tmp_path / "archive", tmp_path / "review", rules,
            run_id=RUN, seq=seq, decision="confirm_ng", operator="eva",
        )  # fmt: skip
    station = StationConfig(
        name="six_view",
        type="six_view",
        cameras=tuple(f"c{i}" for i in range(1, 7)),
        model=Path("six_view"),
        reference=_reference(tmp_path / "ref_a", 100),
    )
    with pytest.raises(DatasetError, match=r"recipes pouch_a, pouch_b.*--recipe"):
        export(tmp_path / "archive", tmp_path / "review", station, 0, tmp_path / "mixed")

    out = tmp_path / "a"
    summary = export(tmp_path / "archive", tmp_path / "review", station, 0, out, recipe="pouch_a")
    assert (summary["cells"], summary["other_recipe"]) == (2, 1)
    samples = read_labels(out, "six_view")
    assert [s.label for s in samples] == ["NG", "NG"]
    for sample, seq in zip(samples, (1, 3), strict=True):
        kept = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sample.views]
        assert all(np.array_equal(a, b) for a, b in zip(kept, _views(seq), strict=True))
    assert (out / "reference" / "1.png").read_bytes() == (tmp_path / "ref_a" / "1.png").read_bytes()
