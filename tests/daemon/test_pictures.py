"""The archive's pictures of an NG: the whole view with its boxes, a full-resolution crop
around each located defect (its box drawn just outside it), and the JSON that says so."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np

from linevision.config import ArchiveConfig
from linevision.daemon.archive import DB_NAME, Archive, apply_retention, connect, remove_orphans
from linevision.daemon.overlay import Caption
from linevision.daemon.pictures import PictureJob, write_pictures
from linevision.lifecycle_config import ReviewConfig
from linevision.synth.contract import VIEW_NAMES
from linevision.types import Crop, Decision, Defect, Detail, ModelRef, Verdict

RUN = "ab" * 16


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 120, (h, w), dtype=np.uint8)


def _contains(rect: list[int], d: Defect) -> bool:
    x, y, w, h = rect
    return x <= d.x and y <= d.y and d.x + d.w <= x + w and d.y + d.h <= y + h


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, path
    return img


def _crop_matches(crop: np.ndarray, source: np.ndarray, about: dict[str, object]) -> None:
    """The crop is ``source`` at ``rect``, each pixel a zoom x zoom block (JPEG aside), and
    its box outline lies just outside the defect's box."""
    x, y, w, h = about["rect"]  # type: ignore[misc]
    k = int(about["zoom"])  # type: ignore[call-overload]
    bx, by, bw, bh = about["box"]  # type: ignore[misc]
    assert crop.shape[:2] == (h * k, w * k)
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(int)
    centres = gray[k // 2 :: k, k // 2 :: k]
    region = source[y : y + h, x : x + w].astype(int)
    inside = np.ones((h, w), bool)
    inside[max(by - 2, 0) : by + bh + 2, max(bx - 2, 0) : bx + bw + 2] = False
    inside[by : by + bh, bx : bx + bw] = True
    assert np.abs(centres - region)[inside].mean() < 6  # full resolution, not a reduced copy
    # the outline: just outside the box, on all four sides, in the NG colour (red); the
    # defect's own pixels inside are not painted
    red = crop[:, :, 2].astype(int) - crop[:, :, :2].max(axis=2)
    x0, x1, y0, y1 = bx * k, (bx + bw) * k, by * k, (by + bh) * k
    sides = (red[y0 - 2, x0:x1], red[y1 + 1, x0:x1], red[y0:y1, x0 - 2], red[y0:y1, x1 + 1])
    for side in sides:
        assert side.mean() > 60
    assert red[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].mean() < 15


def test_a_located_defect_gets_a_crop_that_contains_its_box(tmp_path: Path) -> None:
    image = _textured(224, 224)
    d = Defect("burr", 0.93, 140, 35, 30, 20)
    job = PictureJob("pole_piece", RUN, 7, time.time_ns(), image, 1.0,
                     Caption("NG", "defect", "Long", 0.93, "pole_piece", 7), (d,))  # fmt: skip
    rel, size = write_pictures(tmp_path, job, 95)
    about = json.loads((tmp_path / rel.replace(".jpg", ".json")).read_text())
    (crop,) = about["crops"]
    assert _contains(crop["rect"], d)
    assert crop["box"] == [d.x - crop["rect"][0], d.y - crop["rect"][1], d.w, d.h]
    assert crop["source"] == "frame"
    assert crop["defect"]["kind"] == "burr"
    _crop_matches(_read(tmp_path / Path(rel).parent / crop["file"]), image, crop)
    picture = about["picture"]
    assert (picture["zoom"], picture["strip"], picture["source"]) == (3, False, [224, 224])
    whole = _read(tmp_path / rel)
    assert whole.shape[:2] == (picture["height"], picture["width"])
    files = sorted(p.name for p in (tmp_path / rel).parent.iterdir())
    assert size == sum((tmp_path / rel).parent.joinpath(f).stat().st_size for f in files)


def test_a_line_scan_frame_is_a_strip_and_its_crops_come_from_the_frame(tmp_path: Path) -> None:
    frame = _textured(2048, 1024, seed=3)
    thumb = cv2.resize(frame, (128, 256), interpolation=cv2.INTER_AREA)
    d = Defect("film_anomaly", 2.5, 600, 1500, 16, 12)
    crop = Crop(520, 1400, frame[1400:1656, 520:776].copy(), np.zeros((256, 256), np.uint8))
    crop.mask[100:112, 80:96] = 255  # type: ignore[index]
    job = PictureJob("blue_film", RUN, 9, time.time_ns(), thumb, 1 / 8,
                     Caption("NG", "defect", "film_anomaly", 2.5, "blue_film", 9), (d,),
                     lambda: Detail(crops=(crop,), strip=True))  # fmt: skip
    rel, _ = write_pictures(tmp_path, job, 95)
    about = json.loads((tmp_path / rel.replace(".jpg", ".json")).read_text())
    picture = about["picture"]
    assert picture["strip"]
    assert picture["width"] > picture["height"]  # lines run left to right
    (c,) = about["crops"]
    assert c["source"] == "frame"
    assert c["mask"]
    assert _contains(c["rect"], d)
    _crop_matches(_read(tmp_path / Path(rel).parent / c["file"]), frame, c)
    # without a full-resolution crop, the reduced copy is cropped and says so
    job.detail = lambda: Detail(strip=True)
    job.seq = 10
    rel, _ = write_pictures(tmp_path, job, 95)
    (c,) = json.loads((tmp_path / rel.replace(".jpg", ".json")).read_text())["crops"]
    assert c["source"] == "overview"


def test_the_failed_view_is_the_picture_and_a_failing_detail_loses_nothing(
    tmp_path: Path,
) -> None:
    views = [_textured(64, 256, seed=s) for s in range(6)]
    box = Defect("difference", 0.9, 100, 20, 24, 16)
    job = PictureJob("six_view", RUN, 3, time.time_ns(), views[0], 1.0,
                     Caption("NG", "defect", "NG", 0.9, "six_view", 3), (),
                     lambda: Detail(image=views[4], defects=(box,), view="5", views=6))  # fmt: skip
    rel, _ = write_pictures(tmp_path, job, 95)
    about = json.loads((tmp_path / rel.replace(".jpg", ".json")).read_text())
    assert about["view"] == {"name": "5", "of": 6}
    (c,) = about["crops"]
    _crop_matches(_read(tmp_path / Path(rel).parent / c["file"]), views[4], c)

    def broken() -> Detail:
        msg = "a bug in a station's detail"
        raise RuntimeError(msg)

    job.detail, job.seq = broken, 4
    rel, _ = write_pictures(tmp_path, job, 95)
    about = json.loads((tmp_path / rel.replace(".jpg", ".json")).read_text())
    assert about["view"] is None
    assert about["crops"] == []
    assert _read(tmp_path / rel).shape[1] == 256 * 2


def test_retention_and_orphans_treat_a_picture_and_its_crops_as_one(tmp_path: Path) -> None:
    archive = Archive(tmp_path, ArchiveConfig(dir=tmp_path, max_age_days=36500), RUN)
    archive.start()
    model = ModelRef("m", "1", "ab" * 32)
    for seq in range(1, 4):
        decision = Decision("NG", "defect", "Long", 0.9, (Defect("burr", 0.9, 50, 50, 20, 20),),
                            model)  # fmt: skip
        now = time.monotonic_ns()
        v = Verdict("pole_piece", seq, decision, time.time_ns(), now, image=_textured(224, 224))
        archive.listener(v, seq, 2.0)
    archive.stop()
    folder = next((tmp_path / "images").glob("*/pole_piece"))
    assert len(list(folder.iterdir())) == 9
    con = sqlite3.connect(tmp_path / DB_NAME)
    with con:
        con.execute("DELETE FROM verdicts WHERE seq = 2")
    con.close()
    con = connect(tmp_path / DB_NAME)
    assert remove_orphans(con, tmp_path, grace_s=0) == 3
    con.close()
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 6
    assert not [n for n in names if "-0000000002" in n]


def test_a_six_view_cells_views_are_kept_counted_and_removed_with_its_picture(
    tmp_path: Path,
) -> None:
    """A six_view review candidate keeps its six views (a folder beside its picture); their
    bytes count in ``max_bytes``; retention and the orphan sweep remove the folder."""
    cfg = ArchiveConfig(dir=tmp_path, max_age_days=36500)
    archive = Archive(tmp_path, cfg, RUN, review=ReviewConfig(), kinds={"six_view": "six_view"})
    archive.start()
    model = ModelRef("m", "1", "ab" * 32)
    for seq in range(1, 4):
        views = tuple(_textured(64, 96, seed=seq * 10 + k) for k in range(6))
        decision = Decision("NG", "defect", "NG", 0.9, (), model, views=views)
        v = Verdict("six_view", seq, decision, time.time_ns(), time.monotonic_ns(), image=views[0])
        archive.listener(v, seq, 2.0)
    archive.stop()
    cells = sorted(next((tmp_path / "raw").glob("*/six_view")).iterdir())
    assert [sorted(p.name for p in c.iterdir()) for c in cells] == [list(VIEW_NAMES)] * 3
    kept = cv2.imread(str(cells[1] / "4.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(kept, _textured(64, 96, seed=23))
    con = connect(tmp_path / DB_NAME)
    sizes = [r[0] for r in con.execute("SELECT image_bytes FROM verdicts ORDER BY seq")]
    views_bytes = [sum(p.stat().st_size for p in c.iterdir()) for c in cells]
    assert all(s > b for s, b in zip(sizes, views_bytes, strict=True))
    with con:
        con.execute("DELETE FROM verdicts WHERE seq = 2")
    assert remove_orphans(con, tmp_path, grace_s=0) >= 2  # its picture and its views
    assert not cells[1].exists()
    apply_retention(con, tmp_path, cfg.model_copy(update={"max_bytes": sizes[2] + 1}))
    con.close()
    assert not cells[0].exists()
    assert cells[2].exists()
