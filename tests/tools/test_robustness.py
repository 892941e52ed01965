"""The robustness shifts (pure functions on arrays), defect kinds and ``eval --robustness``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from linevision.cli import main
from linevision.synth import pole_piece, seal_edge
from linevision.synth.contract import DataError, read_labels
from linevision.tools import kinds, robustness
from linevision.tools.robustness_run import shifts

ROOT = Path(__file__).resolve().parents[2]


def _scene(channels: int = 1) -> np.ndarray:
    """A lit part: a gradient with a bright square and a little noise, fixed by its seed."""
    rng = np.random.default_rng(3)
    img = np.tile(np.linspace(60, 160, 96, dtype=np.float32), (80, 1))
    img[20:50, 30:60] += 60
    img += rng.normal(0, 2, img.shape)
    gray = np.clip(img, 0, 255).astype(np.uint8)
    return gray if channels == 1 else np.dstack([gray] * channels)


CHANGES = {
    "gain": lambda x: robustness.gain(x, 1.3),
    "gamma": lambda x: robustness.gamma(x, 0.7),
    "blur": lambda x: robustness.blur(x, 2.0),
    "noise": lambda x: robustness.add_noise(x, 2.0, np.random.default_rng(0)),
    "vignette": lambda x: robustness.vignette(x, 0.3),
    "translate": lambda x: robustness.translate(x, 3.0, 0.0),
    "rotate": lambda x: robustness.rotate(x, 2.0),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(CHANGES))
def test_shifts_keep_shape_and_dtype_and_are_deterministic(name, channels) -> None:
    image = _scene(channels)
    before = image.copy()
    out = CHANGES[name](image)
    assert out.shape == image.shape
    assert out.dtype == np.uint8
    assert np.array_equal(image, before)  # the input is left alone
    assert np.array_equal(out, CHANGES[name](image))
    assert not np.array_equal(out, image)


def test_photometric_shifts_move_the_way_they_are_named() -> None:
    image = _scene()
    mean = float(image.mean())
    assert robustness.gain(image, 1.3).mean() > mean > robustness.gain(image, 0.7).mean()
    assert robustness.gamma(image, 0.7).mean() > mean > robustness.gamma(image, 1.4).mean()
    sharp = np.abs(np.diff(image.astype(np.float32), axis=1)).mean()
    assert np.abs(np.diff(robustness.blur(image, 2.0).astype(np.float32), axis=1)).mean() < sharp
    vig = robustness.vignette(image, 0.3)
    assert vig[0, 0] < image[0, 0] * 0.75
    assert abs(int(vig[40, 48]) - int(image[40, 48])) <= 1


def test_noise_x2_doubles_the_estimated_noise() -> None:
    rng = np.random.default_rng(1)
    flat = np.clip(128 + rng.normal(0, 3, (200, 200)), 0, 255).astype(np.uint8)
    before = robustness.noise_sigma(flat)
    after = robustness.noise_sigma(robustness.add_noise(flat, 2.0, np.random.default_rng(2)))
    assert 2.9 < before < 3.3
    assert 1.8 < after / before < 2.2


def test_geometric_shifts_move_the_content() -> None:
    image = np.zeros((60, 60), np.uint8)
    image[20:30, 20:30] = 200
    moved = robustness.translate(image, 3.0, 0.0)
    assert moved[25, 23] == 200
    assert moved[25, 32] == 200
    assert moved[25, 22] == 0
    turned = robustness.rotate(image, 2.0)
    assert np.count_nonzero(turned != image) > 0
    assert abs(int(turned.astype(np.int64).sum()) - int(image.astype(np.int64).sum())) < 2500


def test_blend_scales_the_difference_to_the_counterpart() -> None:
    good = np.full((32, 32), 100, np.uint8)
    bad = good.copy()
    bad[10:20, 10:20] = 200
    assert np.array_equal(robustness.blend(bad, good, 1.0), bad)
    assert np.array_equal(robustness.blend(bad, good, 0.0), good)
    assert robustness.blend(bad, good, 0.1)[15, 15] == 110
    with pytest.raises(ValueError, match="differ in shape"):
        robustness.blend(bad, good[:10], 0.5)


def test_the_counterpart_removes_the_defect() -> None:
    good = _scene()
    bad = good.copy()
    bad[60:66, 10:16] = 255
    moved_reference = robustness.translate(good, -2.0, 0.0)
    twin = robustness.counterpart(bad, reference=moved_reference)
    assert abs(int(twin[62, 12]) - int(good[62, 12])) < 15  # the reference, registered
    mask = np.zeros(bad.shape, np.uint8)
    mask[60:66, 10:16] = 255
    patched = robustness.counterpart(bad, mask=mask)
    assert abs(int(patched[62, 12]) - int(good[62, 12])) < 15
    assert np.array_equal(patched[:30], bad[:30])  # away from the mask: untouched
    stripes = np.zeros_like(good)
    stripes[::4] = 255
    pool = [stripes, np.ascontiguousarray(good[::-1]), np.full_like(good, 250)]
    found = robustness.nearest(bad, pool)  # the flipped good part, flipped back
    assert np.abs(found.astype(int) - good.astype(int))[:55].mean() < 3


def test_contrast_shift_leaves_ok_images_alone() -> None:
    from linevision.tools.eval_run import Seen  # noqa: PLC0415

    image = _scene()
    ref = robustness.gain(image, 0.9)
    contrast = next(s for s in shifts() if s.name == "defect contrast 10 %")
    assert contrast.change(image, Seen(0, ng=False, reference=ref)) is image
    faded = contrast.change(image, Seen(0, ng=True, reference=ref))
    assert np.abs(faded.astype(int) - robustness.register(ref, image).astype(int)).max() <= 3


def test_seal_edge_folders_carry_a_kind_column_and_per_kind_recall(tmp_path) -> None:
    seal_edge.write_dataset(tmp_path, 14, seed=2)
    found = kinds.read_kinds(tmp_path, "seal_edge")
    assert set(found) == set(seal_edge.KINDS)
    truth = [k != "OK" for k in found]
    rows = kinds.per_kind(found, truth, truth)
    assert rows[0]["kind"] == "OK"
    assert all(r["share"] == (1.0 if r["ng"] else 0.0) for r in rows)


def test_a_folder_without_kind_column_uses_the_label(tmp_path) -> None:
    pole_piece.write_dataset(tmp_path, 1, seed=1)
    assert kinds.read_kinds(tmp_path, "pole_piece") == list(pole_piece.CLASSES)


def test_without_kinds_drops_the_kind_and_keeps_the_rest(tmp_path) -> None:
    seal_edge.write_dataset(tmp_path, 14, seed=2)
    before = kinds.read_kinds(tmp_path, "seal_edge")
    dropped = sum(k in {"crack", "bubble"} for k in before)
    assert dropped > 0
    with kinds.without_kinds(tmp_path, "seal_edge", ["crack", "bubble"]) as view:
        samples = read_labels(view, "seal_edge")
        left = kinds.read_kinds(view, "seal_edge")
        assert len(samples) == 14 - dropped
        assert "crack" not in left
        assert "bubble" not in left
        assert (view / "reference.png").is_file()
    assert not view.exists()
    with (tmp_path / "labels.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 14  # the folder itself is untouched
    with (
        pytest.raises(DataError, match="no sample of kind scratch"),
        kinds.without_kinds(tmp_path, "seal_edge", ["scratch"]),
    ):
        pass


def test_train_exclude_kind_refuses_pole_piece_and_says_why(tmp_path, capsys) -> None:
    pole_piece.write_dataset(tmp_path / "d", 1, seed=1)
    args = ["train", "--station", "pole_piece", "--data", str(tmp_path / "d")]
    code = main([*args, "--out", str(tmp_path / "m"), "--exclude-kind", "Powder"])
    assert code == 2
    assert "learns all five" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_eval_robustness_json_on_a_small_pole_piece_folder(tmp_path, capsys) -> None:
    data = tmp_path / "pp"
    assert main(["synth", "--station", "pole_piece", "--n", "10", "--out", str(data)]) == 0
    capsys.readouterr()
    code = main(["eval", "--station", "pole_piece", "--data", str(data), "--robustness", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    rows = report["robustness"]
    names = [r["name"] for r in rows]
    assert names[0].startswith("baseline")
    for wanted in ("gain 0.7", "gamma 1.4", "blur sigma 2 px", "noise x2", "vignetting 30 %"):
        assert wanted in names
    assert {r["group"] for r in rows} == {"baseline", "photometric", "geometric", "contrast"}
    assert [r["name"] for r in rows if r["group"] == "contrast"] == [
        "defect contrast 50 %",
        "defect contrast 25 %",
        "defect contrast 10 %",
    ]
    for r in rows:
        assert r["n"] == 50
        assert 0.0 <= r["accuracy"] <= 1.0
        assert 0.0 <= r["macro_f1"] <= 1.0
    assert rows[0]["accuracy"] == report["accuracy"]
    contrast = {r["name"]: r["ng_recall"] for r in rows}
    assert contrast["defect contrast 10 %"] < rows[0]["ng_recall"]  # a faded defect is missed
    assert {k["kind"] for k in report["per_kind"]} == set(pole_piece.CLASSES)
    assert set(rows[-1]["kind_recall"]) == set(pole_piece.CLASSES) - {"Normal"}
    assert "50/50 images" in captured.err  # progress on stderr


def test_a_shifted_image_changes_the_score(tmp_path) -> None:
    """The shifts reach the runtime: blur changes a pole-piece image's NG score."""
    from linevision.tools import eval_run  # noqa: PLC0415

    pole_piece.write_dataset(tmp_path, 2, seed=9)
    model = ROOT / "models" / "pole_piece"
    plain = eval_run.evaluate_folder("pole_piece", tmp_path, model)
    run = eval_run.Run(lambda x, _: robustness.blur(x, 3.0))
    blurred = eval_run.evaluate_folder("pole_piece", tmp_path, model, run=run)
    assert plain.tally is not None
    assert blurred.tally is not None
    assert plain.tally.ng_scores != blurred.tally.ng_scores
    assert cv2.imread(str(plain.tally.paths[0])) is not None


@pytest.mark.parametrize("module", ["robustness", "kinds", "report_draw"])
def test_doctests(module) -> None:
    import doctest  # noqa: PLC0415
    import importlib  # noqa: PLC0415

    failures, _ = doctest.testmod(importlib.import_module(f"linevision.tools.{module}"))
    assert failures == 0


def test_train_exclude_kind_trains_without_that_kind(tmp_path, capsys) -> None:
    pytest.importorskip("torch")
    data, out = tmp_path / "d", tmp_path / "m"
    seal_edge.write_dataset(data, 14, seed=2)
    n_crack = kinds.read_kinds(data, "seal_edge").count("crack")
    args = ["train", "--station", "seal_edge", "--data", str(data), "--out", str(out)]
    # supervised: the anomaly mode that auto picks for 7 NG strips needs 20 good ones
    assert main([*args, "--mode", "supervised", "--minutes", "0.1", "--exclude-kind", "crack"]) == 0
    assert "without kind crack" in capsys.readouterr().err
    training = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["training"]
    assert training["train_samples"] + training["val_samples"] == 14 - n_crack


def test_without_kinds_needs_a_kind_column(tmp_path) -> None:
    seal_edge.write_dataset(tmp_path, 4, seed=2)
    lines = (tmp_path / "labels.csv").read_text(encoding="utf-8").splitlines()
    plain = [",".join(line.split(",")[:2]) for line in lines]
    (tmp_path / "labels.csv").write_text("\n".join(plain) + "\n", encoding="utf-8")
    assert kinds.read_kinds(tmp_path, "seal_edge") == ["OK", "NG", "OK", "NG"]
    with (
        pytest.raises(DataError, match="no 'kind' column"),
        kinds.without_kinds(tmp_path, "seal_edge", ["crack"]),
    ):
        pass
