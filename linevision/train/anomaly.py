"""Anomaly mode of the comparison stations (seal_edge, six_view): learn from good cells.

    linevision train --station six_view --data GOOD_CELLS --out M [--mode anomaly]

What a plant has at first is a product's reference views and good cells, and few NG cells
or none. This trainer needs good cells only: the frozen pretrained stem (EfficientNet-Lite0,
stride 8, no trained layer) encodes every view of every good cell as the runtime does
(registered onto the reference and matched to its grey levels where the station registers,
with the pixel residual channels), and ``anomaly_fit`` fits the good cells' Gaussian at every
location of every view. A new cell is scored by how far each location lies from the good
cells there (any change of appearance against the reference and the good cells, whatever
caused it), normalised per location and per view; its largest value over the views is the
cell's score u. The threshold comes from the good cells themselves, each scored by a fit
that did not see it (``anomaly_fit.RULE_GOOD``); NG cells, when the folder has some, never
enter the statistics and only lower the threshold towards them (``RULE_NG``).

The result is an ordinary ``reference_compare`` folder (``encoder.onnx``: the stem;
``head.onnx``: the Gaussians) whose manifest has an ``anomaly`` section; the runtime and the
stations run it unchanged. Training takes the time to encode the cells and a few seconds of
fitting, not the ``--minutes`` budget.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import torch

from linevision.inference import residual as pixel_residual
from linevision.inference.align import AlignmentError, register
from linevision.inference.classifier import fit_input, normalise
from linevision.inference.manifest import AnomalySpec, InputSpec, Manifest, write_manifest
from linevision.inference.reference import ReferenceModel, reference_digest
from linevision.inference.session import SessionOptions, open_session
from linevision.log import get_logger
from linevision.synth.contract import DataError
from linevision.train import _compare, anomaly_eval, anomaly_fit
from linevision.train._cells import IMAGE, Cells, Station, load_cells, view_input
from linevision.train._shipping import (
    ENCODER_FILE,
    HEAD_FILE,
    RunConfig,
    _export_encoder,
    _manifest,
)
from linevision.train.anomaly_head import OUTPUT, AnomalyHead, ViewGaussians
from linevision.train.efficientnet_lite import STRIDE_CHANNELS, pretrained_stem
from linevision.train.folder_data import recorded_path

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from torch import nn

    from linevision.types import Image

Photometric = Literal["none", "match_reference"]
MIN_GOOD: Final = 20
"""Fewest good cells: the 5-fold fit scores each with 16 others and the threshold needs a
90th percentile of at least 20 cross-fitted scores."""
MAX_GOOD: Final = 1000
"""Most good cells fitted (evenly spread over the folders' order); more add little."""
METHOD: Final = "gaussian_per_location"
CHECK_CELLS: Final = 8
CHECK_TOLERANCE: Final = 1e-2
"""Largest |u| difference allowed between this fit and the exported graphs in the runtime."""
PROGRESS_EVERY: Final = 50

log = get_logger(__name__)


@dataclass(frozen=True)
class AnomalyStation:
    """A comparison station's anomaly set-up: its views and preprocessing, the tolerance."""

    station: Station
    tolerance: int
    photometric: Photometric


@dataclass
class Features:
    """Per view: (N, C [+ residual], h, w) inspection features and (1, C, h, w) reference's;
    ``kept``: (folder, cell) of each row (the cells that registered)."""

    inspections: list[np.ndarray]
    references: list[np.ndarray]
    kept: list[tuple[int, int]]


def _read(cells: Cells, index: int) -> tuple[Image, ...]:
    try:
        return cells.views[index]
    except OSError as exc:
        msg = f"{cells.folder}: cell {cells.names[index]}: {exc}"
        raise DataError(msg) from exc


def encode_cells(
    setup: AnomalyStation, run: Callable[..., list[np.ndarray]], cells: Cells, index: Sequence[int]
) -> Features:
    """The runtime's features of ``cells[index]`` (``ReferenceModel.encode_batch``'s path).

    A cell with a view that cannot be registered is left out (the runtime makes it NG
    ``bad_frame``); the log counts them.
    """
    station = setup.station
    specs = [view_input(station, view) for view in station.views]
    refs = [fit_input(cells.reference[v], spec) for v, spec in enumerate(specs)]
    envelopes = [pixel_residual.Envelope.of(r) for r in refs]
    pixels: list[list[np.ndarray]] = [[] for _ in specs]
    extras: list[list[np.ndarray]] = [[] for _ in specs]
    kept: list[tuple[int, int]] = []
    for done, i in enumerate(index, start=1):
        images = _read(cells, i)
        try:
            views = [
                _view(setup, img, spec, ref, env)
                for img, spec, ref, env in zip(images, specs, refs, envelopes, strict=True)
            ]
        except AlignmentError:
            continue
        kept.append((0, i))
        for v, (px, extra) in enumerate(views):
            pixels[v].append(px)
            extras[v].append(extra)
        if done % PROGRESS_EVERY == 0 or done == len(index):
            log.info("cells_encoded", folder=str(cells.folder), done=done, of=len(index))
    if len(kept) < len(index):
        log.warning("align_failed", folder=str(cells.folder), cells=len(index) - len(kept))
    inspections, references = [], []
    for v, _spec in enumerate(specs):
        feats = _stem(run, pixels[v]) if pixels[v] else np.zeros((0, 1, 1, 1), np.float32)
        if station.residual != "none" and pixels[v]:
            feats = np.concatenate([feats, np.stack(extras[v])], axis=1)
        inspections.append(feats)
        references.append(_stem(run, [normalise(refs[v], station.normalisation)]))
    return Features(inspections, references, kept)


def _view(
    setup: AnomalyStation,
    image: Image,
    spec: InputSpec,
    reference: np.ndarray,
    envelope: pixel_residual.Envelope,
) -> tuple[np.ndarray, np.ndarray]:
    """One view: normalised encoder input and residual channels, as the runtime makes them."""
    station = setup.station
    px = fit_input(image, spec)
    seen = None
    if station.align == "affine":
        px, seen = register(px, reference)
    extra = np.zeros((0, 1, 1), np.float32)
    if station.residual != "none":
        extra = pixel_residual.channels(px, envelope, station.stride, seen, station.residual)
    if setup.photometric == "match_reference":
        px = pixel_residual.matched(px, envelope)
    return normalise(px, station.normalisation), extra


def _stem(run: Callable[..., list[np.ndarray]], xs: list[np.ndarray]) -> np.ndarray:
    """The stem's features of normalised inputs, 32 at a time (``InferenceSession.run``)."""
    out = [
        np.asarray(run(None, {IMAGE: np.stack(xs[i : i + 32])})[0], dtype=np.float32)
        for i in range(0, len(xs), 32)
    ]
    return np.concatenate(out)


def head_input(features: np.ndarray, reference: np.ndarray, channels: int) -> np.ndarray:
    """The head's per-location vectors before scaling: stem features less the reference's,
    then the compressed residual channels (``AnomalyHead`` computes the same)."""
    difference = features[:, :channels] - reference
    if features.shape[1] == channels:
        return np.asarray(difference, np.float32)
    residual = anomaly_fit.compress_residual(features[:, channels:])
    return np.concatenate([difference, residual], axis=1).astype(np.float32)


@dataclass(frozen=True)
class Fitted:
    fits: list[anomaly_fit.ViewFit]
    view_scales: list[tuple[float, float]]
    good_u: np.ndarray
    """Each good cell's u from the fit without its fold."""


def fit_views(z_good: list[np.ndarray], tolerance: int, seed: int) -> Fitted:
    """Per view the Gaussians, their per-location and per-view normalisation, and the
    cross-fitted good scores."""
    n = z_good[0].shape[0]
    fold = anomaly_fit.folds_of(n, seed)
    fits, scales, per_view = [], [], []
    for v, z in enumerate(z_good):
        t0 = time.monotonic()
        held_out = anomaly_fit.cross_fit(z, fold, tolerance)
        fit = anomaly_fit.normalise(anomaly_fit.fit_view(z, tolerance), held_out)
        assert fit.location is not None
        assert fit.spread is not None
        h, w = fit.shape
        maps = (held_out - fit.location.reshape(h, w)) / fit.spread.reshape(h, w)
        scores = anomaly_fit.view_scores(maps)
        location, spread = anomaly_fit.view_scale(scores)
        fits.append(fit)
        scales.append((location, spread))
        per_view.append((scores - location) / spread)
        log.info("view_fitted", view=v, cells=n, seconds=round(time.monotonic() - t0, 1))
    return Fitted(fits, scales, np.max(np.stack(per_view, axis=1), axis=1))


def score(fitted: Fitted, z: list[np.ndarray]) -> np.ndarray:
    """(N,) u of cells by the final fit (numpy; the exported head computes the same)."""
    per_view = []
    for fit, (location, spread), zv in zip(fitted.fits, fitted.view_scales, z, strict=True):
        s = anomaly_fit.view_scores(anomaly_fit.distances(zv, fit))
        per_view.append((s - location) / spread)
    return np.asarray(np.max(np.stack(per_view, axis=1), axis=1), dtype=np.float64)


def _reference_digests(setup: AnomalyStation, cells: Cells) -> tuple[str, ...]:
    station = setup.station
    return tuple(
        reference_digest(fit_input(cells.reference[v], view_input(station, view)))
        for v, view in enumerate(station.views)
    )


def load_product(setup: AnomalyStation, folders: Sequence[Path]) -> list[Cells]:
    """Every folder's cells; all folders must show one product (the same reference views)."""
    sets = [load_cells(f, setup.station.name) for f in folders]
    first = _reference_digests(setup, sets[0])
    other = [str(c.folder) for c in sets[1:] if _reference_digests(setup, c) != first]
    if other:
        msg = (
            f"{', '.join(other)}: reference views differ from {sets[0].folder}'s; an anomaly "
            "model learns one product's good cells against its reference: train one model "
            "per product"
        )
        raise DataError(msg)
    return sets


def _pick(sets: list[Cells], label: int, most: int, seed: int) -> list[tuple[int, int]]:
    """(folder, cell) pairs of ``label``, at most ``most`` spread evenly, in folder order."""
    pairs = [(f, int(i)) for f, c in enumerate(sets) for i in np.flatnonzero(c.labels == label)]
    if len(pairs) <= most:
        return pairs
    chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), most, replace=False))
    return [pairs[int(k)] for k in chosen]


def _encode_pairs(
    setup: AnomalyStation,
    run: Callable[..., list[np.ndarray]],
    sets: list[Cells],
    pairs: list[tuple[int, int]],
) -> Features:
    """The features of (folder, cell) ``pairs``, folder after folder (one product: the
    reference features are the first folder's)."""
    parts = []
    for f, cells in enumerate(sets):
        index = [i for g, i in pairs if g == f]
        if index:
            part = encode_cells(setup, run, cells, index)
            part.kept = [(f, i) for _, i in part.kept]
            parts.append(part)
    parts = [p for p in parts if p.kept]
    if not parts:
        return Features([], [], [])
    views = len(setup.station.views)
    return Features(
        [np.concatenate([p.inspections[v] for p in parts]) for v in range(views)],
        parts[0].references,
        [k for p in parts for k in p.kept],
    )


def run(setup: AnomalyStation, config: RunConfig) -> Manifest:
    """Encode, fit, set the threshold, export, check through the runtime, measure, write."""
    started = time.monotonic()
    station = setup.station
    torch.set_num_threads(config.threads)
    sets = load_product(setup, (*config.data, *config.val))
    good_pairs = _pick(sets, 0, MAX_GOOD, config.seed)
    ng_pairs = _pick(sets, 1, MAX_GOOD, config.seed)
    if len(good_pairs) < MIN_GOOD:
        where = ", ".join(str(c.folder / "labels.csv") for c in sets)
        msg = (
            f"{where}: {len(good_pairs)} good (OK) cells; an anomaly model needs at least "
            f"{MIN_GOOD} (5 folds of 4 to score each with a fit that did not see it). Add good "
            "cells of this product"
        )
        raise DataError(msg)
    stem = pretrained_stem(station.stride)
    with tempfile.TemporaryDirectory() as tmp:
        stem_path = Path(tmp) / "stem.onnx"
        _export_encoder(station, stem, stem_path)
        session = open_session(stem_path, SessionOptions(intra_op_threads=config.threads))
        good = _encode_pairs(setup, session.run, sets, good_pairs)
        ng = _encode_pairs(setup, session.run, sets, ng_pairs)
    if len(good.kept) < MIN_GOOD:
        msg = f"only {len(good.kept)} good cells could be registered; {MIN_GOOD} are needed"
        raise DataError(msg)
    channels = STRIDE_CHANNELS[station.stride]
    z_good = [
        head_input(f, r, channels) for f, r in zip(good.inspections, good.references, strict=True)
    ]
    encoded_s = time.monotonic() - started
    log.info("cells_encoded_all", good=len(good.kept), ng=len(ng.kept), seconds=round(encoded_s))
    fitted = fit_views(z_good, setup.tolerance, config.seed)
    ng_u = np.zeros(0)
    if ng.kept:
        z_ng = [
            head_input(f, r, channels) for f, r in zip(ng.inspections, ng.references, strict=True)
        ]
        ng_u = score(fitted, z_ng)
    threshold = anomaly_fit.refined_threshold(fitted.good_u, ng_u)
    rule = anomaly_fit.RULE_GOOD + ("; " + anomaly_fit.RULE_NG if len(ng_u) else "")
    train_minutes = (time.monotonic() - started) / 60.0
    config.out.mkdir(parents=True, exist_ok=True)
    _export_encoder(station, stem, config.out / ENCODER_FILE)
    head = AnomalyHead(
        [
            ViewGaussians(fit, channels, location, spread)
            for fit, (location, spread) in zip(fitted.fits, fitted.view_scales, strict=True)
        ]
    ).eval()
    _export_head(station, head, good, config.out / HEAD_FILE)
    spec = AnomalySpec(
        method=METHOD,
        threshold=round(threshold, 4),
        rule=rule,
        tolerance=setup.tolerance,
        photometric=setup.photometric,
        good_cells=len(good.kept),
        ng_cells=len(ng_u),
        reference_digests=_reference_digests(setup, sets[0]),
        good_scores=_summary(fitted.good_u, threshold),
        ng_scores=_summary(ng_u, threshold) if len(ng_u) else {},
    )
    training: dict[str, object] = {
        "mode": "anomaly",
        "data": [recorded_path(p) for p in (*config.data, *config.val)],
        "test": [recorded_path(p) for p in config.test],
        "good_cells": len(good.kept),
        "ng_cells": len(ng.kept),
        "encoder": f"frozen ImageNet EfficientNet-Lite0 stem, stride {station.stride}",
        "method": METHOD,
        "shrinkage": anomaly_fit.SHRINKAGE,
        "folds": anomaly_fit.FOLDS,
        "seed": config.seed,
        "seconds_encoding": round(encoded_s, 1),
        "minutes_used": round(train_minutes, 2),
        "minutes_budget": config.minutes,
        "torch": torch.__version__,
        "opset": _compare.ONNX_OPSET,
    }
    manifest = _anomaly_manifest(station, config.out, spec, training, {})
    write_manifest(config.out, manifest)
    diff = _check_runtime(config.out, sets[0], fitted, z_good, good.kept)
    metrics = anomaly_eval.evaluate(config.out, config.test, station.name)
    metrics["runtime_max_abs_score_diff"] = diff
    manifest = _anomaly_manifest(station, config.out, spec, training, metrics)
    write_manifest(config.out, manifest)
    log.info(
        "model_written",
        out=str(config.out),
        mode="anomaly",
        threshold=spec.threshold,
        good=len(good.kept),
        ng=len(ng_u),
        minutes=round((time.monotonic() - started) / 60.0, 2),
    )
    return manifest


def _summary(u: np.ndarray, threshold: float) -> dict[str, float]:
    return {
        "n": float(len(u)),
        "min": round(float(np.min(u)), 3),
        "median": round(float(np.median(u)), 3),
        "q90": round(float(np.quantile(u, 0.9)), 3),
        "max": round(float(np.max(u)), 3),
        "at_or_over_threshold": float(np.sum(u >= threshold)),
    }


def _export_head(station: Station, head: AnomalyHead, good: Features, path: Path) -> None:
    inspections = [v.inspection_input for v in station.views]
    references = [v.reference_input for v in station.views]
    axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n in inspections}
    axes.update({n: {0: "reference_batch"} for n in references})
    axes[OUTPUT] = {0: "batch"}
    example = (
        *(torch.from_numpy(f[:2].copy()) for f in good.inspections),
        *(torch.from_numpy(r.copy()) for r in good.references),
    )
    _compare.export_onnx(
        _Flat(head, len(station.views)),
        example,
        path,
        ([*inspections, *references], [OUTPUT]),
        axes,
    )


class _Flat(torch.nn.Module):
    def __init__(self, head: nn.Module, views: int) -> None:
        super().__init__()
        self.head = head
        self.count = views

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(list(xs[: self.count]), list(xs[self.count :]))
        return out


def _anomaly_manifest(
    station: Station,
    out: Path,
    spec: AnomalySpec,
    training: dict[str, object],
    metrics: dict[str, object],
) -> Manifest:
    base = _manifest(station, out, 0.5, training, metrics).model_dump()
    base.update(
        output=OUTPUT,
        anomaly=spec.model_dump(),
        version=f"{base['version']}-anomaly",
    )
    return Manifest.model_validate(base)


def _check_runtime(
    out: Path,
    cells: Cells,
    fitted: Fitted,
    z_good: list[np.ndarray],
    kept: list[tuple[int, int]],
) -> float:
    """Largest |u| difference between the fit and the written folder run by the runtime
    from the images, on a few good cells of the first folder; RuntimeError past
    ``CHECK_TOLERANCE``."""
    model = ReferenceModel(out)
    model.set_reference(cells.reference)
    rows = [k for k, (f, _) in enumerate(kept) if f == 0][:CHECK_CELLS]
    images = [cells.views[kept[k][1]] for k in rows]
    feats = [
        model.encode_batch([c[v] for c in images], view) for v, view in enumerate(model.view_names)
    ]
    runtime_u = model.anomaly_scores(*feats)
    fit_u = score(fitted, [z[rows] for z in z_good])
    diff = float(np.max(np.abs(runtime_u - fit_u))) if rows else math.nan
    if diff > CHECK_TOLERANCE:
        msg = f"the exported anomaly model scores differ from the fit by {diff:.2e}"
        raise RuntimeError(msg)
    return diff
