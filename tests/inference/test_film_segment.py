"""The blue-film segmentation network: torch training, ONNX export, and ``FilmSegmenter``.

A model folder is the shipped anomaly model (copied) plus a ``segment.onnx`` trained here
for a few seconds on generated crops; the runtime wrapper must give masks of the crop's
size that mark a held-out defect more than the film around it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from linevision.inference.film.segment import (
    SEGMENT_FILE,
    FilmSegmenter,
    defect_window,
    frame_mask,
)
from linevision.inference.manifest import ModelFileError, load_manifest
from linevision.synth import blue_film as synth
from linevision.types import Defect

torch = pytest.importorskip("torch")

from linevision.train import film_segment, film_segment_data  # noqa: E402

BASE = Path(__file__).resolve().parents[2] / "models" / "blue_film"
REGION = 96


def _regions(seed: int, n: int) -> film_segment_data.Regions:
    """``n`` defect regions (one 8-14 px defect each, centred) and ``n // 2`` good ones."""
    images, masks, defect = [], [], []
    for i in range(n + n // 2):
        kind = "OK" if i >= n else synth.NG_KINDS[i % 3]
        rng = np.random.default_rng([seed, i])
        tile = synth.generate_tile(rng, kind, size=REGION, defect_px=float(8 + i % 7))
        images.append(tile.image)
        masks.append((tile.mask > 0).astype(np.uint8))
        defect.append(kind != "OK")
    return film_segment_data.Regions(np.stack(images), np.stack(masks), np.asarray(defect))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, film_segment.SegmentNet]:
    out = tmp_path_factory.mktemp("film_segment") / "model"
    film_segment.copy_base(BASE, out)
    config = film_segment.SegConfig(minutes=1.0, epochs=25, batch_size=8, crop=64, lr=1e-2)
    net, history = film_segment.train(_regions(seed=11, n=24), config)
    assert history.steps == 25 * (36 // 8)
    film_segment.export(net, out / SEGMENT_FILE, side=64)
    film_segment.register(out, {"steps": history.steps}, {})
    return out, net


def test_masks_have_the_crop_size_and_round_trip_torch(trained) -> None:
    out, net = trained
    segmenter = FilmSegmenter(out, threads=1)
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (160, 224, 3), dtype=np.uint8) for _ in range(2)]
    logits = segmenter.logits(crops)
    assert logits.shape == (2, 160, 224)
    with torch.inference_mode():
        x = torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32))
        expected = net(x)[:, 0].numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-3)
    masks = segmenter.masks(crops)
    assert [m.shape for m in masks] == [(160, 224)] * 2
    assert all(m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255} for m in masks)
    np.testing.assert_array_equal(masks[1], segmenter.mask(crops[1]))
    np.testing.assert_array_equal(masks[0], np.where(logits[0] > 0, 255, 0))
    # a side that is not a multiple of 16 is padded, and the mask cropped back
    assert segmenter.mask(crops[0][:100, :90]).shape == (100, 90)
    assert segmenter.mask(crops[0][:, :, 0]).shape == (160, 224)
    with pytest.raises(ValueError, match="share their size"):
        segmenter.masks([crops[0], crops[0][:128]])


def test_a_held_out_defect_is_marked_more_than_the_film(trained) -> None:
    out, _ = trained
    segmenter = FilmSegmenter(out, threads=1)
    defect_px, film_px = [], []
    for i, kind in enumerate(synth.NG_KINDS):
        rng = np.random.default_rng([999, i])
        tile = synth.generate_tile(rng, kind, size=256, defect_px=12.0)
        logits = segmenter.logits([tile.image])[0]
        on = tile.mask > 0
        defect_px.append(float(logits[on].mean()))
        film_px.append(float(logits[~on].mean()))
        assert (segmenter.mask(tile.image)[on] > 0).mean() > 0.5, kind
    assert min(defect_px) > max(film_px) + 2.0


def test_frame_mask_pastes_crops_at_the_defect_boxes(trained) -> None:
    out, _ = trained
    segmenter = FilmSegmenter(out, threads=1)
    rng = np.random.default_rng([77, 0])
    frame = synth.generate_frame(rng, ("black", "white"), width=1024, height=1024)
    boxes = [Defect("film_anomaly", 1.0, int(d.x) - 8, int(d.y) - 8, 16, 16) for d in frame.defects]
    mask = frame_mask(segmenter, frame.image, boxes)
    assert mask.shape == (1024, 1024)
    inside = np.zeros(mask.shape, dtype=bool)
    for box in boxes:
        y0, y1, x0, x1 = defect_window(box, (1024, 1024))
        assert (y1 - y0, x1 - x0) == (256, 256)
        inside[y0:y1, x0:x1] = True
        crop_mask = segmenter.mask(frame.image[y0:y1, x0:x1])
        assert (mask[y0:y1, x0:x1] >= crop_mask).all()
    assert not mask[~inside].any()
    assert (mask[frame.mask > 0] > 0).mean() > 0.5


def test_windows_stay_inside_the_frame_and_cover_large_boxes() -> None:
    shape = (1024, 2048)
    assert defect_window(Defect("d", 1.0, 2040, 1020, 4, 4), shape) == (768, 1024, 1792, 2048)
    y0, y1, x0, x1 = defect_window(Defect("d", 1.0, 100, 100, 400, 20), shape)
    assert x0 <= 100 - 32
    assert x1 >= 500 + 32
    assert (x1 - x0) % 16 == 0
    assert y1 - y0 == 256


def test_a_changed_segment_file_is_refused(trained, tmp_path: Path) -> None:
    out, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = (copy / SEGMENT_FILE).read_bytes()
    (copy / SEGMENT_FILE).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ModelFileError, match=SEGMENT_FILE):
        FilmSegmenter(copy)


def test_a_folder_without_segment_file_is_refused(tmp_path: Path) -> None:
    film_segment.copy_base(BASE, tmp_path)
    manifest, _ = load_manifest(tmp_path)
    assert "segment" not in manifest.files
    with pytest.raises(ModelFileError, match="no 'segment' file"):
        FilmSegmenter(tmp_path)


def test_adopt_copies_the_network_into_another_model_folder(trained, tmp_path: Path) -> None:
    out, _ = trained
    target = tmp_path / "shipped"
    film_segment.copy_base(BASE, target)
    assert film_segment.main(["--out", str(target), "--adopt", str(out)]) == 0
    manifest, _ = load_manifest(target)
    assert manifest.sha256s["segment"] == load_manifest(out)[0].sha256s["segment"]
    assert manifest.training["segment"] == {"steps": 25 * (36 // 8)}
    tile = synth.generate_tile(np.random.default_rng(5), "black", size=128, defect_px=9.0)
    np.testing.assert_array_equal(
        FilmSegmenter(target).mask(tile.image), FilmSegmenter(out).mask(tile.image)
    )
