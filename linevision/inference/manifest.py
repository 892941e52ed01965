"""The manifest that travels beside every ONNX file (``models/<name>/manifest.json``).

Preprocessing, class names and the decision threshold live here, so an exported model
scores at run time exactly as it did when it was evaluated.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MANIFEST_NAME = "manifest.json"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputSpec(_Model):
    name: str
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    channels: Literal[1, 3]
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    color: Literal["gray", "bgr", "rgb"] = "gray"
    resize: Literal["area", "linear"] = "area"


class Normalisation(_Model):
    """x = (pixel * scale - mean) / std, per channel."""

    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)


class Manifest(_Model):
    schema_version: Literal[1] = 1
    name: str
    version: str
    kind: Literal["classifier"]
    file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input: InputSpec
    output: str
    normalisation: Normalisation = Normalisation()
    classes: tuple[str, ...] = Field(min_length=2)
    ok_labels: tuple[str, ...] = ("Normal",)
    threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    training: dict[str, object] = Field(default_factory=dict)
    metrics: dict[str, object] = Field(default_factory=dict)


class ModelFileError(Exception):
    """A model folder that cannot be used: missing file, bad manifest or sha256 mismatch."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(model_dir: Path) -> tuple[Manifest, Path]:
    """Read and check ``model_dir/manifest.json``; return it and the verified ONNX path."""
    manifest_path = model_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        msg = f"model manifest not found: {manifest_path}"
        raise ModelFileError(msg)
    try:
        manifest = Manifest.model_validate(json.loads(manifest_path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        msg = f"model manifest {manifest_path} is invalid: {exc}"
        raise ModelFileError(msg) from exc
    onnx_path = model_dir / manifest.file
    if not onnx_path.is_file():
        msg = f"model file not found: {onnx_path} (named by {manifest_path})"
        raise ModelFileError(msg)
    actual = sha256_file(onnx_path)
    if actual != manifest.sha256:
        msg = (
            f"model file {onnx_path} has sha256 {actual}, "
            f"but {manifest_path} expects {manifest.sha256}"
        )
        raise ModelFileError(msg)
    return manifest, onnx_path


def write_manifest(model_dir: Path, manifest: Manifest) -> Path:
    path = model_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return path
