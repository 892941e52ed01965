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
    """The first stage of a ``tile_anomaly`` model: a screen on every pixel of the frame.

    ``local_deviation``: per channel (B, G, R), the deviation from a ``kernel`` box
    background, box-smoothed by ``smooth``, less its column's mean over ``column`` lines
    (1: none), divided by the channel's good-film ``spread`` (grey levels); the signal is 4 x
    the largest of the three (uint8, saturating). With ``scale`` 2 all of it runs on the
    frame area-averaged 2 x 2 (sizes in those pixels; 1: full resolution, older models), one
    signal value per ``scale`` x ``scale`` frame pixels. ``chroma_tophat`` (older models):
    |box_blur(B - R, kernel) - (B - R)|, box-smoothed by ``smooth``. A tile whose largest
    signal reaches ``threshold`` goes to the second stage (:mod:`linevision.inference.film`).
    """

    method: Literal["chroma_tophat", "local_deviation"] = "chroma_tophat"
    kernel: int = Field(gt=1)
    smooth: int = Field(ge=1)
    threshold: float = Field(gt=0.0)
    column: int = Field(default=1, ge=1)
    spread: tuple[float, float, float] | None = None
    scale: int = Field(default=1, ge=1, le=4)

    @model_validator(mode="after")
    def _method_fields(self) -> Self:
        if self.spread is not None and min(self.spread) <= 0.0:
            msg = f"spread must be > 0 in every channel, got {self.spread}"
            raise ValueError(msg)
        if self.method == "chroma_tophat" and (
            self.column != 1 or self.spread is not None or self.scale != 1
        ):
            msg = "column, spread and scale belong to the local_deviation screen"
            raise ValueError(msg)
        return self

    @property
    def halo(self) -> int:
        """Frame lines above and below a row that its signal depends on (plus one), a
        multiple of ``scale``."""
        return self.scale * (self.kernel // 2 + self.smooth // 2 + self.column // 2 + 1)


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
        if self.map_stride % self.screen.scale:
            msg = f"map_stride {self.map_stride} must be a multiple of screen.scale"
            raise ValueError(msg)
        if 2 * (self.roi_edge_cells + 1) * self.map_stride > self.roi:
            msg = f"roi {self.roi} keeps no cell after dropping {self.roi_edge_cells} per edge"
            raise ValueError(msg)
        return self


class ScoreScale(_Model):
    """One calibrated score: ``name`` ``cell`` (the head on the cell as captured) or a view's
    name (the head on that view, every other view replaced by the product's typical good
    view), with its good cells' ``location`` and ``scale`` (logit units)."""

    name: str
    location: float
    scale: float = Field(gt=0.0)


class Calibration(_Model):
    """A product's own decision for a ``reference_compare`` model, set from its good cells.

    ``linevision calibrate`` runs up to 50 good cells of one product (design) through the
    model and records, per score in ``scores`` (``ScoreScale``), the good cells' location and
    scale of the head's margin m = logit(NG) - logit(OK). A cell's calibrated score is
    u = max over ``scores`` of (m - location) / scale; it is NG when u >= ``threshold``.
    This replaces the manifest's ``threshold``, which stays as shipped.
    ``features`` (a ``.npz`` in the model folder, sha256 ``features_sha256``) holds each
    view's typical good inspection features (the good cells' mean). ``data_sha256`` is the
    sha256 of ``listing`` (a file in the model folder, one ``<sha256>  <path>`` line per image
    of the reference and of the cells used), so an auditor can tell which cells set it.
    """

    rule: str
    scores: tuple[ScoreScale, ...] = Field(min_length=1)
    threshold: float
    cells: int = Field(gt=0)
    cells_given: int = Field(gt=0)
    good_scores: dict[str, float] = Field(default_factory=dict)
    features: str
    features_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    listing: str
    data_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source_version: str
    calibrated_at: str


ANOMALY_METHODS = ("gaussian_per_location",)
"""Anomaly scorers this runtime can run (``AnomalySpec.method``)."""


class AnomalySpec(_Model):
    """A ``reference_compare`` model in anomaly mode: learnt from one product's good cells.

    The encoder is the frozen pretrained stem; the head (``method``
    ``gaussian_per_location``, ``linevision.train.anomaly``) scores each location of each
    view's registered inspection features, taken relative to the reference's, against the
    good cells' Gaussian there (Mahalanobis distance, the least over the locations within
    ``tolerance`` cells), normalises it by the good cells' spread at that location and
    returns per view the largest value, normalised by the good cells' view scores, as
    ``output`` (N, views). The cell's score u is the largest over the views; NG at
    u >= ``threshold`` (``rule`` says how it was set, from ``good_cells`` good cells and
    ``ng_cells`` NG cells). ``photometric`` ``match_reference``: each registered capture is
    mapped onto its reference's grey levels (``residual.matched``) before it is encoded.
    The statistics hold for the reference views they were learnt against only:
    ``reference_digests`` is the sha256 of each view's reference pixels (gray, at the
    view's size), and the runtime refuses other reference views.
    """

    method: str
    threshold: float
    rule: str
    tolerance: int = Field(ge=0)
    photometric: Literal["none", "match_reference"] = "none"
    good_cells: int = Field(gt=0)
    ng_cells: int = Field(default=0, ge=0)
    reference_digests: tuple[str, ...] = Field(min_length=1)
    good_scores: dict[str, float] = Field(default_factory=dict)
    ng_scores: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> Self:
        if self.method not in ANOMALY_METHODS:
            msg = (
                f"anomaly method {self.method!r} is not one this runtime can run "
                f"({', '.join(ANOMALY_METHODS)}): update linevision, or train the model again "
                "with this version"
            )
            raise ValueError(msg)
        if not all(re.fullmatch(r"[0-9a-f]{64}", d) for d in self.reference_digests):
            msg = "reference_digests must be 64 lower-case hex digits each"
            raise ValueError(msg)
        return self


Backend = Literal["onnxruntime", "openvino"]
Precision = Literal["fp32", "int8", "bf16"]


class RuntimeVariant(_Model):
    """One way to run the model's graphs, checked on the validation set before it was listed.

    ``threshold`` is the decision threshold that backend and precision apply (the one
    the manifest's kind uses: the classifier's least OK probability, the comparison's
    P(NG), the film's ``score_threshold``); ``validation`` the figures it reached and
    ``reference`` those of the graph on onnxruntime at its own precision in the same check
    (a variant is listed when its accuracy, macro F1, NG recall and OK false reject are
    within ``tolerance`` of those). ``checked_on`` names the validation set,
    ``runtime_version`` the backend's version that ran the check.
    """

    backend: Backend
    precision: Precision
    threshold: float = Field(ge=0.0)
    validation: dict[str, float] = Field(default_factory=dict)
    reference: dict[str, float] = Field(default_factory=dict)
    tolerance: float = Field(default=0.005, ge=0.0)
    checked_on: str = ""
    runtime_version: str = ""

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}"


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
    reference's. ``calibration`` (``reference_compare`` only): the product's own threshold
    from its good cells (``Calibration``), which the runtime applies instead of ``threshold``.
    ``anomaly`` (``reference_compare`` only): the model is an anomaly model (``AnomalySpec``):
    its head returns per-view anomaly scores as ``output``, and its own threshold decides.
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
    calibration: Calibration | None = None
    anomaly: AnomalySpec | None = None
    precision: Literal["fp32", "int8"] = "fp32"
    runtimes: tuple[RuntimeVariant, ...] = ()

    @model_validator(mode="after")
    def _anomaly_fields(self) -> Self:
        a = self.anomaly
        if a is None:
            return self
        if self.kind != "reference_compare":
            msg = "anomaly is for reference_compare models only"
            raise ValueError(msg)
        if self.calibration is not None:
            msg = (
                "an anomaly model sets its own threshold from its good cells; it takes no "
                "calibration section"
            )
            raise ValueError(msg)
        if len(a.reference_digests) != len(self.views):
            msg = f"anomaly needs one reference digest per view ({len(self.views)})"
            raise ValueError(msg)
        if a.photometric != "none" and self.align == "none":
            msg = "photometric match_reference needs align: it maps registered captures"
            raise ValueError(msg)
        return self

    @property
    def decision_threshold(self) -> float:
        """The threshold the graphs' own precision on onnxruntime decides with."""
        if self.tile_anomaly is not None:
            return self.tile_anomaly.score_threshold
        return self.threshold

    def runtime_variant(self, backend: str, precision: str | None = None) -> RuntimeVariant:
        """The calibrated variant for ``backend`` at ``precision`` (None: the graphs' own).

        ``ValueError`` naming the calibrated ones when there is none: a threshold set on
        one runtime is not assumed to hold on another.
        """
        wanted = precision or self.precision
        for v in self.runtimes:
            if (v.backend, v.precision) == (backend, wanted):
                return v
        if (backend, wanted) == ("onnxruntime", self.precision):
            return RuntimeVariant(
                backend="onnxruntime", precision=self.precision, threshold=self.decision_threshold
            )
        known = [f"onnxruntime/{self.precision}", *(v.label for v in self.runtimes)]
        msg = (
            f"model {self.name} {self.version} has no threshold calibrated for "
            f"{backend}/{wanted} (calibrated: {', '.join(dict.fromkeys(known))}); check that "
            f"variant on the validation set first (linevision variants --variant "
            f"{backend}/{wanted}) or configure a calibrated one"
        )
        raise ValueError(msg)

    @model_validator(mode="after")
    def _runtime_variants(self) -> Self:
        labels = [v.label for v in self.runtimes]
        if len(set(labels)) != len(labels):
            msg = f"runtimes lists a backend/precision twice: {labels}"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _calibration_fields(self) -> Self:
        if self.calibration is None:
            return self
        if self.kind != "reference_compare":
            msg = "calibration is for reference_compare models only"
            raise ValueError(msg)
        names = [s.name for s in self.calibration.scores]
        known = {"cell", *(v.name for v in self.views)}
        if len(set(names)) != len(names) or not set(names) <= known:
            msg = f"calibration scores {names} must be distinct names among {sorted(known)}"
            raise ValueError(msg)
        return self

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
    if manifest.calibration is not None:
        cal = manifest.calibration
        _verify_file(model_dir / cal.listing, cal.data_sha256, manifest_path)
        _verify_file(model_dir / cal.features, cal.features_sha256, manifest_path)
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
