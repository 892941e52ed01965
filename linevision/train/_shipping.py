"""Train a reference-compare station model on cached stem features and ship it.

The station module (seal_edge, six_view) gives a ``Station``: its views, its trainable
adapter (the part of the encoder after the frozen pretrained stem) and its head. This module
reads the dataset folders, caches the stem features, trains, exports ``encoder.onnx`` and
``head.onnx``, calibrates the P(NG) threshold on the validation folders through the runtime
(``linevision.inference.reference``), measures the test folders and writes the manifest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import torch
from torch import nn

from linevision.inference import residual as pixel_residual
from linevision.inference.classifier import normalise
from linevision.inference.manifest import (
    Manifest,
    sha256_file,
    write_manifest,
)
from linevision.inference.reference import ReferenceModel
from linevision.inference.session import SessionOptions, open_session
from linevision.log import get_logger
from linevision.train import _compare, _evaluate
from linevision.train._cells import (
    IMAGE,
    Cached,
    Cells,
    Station,
    cache_features,
    load_sets,
    view_input,
)
from linevision.train.budget import DEFAULT_PATIENCE
from linevision.train.efficientnet_lite import pretrained_stem
from linevision.train.folder_data import recorded_path

ENCODER_FILE: Final = "encoder.onnx"
HEAD_FILE: Final = "head.onnx"
FEATURES: Final = "features"
LOGITS: Final = "logits"
ONNX_TOLERANCE: Final = 1e-3

log = get_logger(__name__)


@dataclass(frozen=True)
class RunConfig:
    data: tuple[Path, ...]
    out: Path
    val: tuple[Path, ...] = ()
    test: tuple[Path, ...] = ()
    epochs: int | None = None
    minutes: float = 10.0
    patience: int | None = DEFAULT_PATIENCE
    seed: int = 0
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    ng_weight: float = 2.0
    threads: int = 2
    cache: Path | None = None
    view_scale: int = 1
    stride: int = 8
    residual: pixel_residual.Mode = "none"
    mode: str = "auto"
    tolerance: int | None = None


def _forward(model: nn.Module, cached: Cached, index: np.ndarray) -> torch.Tensor:
    """Adapter over the inspection and (unique) reference features in one pass, then head."""
    folders, inverse = np.unique(cached.folder[index], return_inverse=True)
    inspections, references = [], []
    adapter: nn.Module = getattr(model, "adapter")  # noqa: B009
    for feats, refs, extra in zip(
        cached.features, cached.references, cached.residuals, strict=True
    ):
        x = torch.from_numpy(np.concatenate([feats[index], refs[folders]]).astype(np.float32))
        y = adapter(x)
        inspection = y[: len(index)]
        if extra.shape[1]:
            residual = torch.from_numpy(extra[index].astype(np.float32))
            inspection = torch.cat([inspection, residual], dim=1)
        inspections.append(inspection)
        references.append(y[len(index) :][torch.from_numpy(inverse)])
    head: nn.Module = getattr(model, "head")  # noqa: B009
    logits: torch.Tensor = head(inspections, references)
    return logits


def train(
    station: Station, config: RunConfig, cached: dict[str, Cached], deadline: float
) -> tuple[nn.Module, _compare.FitResult]:
    torch.manual_seed(config.seed)
    model = station.build()
    train_set, val_set = cached["train"], cached["val"]

    def batch_loss(index: np.ndarray) -> torch.Tensor:
        y = torch.from_numpy(train_set.labels[index])
        return _compare.cross_entropy(_forward(model, train_set, index), y, config.ng_weight)

    def validate() -> tuple[_compare.Labels, _compare.F64Array]:
        model.eval()
        with torch.inference_mode():
            out = [
                _forward(model, val_set, np.arange(i, min(i + 64, len(val_set.labels)))).numpy()
                for i in range(0, len(val_set.labels), 64)
            ]
        return val_set.labels, _compare.ng_margin(np.concatenate(out))

    fit_config = _compare.FitConfig(
        config.epochs,
        config.batch_size,
        config.lr,
        config.weight_decay,
        config.seed,
        deadline,
        config.patience,
    )
    result = _compare.fit(model, batch_loss, len(train_set.labels), validate, fit_config)
    return model.eval(), result


def run(station: Station, config: RunConfig) -> Manifest:
    """Read, cache, train, export, calibrate, evaluate, write ``config.out``."""
    started = time.monotonic()
    deadline = started + config.minutes * 60.0
    torch.set_num_threads(config.threads)
    stem = pretrained_stem(station.stride)
    folders = {"train": config.data, "val": config.val, "test": config.test}
    sets = load_sets(folders, station.name, config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        stem_path = Path(tmp) / "stem.onnx"
        _export_encoder(station, stem, stem_path)
        session = open_session(stem_path, SessionOptions(intra_op_threads=config.threads))
        cached = {
            role: cache_features(station, session, sets[role], config.cache)
            for role in ("train", "val")
        }
    for role, c in cached.items():
        log.info("features_cached", set=role, n=len(c.labels), ng=int(c.labels.sum()))
    log.info("data_ready", seconds=round(time.monotonic() - started, 1))
    model, result = train(station, config, cached, deadline)
    train_minutes = (time.monotonic() - started) / 60.0
    encoder = nn.Sequential(stem, getattr(model, "adapter")).eval()  # noqa: B009
    head: nn.Module = getattr(model, "head")  # noqa: B009
    config.out.mkdir(parents=True, exist_ok=True)
    _export_encoder(station, encoder, config.out / ENCODER_FILE)
    _export_head(station, encoder, head, config.out / HEAD_FILE)
    training: dict[str, object] = {
        "generator": f"linevision.synth.{station.name} (folders below)",
        "data": [recorded_path(p) for p in config.data],
        "val": [recorded_path(p) for p in config.val]
        or "20 % of the data folders' cells per class",
        "test": [recorded_path(p) for p in config.test],
        "train_samples": len(cached["train"].labels),
        "train_ng": int(cached["train"].labels.sum()),
        "val_samples": len(cached["val"].labels),
        "architecture": station.architecture,
        "stem_stride": station.stride,
        "view_scale": config.view_scale,
        "residual": station.residual,
        "parameters": sum(int(p.numel()) for p in (*encoder.parameters(), *head.parameters())),
        "trainable_parameters": sum(int(p.numel()) for p in model.parameters()),
        "optimizer": "AdamW",
        "lr": config.lr,
        "weight_decay": config.weight_decay,
        "ng_loss_weight": config.ng_weight,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "epochs_cap": config.epochs,
        "patience": config.patience,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "minutes_budget": config.minutes,
        "minutes_used": round(train_minutes, 2),
        "history": result.history,
        "torch": torch.__version__,
        "opset": _compare.ONNX_OPSET,
    }
    manifest = _manifest(station, config.out, 0.5, training, {})
    write_manifest(config.out, manifest)
    diff = _check_onnx(encoder, head, sets["val"][0], config.out)
    threshold, metrics = _evaluate.evaluate(config.out, sets["val"], sets["test"])
    metrics["torch_onnx_max_abs_margin_diff"] = diff
    manifest = _manifest(station, config.out, threshold, training, metrics)
    write_manifest(config.out, manifest)
    log.info(
        "model_written",
        out=str(config.out),
        threshold=threshold,
        minutes=round((time.monotonic() - started) / 60.0, 2),
        **{k: v for k, v in metrics.items() if not isinstance(v, dict)},
    )
    return manifest


def _export_encoder(station: Station, encoder: nn.Module, path: Path) -> None:
    view = station.views[0]
    axes = {0: "batch", 2: "height", 3: "width"} if station.dynamic_size else {0: "batch"}
    _compare.export_onnx(
        encoder,
        (torch.zeros(1, station.input_spec.channels, view.height, view.width),),
        path,
        ([IMAGE], [FEATURES]),
        {IMAGE: axes, FEATURES: axes},
    )


class _FlatHead(nn.Module):
    def __init__(self, head: nn.Module, views: int) -> None:
        super().__init__()
        self.head = head
        self.count = views

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(list(xs[: self.count]), list(xs[self.count :]))
        return logits


def _with_residual(station: Station, features: torch.Tensor) -> torch.Tensor:
    """Inspection maps as the runtime feeds them: the residual channels (here zero) appended."""
    if station.residual == "none":
        return features
    n, _, h, w = features.shape
    extra = pixel_residual.CHANNELS[station.residual]
    return torch.cat([features, torch.zeros(n, extra, h, w)], dim=1)


def _export_head(station: Station, encoder: nn.Module, head: nn.Module, path: Path) -> None:
    with torch.inference_mode():
        maps = [encoder(torch.zeros(2, 1, v.height, v.width)) for v in station.views]
    inspections = [v.inspection_input for v in station.views]
    references = [v.reference_input for v in station.views]
    axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n in inspections}
    axes.update({n: {0: "reference_batch"} for n in references})
    axes[LOGITS] = {0: "batch"}
    _compare.export_onnx(
        _FlatHead(head, len(station.views)),
        (*(_with_residual(station, m) for m in maps), *(m[:1] for m in maps)),
        path,
        ([*inspections, *references], [LOGITS]),
        axes,
    )


def _check_onnx(encoder: nn.Module, head: nn.Module, cells: Cells, out: Path) -> float:
    """Largest |torch - onnxruntime| NG margin over a few validation cells, from the images."""
    runtime = ReferenceModel(out)
    runtime.set_reference(cells.reference)
    count = min(8, len(cells.labels))
    images = cells.views[:count]
    ort_logits = runtime.logits(
        *(
            runtime.encode_batch([c[v] for c in images], view)
            for v, view in enumerate(runtime.view_names)
        )
    )
    with torch.inference_mode():
        inspections, references = [], []
        for v, view in enumerate(runtime.view_names):
            pixels, seen = runtime.registered_seen([c[v] for c in images], view)
            x = np.stack([normalise(px, runtime.manifest.normalisation) for px in pixels])
            features = encoder(torch.from_numpy(x))
            if runtime.manifest.residual != "none":
                extra = runtime.residual(pixels, view, features.shape[2], seen)
                features = torch.cat([features, torch.from_numpy(extra)], dim=1)
            inspections.append(features)
            ref = runtime.preprocess([cells.reference[v]], view, register=False)
            references.append(encoder(torch.from_numpy(ref)))
        torch_logits = head(inspections, references).numpy()
    diff = float(np.abs(_compare.ng_margin(torch_logits) - _compare.ng_margin(ort_logits)).max())
    if diff > ONNX_TOLERANCE:
        msg = f"onnxruntime margins differ from torch by {diff:.2e} (tolerance {ONNX_TOLERANCE})"
        raise RuntimeError(msg)
    return diff


def _manifest(
    station: Station,
    out: Path,
    threshold: float,
    training: dict[str, object],
    metrics: dict[str, object],
) -> Manifest:
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    sha = {role: sha256_file(out / name) for role, name in _files().items()}
    view = station.views[0]
    return Manifest(
        name=station.name,
        version=f"0.1.0-{today}",
        kind="reference_compare",
        file=ENCODER_FILE,
        sha256=sha["encoder"],
        input=view_input(station, view).model_copy(update={"name": IMAGE}),
        output=LOGITS,
        normalisation=station.normalisation,
        classes=("OK", "NG"),
        ok_labels=("OK",),
        threshold=threshold,
        training=training,
        metrics=metrics,
        files=_files(),
        sha256s=sha,
        views=station.views,
        feature_output=FEATURES,
        align=station.align,
        residual=station.residual,
    )


def _files() -> dict[str, str]:
    return {"encoder": ENCODER_FILE, "head": HEAD_FILE}


def parse_args(
    name: str, argv: Sequence[str] | None = None, *, view_scale: bool = False
) -> RunConfig:
    parser = argparse.ArgumentParser(
        prog=f"python -m linevision.train.{name}",
        description=f"Train the {name} reference-compare model on dataset folders; write ONNX.",
    )
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="training folders")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--val", type=Path, nargs="*", default=[], help="calibration folders")
    parser.add_argument("--test", type=Path, nargs="*", default=[], help="held-out folders")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="at most this many epochs (default: no cap; the budget and --patience decide)",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="budget before export")
    parser.add_argument(
        "--patience",
        type=int,
        default=DEFAULT_PATIENCE,
        help="stop after this many epochs without a better validation score (0: never)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--ng-weight", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cache", type=Path, default=None, help="folder keeping the frozen stem's features"
    )
    parser.add_argument(
        "--mode",
        choices=("auto", "anomaly", "supervised"),
        default="auto",
        help="supervised: the comparison network on OK and NG cells; anomaly: good cells "
        "only (NG cells only set the threshold); auto (default): anomaly below "
        "linevision.train.mode.MIN_SUPERVISED_NG NG cells",
    )
    parser.add_argument(
        "--tolerance",
        type=int,
        default=None,
        help="anomaly mode: feature cells (8 px) a part may sit off its place and still "
        "match the good cells there (default: the station's)",
    )
    if view_scale:
        parser.add_argument(
            "--view-scale",
            type=int,
            default=1,
            help="enlarge every view this many times (finer features; ~5x the CPU at 2)",
        )
        parser.add_argument(
            "--stride",
            type=int,
            default=8,
            choices=(4, 8),
            help="output stride of the frozen stem's features (4: finer grid, shallower)",
        )
        parser.add_argument(
            "--residual",
            choices=tuple(pixel_residual.CHANNELS),
            default="envelope_edges",
            help="the registered views' pixel residual channels added to the comparison: "
            "envelope_edges (grey levels and slopes; default), envelope (grey levels), "
            "none (the encoder's features alone)",
        )
        parser.add_argument(
            "--no-residual",
            dest="residual",
            action="store_const",
            const="none",
            help="the same as --residual none",
        )
    a = parser.parse_args(argv)
    return RunConfig(
        data=tuple(a.data),
        out=a.out,
        val=tuple(a.val),
        test=tuple(a.test),
        epochs=a.epochs,
        minutes=a.minutes,
        patience=a.patience or None,
        seed=a.seed,
        batch_size=a.batch_size,
        lr=a.lr,
        weight_decay=a.weight_decay,
        ng_weight=a.ng_weight,
        threads=a.threads,
        cache=a.cache,
        view_scale=getattr(a, "view_scale", 1),
        stride=getattr(a, "stride", 8),
        residual=getattr(a, "residual", "none"),  # seal_edge has no such option
        mode=a.mode,
        tolerance=a.tolerance,
    )
