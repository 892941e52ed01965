"""The shipped reference-compare models (models/seal_edge, models/six_view) through the runtime.

onnxruntime only: fresh cells are generated in memory with a seed no training, validation
or test folder used (for six_view also a product design never seen), scored through
``ReferenceModel`` exactly as a station does, and held to the line's targets.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from linevision.inference.align import AlignmentError
from linevision.inference.classifier import PreprocessError
from linevision.inference.manifest import ModelFileError, load_model_files
from linevision.inference.reference import NoReferenceError, ReferenceModel
from linevision.inference.residual import CHANNELS as RESIDUAL_CHANNELS
from linevision.inference.session import SessionOptions
from linevision.synth import seal_edge, six_view
from linevision.synth._common import sample_rng
from linevision.tools import evaluate

MODELS = Path(__file__).resolve().parents[2] / "models"
TEST_SEED = 7777
SEALS = 100
CELLS = 60
MAX_BYTES = 25 * 1024 * 1024


def _model(name: str) -> ReferenceModel:
    return ReferenceModel(MODELS / name, SessionOptions(intra_op_threads=2))


@pytest.fixture(scope="module")
def seal() -> ReferenceModel:
    return _model("seal_edge")


@pytest.fixture(scope="module")
def six() -> ReferenceModel:
    return _model("six_view")


def _rates(verdicts: list[str], labels: list[str]) -> tuple[float, float]:
    v, y = np.asarray(verdicts), np.asarray(labels)
    return float(np.mean(v[y == "NG"] == "NG")), float(np.mean(v[y == "OK"] == "NG"))


@pytest.mark.parametrize("name", ["seal_edge", "six_view"])
def test_manifest_describes_both_graphs(name: str) -> None:
    manifest, files = load_model_files(MODELS / name)
    assert manifest.kind == "reference_compare"
    assert manifest.classes == ("OK", "NG")
    assert set(files) == {"encoder", "head"}
    assert sum(p.stat().st_size for p in files.values()) <= MAX_BYTES
    assert 0.0 < manifest.threshold < 1.0
    for key in ("accuracy", "ng_recall", "ok_false_reject", "auroc", "latency"):
        assert key in manifest.metrics
    shapes = {"seal_edge": ((seal_edge.HEIGHT, seal_edge.WIDTH),), "six_view": six_view.VIEW_SHAPES}
    assert tuple((v.height, v.width) for v in manifest.views) == shapes[name]


def test_seal_edge_meets_the_line_targets_on_fresh_seals(seal: ReferenceModel) -> None:
    seal.set_reference([seal_edge.reference()])
    verdicts, labels = [], []
    for i in range(SEALS):
        sample = seal_edge.generate(seal_edge.dataset_kind(i, 0.5), sample_rng(TEST_SEED, i))
        decision = seal.decide(seal.encode(sample.image))
        assert decision.model == seal.ref
        assert decision.score is not None
        assert 0.0 <= decision.score <= 1.0
        verdicts.append(decision.verdict)
        labels.append(sample.label)
    recall, false_reject = _rates(verdicts, labels)
    assert recall >= 0.99, f"NG recall {recall:.3f}"
    assert false_reject <= 0.02, f"OK false reject {false_reject:.3f}"


@pytest.fixture(scope="module")
def six_cells(six: ReferenceModel) -> tuple[list[str], list[float], list[str]]:
    """Verdicts, P(NG) and labels of fresh cells of a design no training folder had."""
    design = six_view.dataset_design(TEST_SEED)
    six.set_reference(six_view.reference_views(design))
    verdicts, scores, labels = [], [], []
    for i in range(CELLS):
        kind = six_view.dataset_kind(i, 0.5)
        capture = six_view.generate(design, kind, sample_rng(TEST_SEED, 1, i))
        features = [
            six.encode(image, view)
            for image, view in zip(capture.views, six.view_names, strict=True)
        ]
        decision = six.decide(*features)
        verdicts.append(decision.verdict)
        scores.append(float(decision.score or 0.0))
        labels.append(capture.label)
    return verdicts, scores, labels


def test_six_view_separates_ok_from_ng_on_a_new_design(six_cells) -> None:
    _, scores, labels = six_cells
    area = evaluate.auroc(np.asarray(labels) == "NG", scores)
    assert area is not None
    assert area >= 0.8


def test_six_view_meets_the_line_targets_on_a_new_design(six_cells) -> None:
    verdicts, _, labels = six_cells
    recall, false_reject = _rates(verdicts, labels)
    assert recall >= 0.99, f"NG recall {recall:.3f}"
    assert false_reject <= 0.02, f"OK false reject {false_reject:.3f}"


def test_reference_features_are_computed_once_per_recipe() -> None:
    model = _model("six_view")
    design = six_view.dataset_design(TEST_SEED + 1)
    with pytest.raises(NoReferenceError):
        model.decide(*(np.zeros((1, 1, 1, 1), np.float32) for _ in model.view_names))
    model.set_reference(six_view.reference_views(design))
    assert model.encoder_runs == 6
    for i in range(3):
        capture = six_view.generate(design, "OK", sample_rng(TEST_SEED + 1, 1, i))
        features = [
            model.encode(img, v) for img, v in zip(capture.views, model.view_names, strict=True)
        ]
        model.decide(*features)
    assert model.encoder_runs == 6 + 3 * 6


def test_batch_axis_is_dynamic_and_the_reference_broadcasts(seal: ReferenceModel) -> None:
    seal.set_reference([seal_edge.reference()])
    images = [seal_edge.generate("OK", sample_rng(TEST_SEED + 2, i)).image for i in range(3)]
    features = seal.encode_batch(images)
    assert features.shape[0] == 3
    batch = seal.scores(features)
    single = np.concatenate([seal.scores(features[i : i + 1]) for i in range(3)])
    assert batch.shape == (3,)
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_a_view_is_named_when_the_model_has_several(six: ReferenceModel) -> None:
    image = np.zeros((64, 256), np.uint8)
    with pytest.raises(ValueError, match="name one"):
        six.encode(image)
    with pytest.raises(ValueError, match="no view"):
        six.encode(image, "7")


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(MODELS / name, target)
    return target


def test_a_wrong_sha256_refuses_to_load(tmp_path: Path) -> None:
    target = _copy(tmp_path, "seal_edge")
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["sha256s"]["head"] = "0" * 64
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match=r"head\.onnx has sha256"):
        ReferenceModel(target)


def test_a_tampered_or_missing_graph_refuses_to_load(tmp_path: Path) -> None:
    target = _copy(tmp_path, "six_view")
    data = bytearray((target / "head.onnx").read_bytes())
    data[-1] ^= 0xFF
    (target / "head.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"head\.onnx has sha256"):
        ReferenceModel(target)
    (target / "encoder.onnx").unlink()
    with pytest.raises(ModelFileError, match=r"encoder\.onnx"):
        ReferenceModel(target)


def _with_align(tmp_path: Path, align: str) -> ReferenceModel:
    target = _copy(tmp_path / align, "six_view")
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["align"] = align
    manifest["residual"] = "none"  # registration alone (a residual needs it)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return ReferenceModel(target, SessionOptions(intra_op_threads=1))


def test_an_aligned_model_registers_each_capture_onto_its_reference(tmp_path: Path) -> None:
    aligned, plain = _with_align(tmp_path, "affine"), _with_align(tmp_path, "none")
    refs = six_view.reference_views(six_view.dataset_design(TEST_SEED + 2))
    with pytest.raises(NoReferenceError, match="set_reference first"):
        aligned.encode(refs[0], "1")
    aligned.set_reference(refs)
    plain.set_reference(refs)
    h, w = refs[0].shape
    matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 1.5, 1.01)
    matrix[:, 2] += (5.0, -4.0)
    moved = cv2.warpAffine(refs[0], matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
    at_reference = plain.encode(refs[0], "1")
    drift_aligned = np.abs(aligned.encode(moved, "1") - at_reference).mean()
    drift_plain = np.abs(plain.encode(moved, "1") - at_reference).mean()
    assert drift_aligned < 0.5 * drift_plain
    with pytest.raises(AlignmentError, match="no registration"):
        aligned.encode(np.full_like(refs[0], 128), "1")
    assert isinstance(AlignmentError("x"), PreprocessError)  # the scheduler's bad_frame NG


def test_the_pixel_residual_rides_after_the_encoder_channels(six: ReferenceModel) -> None:
    """Inspection maps carry the residual's channels; references and unaligned models do not."""
    assert six.manifest.residual != "none"
    extra = RESIDUAL_CHANNELS[six.manifest.residual]
    design = six_view.dataset_design(TEST_SEED + 4)
    refs = six_view.reference_views(design)
    six.set_reference(refs)
    reference = six.encode_batch([refs[0]], "1", register=False)
    itself = six.encode(refs[0], "1")
    assert itself.shape[1] == reference.shape[1] + extra
    np.testing.assert_allclose(itself[:, : reference.shape[1]], reference, atol=1e-4)
    assert float(np.abs(itself[:, -extra:]).max()) < 0.1  # the reference against itself
    dark = refs[0].copy()
    dark[180:200, 120:140] = dark[180:200, 120:140] // 2
    spotted = six.encode(dark, "1")[:, -extra:]
    assert float(spotted[0, 1, 22:25, 15:17].max()) > 1.0  # a fall where the patch is


def test_a_residual_without_registration_is_refused(tmp_path: Path) -> None:
    target = _copy(tmp_path, "six_view")
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["align"] = "none"
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="residual needs align"):
        ReferenceModel(target)


def test_training_evaluation_scores_an_unregistrable_cell_as_ng(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from linevision.train import _evaluate  # noqa: PLC0415
    from linevision.train._cells import load_cells  # noqa: PLC0415

    six_view.write_dataset(tmp_path / "d", 4, seed=TEST_SEED + 3)
    cv2.imwrite(str(tmp_path / "d" / "00002_OK" / "2.png"), np.full((384, 256), 90, np.uint8))
    labels, margins = _evaluate.margins(
        _model("six_view"), [load_cells(tmp_path / "d", "six_view")]
    )
    assert labels.tolist() == [0, 1, 0, 1]
    assert margins[2] == _evaluate.UNREGISTERED_MARGIN
    assert np.all(margins[[0, 1, 3]] < _evaluate.UNREGISTERED_MARGIN)
