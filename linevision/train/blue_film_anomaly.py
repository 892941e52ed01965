"""The blue-film anomaly model (seed 004): train the student, export ONNX, set the thresholds.

Each good tile is downscaled by ``DOWNSCALE`` for the second stage. The frozen pretrained
teacher's stride-8 features are computed once and standardised (mean per channel, one scale
for all channels, so that nearly constant channels do not turn noise into targets); the
student learns them on whole tiles, borders included, so that the tile's edges are not
anomalies (loss MSE + 0.5 * (1 - cosine); learning rate on a cosine schedule over the time
budget). Both go into one ONNX graph whose output is the discrepancy map. The screen's
threshold and the anomaly threshold are calibrated on good calibration tiles only, scored
with the exported ONNX file and the runtime's own code. Where the tiles come from is
:mod:`linevision.train.blue_film`'s business.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
import torch

from linevision.inference.film.inspector import FilmInspector
from linevision.inference.film.screen import calibrate_local_deviation
from linevision.inference.manifest import (
    InputSpec,
    Manifest,
    Normalisation,
    ScreenSpec,
    TileAnomalySpec,
    sha256_file,
    write_manifest,
)
from linevision.log import get_logger
from linevision.synth import blue_film as synth
from linevision.train.blue_film_nets import (
    STRIDE,
    AnomalyGraph,
    Student,
    Teacher,
    distillation_loss,
)

NAME: Final = "blue_film"
MODEL_FILE: Final = "anomaly.onnx"
INPUT_NAME: Final = "tile"
OUTPUT_NAME: Final = "anomaly_map"
TILE: Final = synth.TILE
DOWNSCALE: Final = 2
EDGE_CELLS: Final = 1
OVERLAP: Final = 2 * EDGE_CELLS * STRIDE * DOWNSCALE
SCREEN_KERNEL: Final = 9
SCREEN_SMOOTH: Final = 1
SCREEN_COLUMN: Final = 127
SCREEN_SCALE: Final = 2
SCREEN_MARGIN: Final = 1.5
SCORE_MARGIN: Final = 0.25
MIN_SPREAD: Final = 0.1
FEW_CALIBRATION_TILES: Final = 20
CALIBRATION_SEED_OFFSET: Final = 1000
ONNX_OPSET: Final = 18

U8Images = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]

log = get_logger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    out: Path
    seed: int = 0
    train_tiles: int = 240
    calibration_tiles: int = 160
    minutes: float = 6.0
    batch_size: int = 3
    lr: float = 2e-3
    threads: int = 2
    epochs: int | None = None


def good_tiles(seed: int, n: int) -> list[U8Images]:
    """``n`` good full-resolution tiles, each from its own generator ``(seed, i)``."""
    return [synth.generate_tile(np.random.default_rng([seed, i])).image for i in range(n)]


def downscale(tile: U8Images, factor: int = DOWNSCALE) -> U8Images:
    size = (tile.shape[1] // factor, tile.shape[0] // factor)
    return np.asarray(cv2.resize(tile, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def to_tensor(images: U8Images) -> torch.Tensor:
    """(N, H, W, 3) uint8 BGR -> (N, 3, H, W) float32 0..255, the graphs' input."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()


def teacher_features(teacher: Teacher, images: U8Images, batch: int = 8) -> torch.Tensor:
    with torch.inference_mode():
        out = [teacher.raw(to_tensor(images[i : i + batch])) for i in range(0, len(images), batch)]
    return torch.cat(out)


def train_student(
    images: U8Images, targets: torch.Tensor, config: TrainConfig
) -> tuple[Student, list[float]]:
    """Fit the student to the standardised teacher maps until the time budget runs out."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    student = Student()
    optimiser = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=1e-4)
    start = time.monotonic()
    budget = config.minutes * 60.0
    steps_per_epoch = max(len(images) // config.batch_size, 1)
    history: list[float] = []
    student.train()
    while time.monotonic() - start < budget and (
        config.epochs is None or len(history) < config.epochs
    ):
        losses = []
        for _ in range(steps_per_epoch):
            elapsed = time.monotonic() - start
            if elapsed >= budget:
                break
            for group in optimiser.param_groups:
                group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * elapsed / budget))
            idx = rng.choice(len(images), min(config.batch_size, len(images)), replace=False)
            loss = distillation_loss(student(to_tensor(images[idx])), targets[idx])
            optimiser.zero_grad()
            torch.autograd.backward(loss)
            optimiser.step()
            losses.append(float(loss.detach()))
        if not losses:
            break
        history.append(float(np.mean(losses)))
        log.info("blue_film_epoch", epoch=len(history), loss=round(history[-1], 4))
    return student.eval(), history


def export(graph: AnomalyGraph, path: Path, side: int) -> None:
    """ONNX opset 18; batch, height and width dynamic (the runtime feeds windows and tiles)."""
    dummy = torch.zeros(1, 3, side, side)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            graph,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                OUTPUT_NAME: {0: "batch", 2: "map_height", 3: "map_width"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def calibrate_screen(tiles: list[U8Images]) -> tuple[ScreenSpec, list[float]]:
    """The ``local_deviation`` screen set on good tiles: each channel's spread, and threshold
    ``SCREEN_MARGIN`` x the largest good-tile signal
    (:func:`linevision.inference.film.screen.calibrate_local_deviation`)."""
    return calibrate_local_deviation(
        tiles,
        kernel=SCREEN_KERNEL,
        smooth=SCREEN_SMOOTH,
        column=SCREEN_COLUMN,
        scale=SCREEN_SCALE,
        margin=SCREEN_MARGIN,
    )


def score_threshold(good: list[float]) -> float:
    """The largest good score plus ``SCORE_MARGIN`` of its distance to the median.

    Set from good tiles only, above every one of them: with only good data it never flags
    all tiles, and it is fixed in the manifest, not adapted at run time. The distance counts
    as at least ``MIN_SPREAD`` of the largest score, so that a few calibration tiles (one
    frame of one tile) still leave a margin.

    >>> score_threshold([1.0, 2.0, 3.0])
    3.25
    >>> score_threshold([4.0])
    4.1
    """
    top, median = max(good), float(np.median(good))
    return top + SCORE_MARGIN * max(top - median, MIN_SPREAD * top)


def _manifest(screen: ScreenSpec, threshold: float, side: int, digest: str) -> Manifest:
    return Manifest(
        name=NAME,
        version=dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S"),
        kind="tile_anomaly",
        file=MODEL_FILE,
        sha256=digest,
        input=InputSpec(
            name=INPUT_NAME, channels=3, height=side, width=side, color="bgr", resize="area"
        ),
        output=OUTPUT_NAME,
        normalisation=Normalisation(scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        classes=("OK", "NG"),
        ok_labels=("OK",),
        tile_anomaly=TileAnomalySpec(
            tile=TILE,
            overlap=OVERLAP,
            edge_cells=EDGE_CELLS,
            downscale=DOWNSCALE,
            map_stride=STRIDE * DOWNSCALE,
            score_threshold=threshold,
            screen=screen,
        ),
    )


def train_anomaly(config: TrainConfig, train: U8Images, t0: float) -> dict[str, object]:
    """Teacher features, student training and export of ``anomaly.onnx``; the training record."""
    torch.set_num_threads(config.threads)
    config.out.mkdir(parents=True, exist_ok=True)
    teacher = Teacher()
    raw = teacher_features(teacher, train)
    teacher.set_standardisation(
        raw.mean(dim=(0, 2, 3)), raw.std(dim=(0, 2, 3)).pow(2).mean().sqrt()
    )
    targets = (raw - teacher.mean) / teacher.std
    log.info("blue_film_teacher_done", tiles=len(train), s=round(time.monotonic() - t0, 1))
    student, history = train_student(train, targets, config)
    side = TILE // DOWNSCALE
    onnx_path = config.out / MODEL_FILE
    export(AnomalyGraph(teacher, student).eval(), onnx_path, side)
    return {
        "seed": config.seed,
        "train_tiles": len(train),
        "epochs": len(history),
        "final_loss": round(history[-1], 5) if history else None,
        "seconds": round(time.monotonic() - t0, 1),
        "teacher": "efficientnet-lite0 ImageNet, stride 8, frozen",
    }


def calibrate(
    config: TrainConfig,
    training: dict[str, object],
    tiles: list[U8Images] | None = None,
    source: dict[str, object] | None = None,
) -> Manifest:
    """Set both thresholds on good calibration tiles with the exported graph; write manifest.

    ``tiles`` are full-resolution good tiles (held-out frames' tiles); without them, generated
    good tiles of the calibration seed. ``source`` describes where they came from.
    """
    onnx_path = config.out / MODEL_FILE
    side = TILE // DOWNSCALE
    seed = config.seed + CALIBRATION_SEED_OFFSET
    calibration = good_tiles(seed, config.calibration_tiles) if tiles is None else tiles
    if source is None:
        source = {"calibration_tiles": len(calibration), "calibration_seed": seed}
    if len(calibration) < FEW_CALIBRATION_TILES:
        log.warning("blue_film_few_calibration_tiles", tiles=len(calibration))
    screen, screen_scores = calibrate_screen(calibration)
    write_manifest(config.out, _manifest(screen, 1.0, side, sha256_file(onnx_path)))
    inspector = FilmInspector(config.out, TILE, TILE, threads=config.threads)
    good = [float(inspector.score_tile(t).max()) for t in calibration]
    threshold = score_threshold(good)
    manifest = _manifest(screen, threshold, side, sha256_file(onnx_path)).model_copy(
        update={
            "training": {**training, **source},
            "metrics": {
                "good_screen_max": max(screen_scores),
                "good_score_max": round(max(good), 5),
                "good_score_median": round(float(np.median(good)), 5),
            },
        }
    )
    write_manifest(config.out, manifest)
    log.info("blue_film_shipped", out=str(config.out), threshold=round(threshold, 5))
    return manifest
