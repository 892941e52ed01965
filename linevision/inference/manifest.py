"""The manifest that travels beside every ONNX file (``models/<name>/manifest.json``).

Preprocessing, class names and the decision threshold live here, so an exported model
scores at run time exactly as it did when it was evaluated.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


class ViewSpec(_Model):
    """One view of a ``reference_compare`` model: its input size and its head inputs."""

    name: str
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    inspection_input: str
    reference_input: str


REFERENCE_ROLES = ("encoder", "head")


class ScreenSpec(_Model):
    """The first stage of a ``tile_anomaly`` model: a local-contrast screen on the full tile.

    Signal = |box_blur(B - R, kernel) - (B - R)| (saturating uint8), box-smoothed by
    ``smooth``; a tile whose largest signal reaches ``threshold`` goes to the second stage.
    """

    method: Literal["chroma_tophat"] = "chroma_tophat"
    kernel: int = Field(gt=1)
    smooth: int = Field(ge=1)
    threshold: float = Field(gt=0.0)


class TileAnomalySpec(_Model):
    """Tiling and thresholds of a ``tile_anomaly`` model (seeds 003 + 004).

    Frames are cut into ``tile`` x ``tile`` tiles with ``overlap``; each flagged tile is
    downscaled by ``downscale`` (INTER_AREA) to the model input, whose output map has one
    cell per ``map_stride`` frame pixels. A tile is NG when its map's maximum exceeds
    ``score_threshold``; map cells above it form the defects. The ``edge_cells`` outermost
    cells of a tile's map along an edge shared with a neighbour are dropped (the overlap must
    cover them twice over: ``overlap >= 2 * edge_cells * map_stride``).

    The second stage runs on ``roi`` x ``roi`` windows centred on flagged screen cells (a
    flagged tile's defects, not the whole tile); ``roi_edge_cells`` cells along a window
    edge inside the frame are dropped, and a flagged cell inside another window's kept part
    starts no new window.
    """

    tile: int = Field(gt=0)
    overlap: int = Field(ge=0)
    downscale: int = Field(ge=1)
    map_stride: int = Field(gt=0)
    score_threshold: float = Field(gt=0.0)
    screen: ScreenSpec
    edge_cells: int = Field(default=0, ge=0)
    roi: int = Field(default=256, gt=0)
    roi_edge_cells: int = Field(default=3, ge=0)

    @model_validator(mode="after")
    def _overlap_covers_edges(self) -> Self:
        if self.overlap < 2 * self.edge_cells * self.map_stride:
            msg = f"overlap {self.overlap} < 2 * edge_cells * map_stride; edges left uncovered"
            raise ValueError(msg)
        if self.roi % (self.map_stride * self.downscale) or self.roi > self.tile:
            msg = f"roi {self.roi} must be a multiple of map_stride * downscale and <= tile"
            raise ValueError(msg)
        if 2 * (self.roi_edge_cells + 1) * self.map_stride > self.roi:
            msg = f"roi {self.roi} keeps no cell after dropping {self.roi_edge_cells} per edge"
            raise ValueError(msg)
        return self


class Manifest(_Model):
    """A model folder's description.

    ``classifier``: ``file`` maps ``input`` to class scores ``output``.
    ``reference_compare``: ``files`` maps each role (``encoder``, ``head``) to its ONNX file,
    ``sha256s`` gives each file's digest; ``file``/``sha256`` repeat the encoder's, which turns
    one view resized to its ``views`` size into ``feature_output``; the head takes every view's
    inspection and reference features and returns (OK, NG) logits as ``output``. ``threshold``
    is then the P(NG) at or above which a cell is NG. ``align`` ``affine``: each capture is
    registered onto its reference view (``linevision.inference.align``) before encoding.
    ``residual`` ``envelope`` (needs ``align``): the inspection features carry two more
    channels, the registered capture's pixel residual against its reference
    (``linevision.inference.residual``), pooled to the feature map's cells;
    ``envelope_edges``: those two and a third, where the capture's slopes leave the
    reference's.
    """

    schema_version: Literal[1] = 1
    name: str
    version: str
    kind: Literal["classifier", "reference_compare", "tile_anomaly"]
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
    files: dict[str, str] = Field(default_factory=dict)
    sha256s: dict[str, str] = Field(default_factory=dict)
    views: tuple[ViewSpec, ...] = ()
    feature_output: str | None = None
    align: Literal["none", "affine"] = "none"
    residual: Literal["none", "envelope", "envelope_edges"] = "none"
    tile_anomaly: TileAnomalySpec | None = None

    @model_validator(mode="after")
    def _reference_fields(self) -> Self:
        if self.kind == "tile_anomaly" and self.tile_anomaly is None:
            msg = "tile_anomaly needs the tile_anomaly section (tiling, screen, threshold)"
            raise ValueError(msg)
        if self.kind != "reference_compare":
            return self
        if set(self.files) != set(REFERENCE_ROLES) or set(self.sha256s) != set(REFERENCE_ROLES):
            msg = f"reference_compare needs files and sha256s for exactly {REFERENCE_ROLES}"
            raise ValueError(msg)
        if not all(re.fullmatch(r"[0-9a-f]{64}", v) for v in self.sha256s.values()):
            msg = "sha256s must be 64 lower-case hex digits each"
            raise ValueError(msg)
        if self.files["encoder"] != self.file or self.sha256s["encoder"] != self.sha256:
            msg = "file and sha256 must repeat files['encoder'] and sha256s['encoder']"
            raise ValueError(msg)
        if not self.views or self.feature_output is None:
            msg = "reference_compare needs views and feature_output"
            raise ValueError(msg)
        if self.residual != "none" and self.align == "none":
            msg = "residual needs align: a pixel residual is only meaningful on registered views"
            raise ValueError(msg)
        return self


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
    for role, name in manifest.files.items():
        _verify_file(model_dir / name, manifest.sha256s[role], manifest_path)
    return manifest, onnx_path


def _verify_file(path: Path, expected: str, manifest_path: Path) -> None:
    if not path.is_file():
        msg = f"model file not found: {path} (named by {manifest_path})"
        raise ModelFileError(msg)
    actual = sha256_file(path)
    if actual != expected:
        msg = f"model file {path} has sha256 {actual}, but {manifest_path} expects {expected}"
        raise ModelFileError(msg)


def load_model_files(model_dir: Path) -> tuple[Manifest, dict[str, Path]]:
    """Read and check a ``reference_compare`` folder; return it and each role's verified file."""
    manifest, _ = load_manifest(model_dir)
    if manifest.kind != "reference_compare":
        msg = f"{model_dir / MANIFEST_NAME}: kind {manifest.kind!r}, expected 'reference_compare'"
        raise ModelFileError(msg)
    return manifest, {role: model_dir / name for role, name in manifest.files.items()}


def write_manifest(model_dir: Path, manifest: Manifest) -> Path:
    path = model_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return path
