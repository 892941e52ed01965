"""The shipped blue-film model (models/blue_film) through the streaming runtime.

onnxruntime and the generators only; the torch-only checks at the end are skipped without
torch. Frames are held-out generated data (seeds unused by training and calibration).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from linevision.inference.film.geometry import (
    DEFECT_KIND,
    SEGMENT_KIND,
    box_contains,
    defects_from_map,
    max_stitch,
    scaled_plan,
)
from linevision.inference.film.inspector import FilmInspector, FrameSizeError
from linevision.inference.manifest import (
    ModelFileError,
    load_manifest,
    sha256_file,
    write_manifest,
)
from linevision.synth import blue_film as synth
from linevision.tiling import plan_tiles

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "blue_film"
HEIGHT, WIDTH = 2048, 3072
SEED = 9100


@pytest.fixture(scope="module")
def inspector() -> FilmInspector:
    return FilmInspector(MODEL_DIR, HEIGHT, WIDTH)


def _tiled_frame(seed: int, defects: dict[int, tuple[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    """A good frame with defects of fixed size: ``defects`` maps a slot -> (kind, px).

    Each defect is drawn on a generated tile and its pixels are copied into the frame at
    the same place of 1024 x 1024 slot ``i`` (row-major), so the film around it stays whole.
    """
    frame = synth.generate_frame(np.random.default_rng([seed, 99]), width=WIDTH, height=HEIGHT)
    image, mask = frame.image.copy(), frame.mask.copy()
    slots = plan_tiles(HEIGHT, WIDTH, 1024, 0)
    for i, (kind, px) in defects.items():
        t = slots[i]
        tile = synth.generate_tile(np.random.default_rng([seed, i]), kind, defect_px=px)
        on = tile.mask > 0
        image[t.y0 : t.y1, t.x0 : t.x1][on] = tile.image[on]
        mask[t.y0 : t.y1, t.x0 : t.x1][on] = 255
    return image, mask


def _defect_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    count, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8))
    return [(x, y, x + w, y + h) for x, y, w, h in (stats[i, :4] for i in range(1, count))]


def _assert_located(result, mask: np.ndarray) -> None:
    boxes = _defect_boxes(mask)
    assert boxes
    for box in boxes:
        assert any(box_contains(d, *box) for d in result.decision.defects), box


def _stream(inspector: FilmInspector, image: np.ndarray, strip: int):
    inspector.reset()
    for y in range(0, image.shape[0], strip):
        inspector.add_strip(image[y : y + strip])
    return inspector.finish()


def test_manifest_checks_the_file(tmp_path: Path) -> None:
    manifest, onnx_path = load_manifest(MODEL_DIR)
    assert manifest.kind == "tile_anomaly"
    assert manifest.tile_anomaly is not None
    assert manifest.tile_anomaly.score_threshold > 0
    assert sum(p.stat().st_size for p in MODEL_DIR.iterdir()) <= 25 * 2**20
    copy = tmp_path / "blue_film"
    shutil.copytree(MODEL_DIR, copy)
    (copy / onnx_path.name).write_bytes(onnx_path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelFileError, match=onnx_path.name):
        FilmInspector(copy, HEIGHT, WIDTH)


def test_good_frames_are_ok(inspector: FilmInspector) -> None:
    for i in range(2):
        frame = synth.generate_frame(np.random.default_rng([SEED, i]), width=WIDTH, height=HEIGHT)
        result = _stream(inspector, frame.image, 512)
        assert result.decision.verdict == "OK", result.tile_scores
        assert result.decision.defects == ()
        assert result.segments == ()


def test_smallest_defects_are_located(inspector: FilmInspector) -> None:
    defects = {0: ("break", 3.0), 2: ("white", 3.0), 3: ("black", 3.0), 4: ("break", 12.0)}
    image, mask = _tiled_frame(SEED + 1, defects)
    result = _stream(inspector, image, 300)
    assert result.decision.verdict == "NG"
    assert result.decision.reason == "defect"
    _assert_located(result, mask)
    # seed 003's segmentation network marks the defects' own pixels at full resolution
    marked = np.zeros(mask.shape, bool)
    for y0, x0, m in result.segments:
        marked[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] |= m > 0
    truth = mask > 0
    assert (marked & truth).sum() / (marked | truth).sum() > 0.5


def test_screen_and_segmentation_locate_what_the_map_leaves_below_threshold(
    tmp_path: Path,
) -> None:
    # a threshold no anomaly map reaches: only seed 003's path (screen -> segmentation) is left
    manifest, _ = load_manifest(MODEL_DIR)
    assert manifest.tile_anomaly is not None
    folder = tmp_path / "blue_film"
    shutil.copytree(MODEL_DIR, folder)
    spec = manifest.tile_anomaly.model_copy(update={"score_threshold": 1e6})
    write_manifest(folder, manifest.model_copy(update={"tile_anomaly": spec}))
    strict = FilmInspector(folder, HEIGHT, WIDTH)
    image, mask = _tiled_frame(SEED + 3, {0: ("break", 3.0), 2: ("white", 4.0), 5: ("black", 3.0)})
    result = _stream(strict, image, 700)
    assert result.decision.verdict == "NG"
    assert {d.kind for d in result.decision.defects} == {SEGMENT_KIND}
    _assert_located(result, mask)
    assert (result.anomaly > 1e6).sum() == 0
    good = synth.generate_frame(np.random.default_rng([SEED, 0]), width=WIDTH, height=HEIGHT)
    assert _stream(strict, good.image, 700).decision.verdict == "OK"


def test_generated_ng_frame_is_located(inspector: FilmInspector) -> None:
    rng = np.random.default_rng([SEED, 50])
    frame = synth.generate_frame(rng, ("break", "white", "black"), width=WIDTH, height=HEIGHT)
    result = inspector.inspect_frame(frame.image)
    assert result.decision.verdict == "NG"
    _assert_located(result, frame.mask)
    assert DEFECT_KIND in {d.kind for d in result.decision.defects}


def test_strips_do_not_change_the_result(inspector: FilmInspector) -> None:
    image, _ = _tiled_frame(SEED + 2, {1: ("black", 4.0), 5: ("white", 25.0)})
    whole = inspector.inspect_frame(image)
    one_thread = FilmInspector(MODEL_DIR, HEIGHT, WIDTH, split_last_band=False)
    results = [_stream(inspector, image, strip) for strip in (97, 1024, 2000)]
    results.append(_stream(one_thread, image, 1024))
    for result in results:
        assert result.decision.defects == whole.decision.defects
        assert result.flagged == whole.flagged
        assert result.screen_scores == whole.screen_scores
        np.testing.assert_array_equal(result.anomaly, whole.anomaly)


def test_the_frame_buffer_is_reused(inspector: FilmInspector) -> None:
    buffer = inspector.buffer
    address = buffer.ctypes.data
    image, _ = _tiled_frame(SEED + 3, {})
    for strip in (256, 512):
        _stream(inspector, image, strip)
        assert inspector.buffer is buffer
        assert inspector.buffer.ctypes.data == address
    np.testing.assert_array_equal(inspector.buffer, image)


def test_an_incomplete_frame_is_a_fail_safe_ng(inspector: FilmInspector) -> None:
    inspector.reset()
    inspector.add_strip(np.zeros((1000, WIDTH, 3), np.uint8))
    result = inspector.finish()
    assert result.decision.verdict == "NG"
    assert result.decision.reason == "bad_frame"
    assert inspector.lines == 0


def test_a_strip_that_does_not_fit_is_refused(inspector: FilmInspector) -> None:
    inspector.reset()
    with pytest.raises(FrameSizeError):
        inspector.add_strip(np.zeros((10, WIDTH - 1, 3), np.uint8))
    with pytest.raises(FrameSizeError):
        inspector.add_strip(np.zeros((HEIGHT + 1, WIDTH, 3), np.uint8))


def test_scaled_plan_and_max_stitch_are_order_free() -> None:
    plan = scaled_plan(plan_tiles(2048, 2048, 1024, 256), 16)
    rng = np.random.default_rng(0)
    maps = {(t.row, t.col): rng.random((t.y1 - t.y0, t.x1 - t.x0), np.float32) for t in plan}
    forward = max_stitch(plan, maps, np.zeros((128, 128), np.float32))
    backward = max_stitch(plan[::-1], maps, np.zeros((128, 128), np.float32))
    np.testing.assert_array_equal(forward, backward)
    assert forward.min() > 0
    with pytest.raises(ValueError, match="multiple of 16"):
        scaled_plan(plan_tiles(2008, 2048, 1024, 0), 16)


def test_defect_boxes_cover_their_cells_and_stay_in_the_frame() -> None:
    anomaly = np.zeros((8, 8), np.float32)
    anomaly[0, 0] = 5.0
    anomaly[6:8, 6:8] = 2.0
    found = defects_from_map(anomaly, 1.0, 16, (128, 128))
    assert [(d.x, d.y, d.w, d.h) for d in found] == [(0, 0, 32, 32), (80, 80, 48, 48)]
    assert [d.score for d in found] == [5.0, 2.0]


def test_torch_networks_match_and_threshold_stays_above_good() -> None:
    torch = pytest.importorskip("torch")
    from linevision.train.blue_film_anomaly import score_threshold  # noqa: PLC0415
    from linevision.train.blue_film_nets import Student, distillation_loss  # noqa: PLC0415

    student = Student().eval()
    x = torch.zeros(2, 3, 64, 64)
    with torch.no_grad():
        y = student(x)
    assert tuple(y.shape) == (2, 40, 8, 8)
    assert float(distillation_loss(y, y)) == pytest.approx(0.0, abs=1e-5)
    good = [0.5, 0.7, 0.9, 1.1]
    assert score_threshold(good) > max(good)


def test_a_frame_smaller_than_the_second_stage_window_is_refused() -> None:
    with pytest.raises(FrameSizeError, match="smaller than the 256 px second-stage window"):
        FilmInspector(MODEL_DIR, 128, 2048)


def test_a_graph_with_a_fixed_input_size_is_refused(tmp_path: Path) -> None:
    manifest, onnx_path = load_manifest(MODEL_DIR)
    folder = tmp_path / "blue_film"
    folder.mkdir()
    graph = onnx.load(str(onnx_path))
    for d in (2, 3):
        graph.graph.input[0].type.tensor_type.shape.dim[d].dim_value = 512
    onnx.save(graph, str(folder / onnx_path.name))
    for name in manifest.files.values():
        shutil.copy(MODEL_DIR / name, folder / name)
    write_manifest(
        folder, manifest.model_copy(update={"sha256": sha256_file(folder / onnx_path.name)})
    )
    # the windows' 128 px input does not fit a graph exported for whole 512 px tiles only
    with pytest.raises(ModelFileError, match="input fixed at 512 px"):
        FilmInspector(folder, HEIGHT, WIDTH)
