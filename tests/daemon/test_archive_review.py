"""The archive keeps what an operator may review: low-margin OK pictures, the frames as PNG."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import cv2
import numpy as np

from linevision.config import ArchiveConfig
from linevision.daemon.archive import DB_NAME, Archive, apply_retention, remove_orphans
from linevision.lifecycle_config import ReviewConfig
from linevision.paths import raw_relpath
from linevision.types import Decision
from tests.daemon.archive_writer import verdict


def _cases():
    """seq -> the verdict: NG by the model, NG by a fault, OK unsure, OK sure."""
    ng = verdict(5)
    fault = replace(verdict(10), decision=Decision.fault("timeout", "deadline"))
    unsure = replace(verdict(3), decision=replace(verdict(3).decision, score=0.6))
    sure = replace(verdict(4), decision=replace(verdict(4).decision, score=0.99))
    return {5: ng, 10: fault, 3: unsure, 4: sure}


def test_review_candidates_keep_their_frame_and_retention_removes_it(tmp_path):
    cfg = ArchiveConfig(dir=tmp_path, max_age_days=36500)
    archive = Archive(
        tmp_path,
        cfg,
        "0123abcd" * 4,
        review=ReviewConfig(ok_below=0.8),
        kinds={"a": "pole_piece", "b": "pole_piece"},
    )
    archive.start()
    for seq, v in _cases().items():
        archive.listener(v, seq, 2.0)
    archive.stop()
    con = sqlite3.connect(tmp_path / DB_NAME)
    images = dict(con.execute("SELECT seq, image FROM verdicts").fetchall())
    con.close()
    # NG (model or fault) and the unsure OK have a picture; the sure OK none
    assert images[4] is None
    assert all(images[s] for s in (5, 10, 3))
    raw = {s: (tmp_path / raw_relpath(images[s])).is_file() for s in (5, 10, 3)}
    assert raw == {5: True, 10: False, 3: True}
    frame = cv2.imread(str(tmp_path / raw_relpath(images[5])), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(frame, _cases()[5].image)  # the camera's pixels, no overlay
    con = sqlite3.connect(tmp_path / DB_NAME)
    try:
        removed = apply_retention(con, tmp_path, cfg.model_copy(update={"max_age_days": 1e-12}))
        assert removed["images_expired"] == 3
        assert not any((tmp_path / "raw").rglob("*.png"))
        stray = tmp_path / "raw" / "2000-01-01" / "a" / "x-0000000001.png"
        stray.parent.mkdir(parents=True)
        stray.write_bytes(b"x")
        assert remove_orphans(con, tmp_path, grace_s=-1) == 1
    finally:
        con.close()
