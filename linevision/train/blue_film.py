"""Train the blue-film anomaly model on good generated tiles and ship it as ONNX (seed 004).

    python -m linevision.train.blue_film --out models/blue_film --seed 0 --minutes 6

Good 1024 x 1024 tiles come from :mod:`linevision.synth.blue_film` (training and calibration
from different seeds). Each is downscaled by ``DOWNSCALE`` for the second stage. The frozen
pretrained teacher's stride-8 features are computed once and standardised (mean per channel,
one scale for all channels, so that nearly constant channels do not turn noise into
targets); the student learns them on whole tiles, borders included, so that the tile's edges
are not anomalies (loss MSE + 0.5 * (1 - cosine); learning rate on a cosine schedule over
the time budget). Both go into one ONNX graph whose output is the discrepancy map.
The screen's threshold and the anomaly threshold are calibrated on good calibration tiles only,
scored with the exported ONNX file and the runtime's own code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
import torch

from linevision.inference.blue_film import FilmInspector, screen_score
from linevision.inference.manifest import (
    MANIFEST_NAME,
    InputSpec,
    Manifest,
    Normalisation,
    ScreenSpec,
    TileAnomalySpec,
    sha256_file,
    write_manifest,
)
from linevision.log import configure, get_logger
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
SCREEN_KERNEL: Final = 31
SCREEN_SMOOTH: Final = 3
SCREEN_MARGIN: Final = 1.5
SCORE_MARGIN: Final = 0.25
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
    while time.monotonic() - start < budget:
        losses = []
        for _ in range(steps_per_epoch):
            elapsed = time.monotonic() - start
            if elapsed >= budget:
                break
            for group in optimiser.param_groups:
                group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * elapsed / budget))
            idx = rng.choice(len(images), config.batch_size, replace=False)
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
    dummy = torch.zeros(1, 3, side, side)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            graph,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def calibrate_screen(tiles: list[U8Images]) -> tuple[ScreenSpec, list[float]]:
    """Threshold = ``SCREEN_MARGIN`` x the largest good-tile screen score."""
    probe = ScreenSpec(kernel=SCREEN_KERNEL, smooth=SCREEN_SMOOTH, threshold=1.0)
    scores = [screen_score(t, probe) for t in tiles]
    threshold = SCREEN_MARGIN * max(scores)
    return ScreenSpec(kernel=SCREEN_KERNEL, smooth=SCREEN_SMOOTH, threshold=threshold), scores


def score_threshold(good: list[float]) -> float:
    """The largest good score plus ``SCORE_MARGIN`` of its distance to the median.

    Set from good tiles only, above every one of them: with only good data it never flags
    all tiles, and it is fixed in the manifest, not adapted at run time.

    >>> score_threshold([1.0, 2.0, 3.0])
    3.25
    """
    top, median = max(good), float(np.median(good))
    return top + SCORE_MARGIN * (top - median)


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


def run(config: TrainConfig) -> Manifest:
    torch.set_num_threads(config.threads)
    config.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    train = np.stack([downscale(t) for t in good_tiles(config.seed, config.train_tiles)])
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
    training: dict[str, object] = {
        "seed": config.seed,
        "train_tiles": config.train_tiles,
        "epochs": len(history),
        "final_loss": round(history[-1], 5) if history else None,
        "seconds": round(time.monotonic() - t0, 1),
        "teacher": "efficientnet-lite0 ImageNet, stride 8, frozen",
    }
    return calibrate(config, training)


def calibrate(config: TrainConfig, training: dict[str, object]) -> Manifest:
    """Set both thresholds on good calibration tiles with the exported graph; write manifest."""
    onnx_path = config.out / MODEL_FILE
    side = TILE // DOWNSCALE
    seed = config.seed + CALIBRATION_SEED_OFFSET
    calibration = good_tiles(seed, config.calibration_tiles)
    screen, screen_scores = calibrate_screen(calibration)
    write_manifest(config.out, _manifest(screen, 1.0, side, sha256_file(onnx_path)))
    inspector = FilmInspector(config.out, TILE, TILE, threads=config.threads)
    good = [float(inspector.score_tile(t).max()) for t in calibration]
    threshold = score_threshold(good)
    manifest = _manifest(screen, threshold, side, sha256_file(onnx_path)).model_copy(
        update={
            "training": {
                **training,
                "calibration_tiles": config.calibration_tiles,
                "calibration_seed": seed,
            },
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/blue_film"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-tiles", type=int, default=240)
    parser.add_argument("--calibration-tiles", type=int, default=160)
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument(
        "--calibrate-only",
        action="store_true",
        help="keep OUT/anomaly.onnx and its training record; set the thresholds again",
    )
    args = parser.parse_args(argv)
    configure()
    config = TrainConfig(
        out=args.out,
        seed=args.seed,
        train_tiles=args.train_tiles,
        calibration_tiles=args.calibration_tiles,
        minutes=args.minutes,
    )
    if args.calibrate_only:
        previous = json.loads((args.out / MANIFEST_NAME).read_text(encoding="utf-8"))
        calibrate(config, dict(previous.get("training", {})))
    else:
        run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
