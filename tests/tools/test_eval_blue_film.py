"""``linevision eval --station blue_film``: the runtime path, the report and pixel IoU.

The anomaly model is the shipped one; the segmentation networks are real exported graphs
whose output is a constant (all film, or all defect), so the expected pixel IoU follows
from the inspector's boxes and the true masks alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from linevision.cli import main
from linevision.inference.film.inspector import FilmInspector
from linevision.inference.film.segment import SEGMENT_FILE, defect_window
from linevision.synth import blue_film as synth
from linevision.synth.contract import read_labels
from tests.helpers import EVAL_KEYS

BASE = Path(__file__).resolve().parents[2] / "models" / "blue_film"
SIDE = 1024
KEYS = (*EVAL_KEYS, "pixel_iou", "pixel_iou_map", "mask_frames")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two OK and two NG 1024 x 1024 frames, the NG ones with masks."""
    out = tmp_path_factory.mktemp("film_eval")
    synth.write_dataset(out, 4, seed=4242, size=(SIDE, SIDE), ng_fraction=0.5)
    return out


@pytest.fixture(scope="module")
def expected(folder: Path) -> dict[str, object]:
    """Verdicts and pixel counts from the inspector run directly on every frame."""
    inspector = FilmInspector(BASE, SIDE, SIDE, threads=1)
    verdicts, truth_px, window_inter, window_union, map_inter, map_union = [], 0, 0, 0, 0, 0
    for sample in read_labels(folder, "blue_film"):
        result = inspector.inspect_frame(cv2.imread(str(sample.path)))
        verdicts.append((sample.label, result.decision.verdict))
        if sample.mask is None:
            continue
        truth = cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE) > 0
        windows = np.zeros_like(truth)
        for d in result.decision.defects:
            y0, y1, x0, x1 = defect_window(d, truth.shape)
            windows[y0:y1, x0:x1] = True
        stride = inspector.spec.map_stride
        cells = cv2.resize(result.mask, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST) > 0
        assert cells.sum() == (result.mask > 0).sum() * stride * stride
        truth_px += int(truth.sum())
        window_inter += int((windows & truth).sum())
        window_union += int((windows | truth).sum())
        map_inter += int((cells & truth).sum())
        map_union += int((cells | truth).sum())
    return {
        "verdicts": verdicts,
        "truth_px": truth_px,
        "all_defect_iou": window_inter / window_union,
        "map_iou": map_inter / map_union,
    }


def _with_constant_segmenter(base: Path, out: Path, bias: float) -> Path:
    """The anomaly folder plus a real segmentation graph that answers ``bias`` everywhere."""
    torch = pytest.importorskip("torch")
    from linevision.train import film_segment  # noqa: PLC0415

    film_segment.copy_base(base, out)
    net = film_segment.SegmentNet().eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.fill_(bias)
    film_segment.export(net, out / SEGMENT_FILE, side=64)
    film_segment.register(out, {}, {})
    return out


def _eval(folder: Path, model: Path, capsys) -> dict[str, object]:
    args = ["eval", "--station", "blue_film", "--data", str(folder), "--model", str(model)]
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_follows_the_runtime_verdicts(folder, expected, capsys) -> None:
    report = _eval(folder, BASE, capsys)
    for key in KEYS:
        assert key in report
    verdicts = expected["verdicts"]
    index = {"OK": 0, "NG": 1}
    confusion = [[0, 0], [0, 0]]
    for label, verdict in verdicts:
        confusion[index[label]][index[verdict]] += 1
    assert report["n"] == 4
    assert report["confusion"] == confusion
    assert report["accuracy"] == (confusion[0][0] + confusion[1][1]) / 4
    assert report["ng_recall"] == confusion[1][1] / 2
    assert report["ok_false_reject"] == confusion[0][1] / 2
    assert set(report["per_class"]) == {"OK", "NG"}
    assert report["per_class"]["NG"]["support"] == 2
    assert report["mask_frames"] == 2
    # the shipped folder carries the segmentation network: its masks match the truth
    assert report["segmentation"] is True
    assert report["pixel_iou"] > 0.5
    assert report["pixel_iou_map"] == pytest.approx(expected["map_iou"])
    assert report["latency_ms"]["n"] == 4
    assert 0.0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]


def test_pixel_iou_of_the_segmentation_masks(folder, expected, tmp_path, capsys) -> None:
    assert expected["truth_px"] > 0
    empty = _eval(folder, _with_constant_segmenter(BASE, tmp_path / "none", -10.0), capsys)
    assert empty["segmentation"] is True
    assert empty["pixel_iou"] == 0.0
    full = _eval(folder, _with_constant_segmenter(BASE, tmp_path / "all", 10.0), capsys)
    assert full["pixel_iou"] == pytest.approx(expected["all_defect_iou"])
    assert full["confusion"] == empty["confusion"]


def test_text_report_names_pixel_iou(folder, capsys) -> None:
    args = ["eval", "--station", "blue_film", "--data", str(folder), "--model", str(BASE)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pixel IoU, anomaly map" in out
    assert "frames with masks 2" in out


def test_a_classifier_folder_is_refused(folder, capsys) -> None:
    model = BASE.parent / "pole_piece"
    args = ["eval", "--station", "blue_film", "--data", str(folder), "--model", str(model)]
    assert main(args) == 2
    assert "tile_anomaly" in capsys.readouterr().err


def test_a_model_of_good_frames_only_outlines_its_defects(folder, tmp_path, capsys) -> None:
    """No segmentation network (``linevision train`` on OK frames alone): the anomaly map's
    regions are outlined by their pixels' deviation, far closer to the truth than the map's
    16-pixel cells."""
    pytest.importorskip("torch")
    from linevision.train import film_segment  # noqa: PLC0415

    model = tmp_path / "anomaly_only"
    film_segment.copy_base(BASE, model)
    assert not (model / SEGMENT_FILE).exists()
    report = _eval(folder, model, capsys)
    assert report["segmentation"] is False
    assert report["masks_from"] == "anomaly map outlined by the pixels' deviation"
    assert report["pixel_iou"] > 0.5
    assert report["pixel_iou"] > 2 * report["pixel_iou_map"]
    args = ["eval", "--station", "blue_film", "--data", str(folder), "--model", str(model)]
    assert main(args) == 0
    assert "pixel IoU, outlined map" in capsys.readouterr().out
