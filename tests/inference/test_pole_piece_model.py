"""The shipped pole-piece classifier (models/pole_piece): manifest, checksum, accuracy.

Runs onnxruntime only; the preprocessing is taken from the manifest, not from the
training code, so this also checks that the manifest describes what training used.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from linevision.inference.manifest import ModelFileError, load_manifest, sha256_file
from linevision.inference.session import open_session
from linevision.synth import pole_piece as pp

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "pole_piece"
TEST_SEED = 4242
PER_CLASS = 50


@pytest.fixture(scope="module")
def shipped():
    manifest, onnx_path = load_manifest(MODEL_DIR)
    session = open_session(onnx_path)
    return manifest, onnx_path, session


def _preprocess(manifest, images: np.ndarray) -> np.ndarray:
    spec = manifest.input
    norm = manifest.normalisation
    interpolation = cv2.INTER_AREA if spec.resize == "area" else cv2.INTER_LINEAR
    batch = np.stack(
        [cv2.resize(img, (spec.width, spec.height), interpolation=interpolation) for img in images]
    )
    x = batch[:, None].astype(np.float32) * np.float32(norm.scale)
    mean = np.asarray(norm.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(norm.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (x - mean) / std


def _predict(manifest, session, images: np.ndarray) -> np.ndarray:
    out = [
        session.run(
            [manifest.output], {manifest.input.name: _preprocess(manifest, images[i : i + 25])}
        )[0]
        for i in range(0, len(images), 25)
    ]
    return np.concatenate(out).argmax(axis=1)


def test_manifest_describes_the_model(shipped) -> None:
    manifest, onnx_path, session = shipped
    assert manifest.name == "pole_piece"
    assert manifest.kind == "classifier"
    assert manifest.classes == pp.CLASSES
    assert manifest.ok_labels == ("Normal",)
    assert manifest.input.channels == 1
    assert manifest.input.color == "gray"
    assert (manifest.input.height, manifest.input.width) == (224, 224)
    assert manifest.sha256 == sha256_file(onnx_path)
    assert sum(f.stat().st_size for f in MODEL_DIR.iterdir()) <= 25 * 2**20
    assert session.input_names == [manifest.input.name]
    assert session.output_names == [manifest.output]
    assert float(manifest.metrics["macro_f1"]) >= 0.97


def test_batch_axis_is_dynamic(shipped) -> None:
    manifest, _, session = shipped
    images, _ = pp.generate_batch(1, seed=TEST_SEED + 1)
    for n in (1, 5):
        logits = session.run(
            [manifest.output], {manifest.input.name: _preprocess(manifest, images[:n])}
        )[0]
        assert logits.shape == (n, len(manifest.classes))
        assert logits.dtype == np.float32


def test_accuracy_on_fresh_generated_crops(shipped) -> None:
    manifest, _, session = shipped
    images, labels = pp.generate_batch(PER_CLASS, seed=TEST_SEED)
    predicted = _predict(manifest, session, images)
    accuracy = float(np.mean(predicted == labels))
    assert accuracy >= 0.97, f"accuracy {accuracy:.3f}"
    for k, name in enumerate(manifest.classes):
        recall = float(np.mean(predicted[labels == k] == k))
        assert recall >= 0.9, f"{name} recall {recall:.3f}"


def test_tampered_model_file_is_refused(tmp_path) -> None:
    manifest, onnx_path = load_manifest(MODEL_DIR)
    target = tmp_path / "pole_piece"
    target.mkdir()
    shutil.copyfile(MODEL_DIR / "manifest.json", target / "manifest.json")
    data = bytearray(onnx_path.read_bytes())
    data[-1] ^= 0xFF
    (target / manifest.file).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        load_manifest(target)
