"""Train the blue-film anomaly model on good film and ship it as ONNX (seeds 004 and 003).

    python -m linevision.train.blue_film --out models/blue_film --seed 0 --minutes 6
    linevision train --station blue_film --data DIR --out MODELDIR [--minutes M] [--epochs N]

Without ``--data``, good 1024 x 1024 tiles come from :mod:`linevision.synth.blue_film`
(training and calibration from different seeds). With ``--data DIR`` (the folder contract,
``image,label,mask``), the OK frames are split by frame: a held-out share (``--holdout``,
at least one frame) sets the thresholds, the rest give the training tiles (``TILE`` x
``TILE`` windows of the frames, spread over every frame). NG frames never train or calibrate
the anomaly model; when some have masks, they train the segmentation network
(:mod:`linevision.train.film_segment`, ``segment.onnx``) into the same folder, sharing the
time budget. Each tile is downscaled by ``DOWNSCALE`` for the second stage. The frozen
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

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
from linevision.synth.contract import DataError, Sample, read_labels
from linevision.tiling import plan_tiles
from linevision.train.blue_film_nets import (
    STRIDE,
    AnomalyGraph,
    Student,
    Teacher,
    distillation_loss,
)
from linevision.train.folder_data import read_film

if TYPE_CHECKING:
    from collections.abc import Sequence

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
MIN_SPREAD: Final = 0.1
FEW_CALIBRATION_TILES: Final = 20
CALIBRATION_SEED_OFFSET: Final = 1000
HOLDOUT: Final = 0.25
SEGMENT_SHARE: Final = 0.5
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
    """Threshold = ``SCREEN_MARGIN`` x the largest good-tile screen score."""
    probe = ScreenSpec(kernel=SCREEN_KERNEL, smooth=SCREEN_SMOOTH, threshold=1.0)
    scores = [screen_score(t, probe) for t in tiles]
    threshold = SCREEN_MARGIN * max(scores)
    return ScreenSpec(kernel=SCREEN_KERNEL, smooth=SCREEN_SMOOTH, threshold=threshold), scores


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


def run(config: TrainConfig) -> Manifest:
    """Train on generated good tiles, calibrate on generated good tiles of another seed."""
    t0 = time.monotonic()
    train = np.stack([downscale(t) for t in good_tiles(config.seed, config.train_tiles)])
    training = train_anomaly(config, train, t0)
    return calibrate(config, training)


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


@dataclass(frozen=True)
class FolderSplit:
    """A blue_film folder: OK frames to train on, OK frames held out, NG frames with masks."""

    train: tuple[Sample, ...]
    held_out: tuple[Sample, ...]
    masked: tuple[Sample, ...]


def split_folder(data: Path, seed: int, holdout: float = HOLDOUT) -> FolderSplit:
    """Read ``data`` and hold out ``holdout`` of its OK frames (at least one) for calibration."""
    samples = read_labels(data, NAME)
    ok = [s for s in samples if s.label == "OK"]
    if len(ok) < 2:
        msg = (
            f"{data / 'labels.csv'}: {len(ok)} OK frame(s); the anomaly model needs at least 2, "
            "one to train on and one held out to set the thresholds"
        )
        raise DataError(msg)
    if not 0.0 < holdout < 1.0:
        msg = f"held-out share must lie in (0, 1), got {holdout}"
        raise ValueError(msg)
    order = np.random.default_rng(seed).permutation(len(ok))
    n_held = min(max(round(len(ok) * holdout), 1), len(ok) - 1)
    held = tuple(ok[i] for i in sorted(order[:n_held]))
    train = tuple(ok[i] for i in sorted(order[n_held:]))
    masked = tuple(s for s in samples if s.label == "NG" and s.mask is not None)
    return FolderSplit(train, held, masked)


def _frame(sample: Sample) -> U8Images:
    frame, _ = read_film(sample)
    if min(frame.shape[:2]) < TILE:
        msg = f"{sample.path}: frame {frame.shape[1]} x {frame.shape[0]} < {TILE} px on a side"
        raise DataError(msg)
    return frame


def frame_tiles(samples: tuple[Sample, ...], n: int, seed: int) -> list[U8Images]:
    """Up to ``n`` full-resolution ``TILE`` x ``TILE`` training tiles spread over the frames.

    Each frame gives an equal share: its grid tiles (no overlap) in random order, then, when
    the share is larger and the frame larger than a tile, windows at random offsets.
    """
    rng = np.random.default_rng(seed)
    share = -(-n // len(samples))
    tiles: list[U8Images] = []
    for sample in samples:
        frame = _frame(sample)
        height, width = frame.shape[:2]
        grid = [(t.y0, t.x0) for t in plan_tiles(height, width, TILE, 0)]
        picked = [grid[i] for i in rng.permutation(len(grid))[:share]]
        if len(picked) < share and (height, width) != (TILE, TILE):
            picked += [
                (int(rng.integers(0, height - TILE + 1)), int(rng.integers(0, width - TILE + 1)))
                for _ in range(share - len(picked))
            ]
        tiles += [frame[y : y + TILE, x : x + TILE].copy() for y, x in picked]
    return [tiles[i] for i in sorted(rng.permutation(len(tiles))[:n])]


def held_out_tiles(samples: tuple[Sample, ...], n: int, seed: int) -> list[U8Images]:
    """The runtime's tiles (``TILE``, ``OVERLAP``) of the held-out frames; ``n`` at random."""
    tiles: list[U8Images] = []
    for sample in samples:
        frame = _frame(sample)
        plan = plan_tiles(frame.shape[0], frame.shape[1], TILE, OVERLAP)
        tiles += [frame[t.y0 : t.y1, t.x0 : t.x1].copy() for t in plan]
    if len(tiles) <= n:
        return tiles
    keep = np.random.default_rng(seed).permutation(len(tiles))[:n]
    return [tiles[i] for i in sorted(keep)]


def _folder_record(data: Path, split: FolderSplit, tiles: int) -> dict[str, object]:
    return {
        "data": str(data),
        "labels_sha256": sha256_file(data / "labels.csv"),
        "train_frames": len(split.train),
        "calibration_frames": len(split.held_out),
        "calibration_tiles": tiles,
        "calibration": "held-out OK frames, the runtime's tiles",
    }


def run_folder(  # noqa: PLR0913  (one argument per command-line option)
    config: TrainConfig,
    data: Path,
    *,
    holdout: float = HOLDOUT,
    segment_minutes: float | None = None,
    val: Path | None = None,
    calibrate_only: bool = False,
) -> Manifest:
    """Train (or only calibrate) on a folder; then the segmentation network if it has masks."""
    t0 = time.monotonic()
    split = split_folder(data, config.seed, holdout)
    masks = bool(split.masked) and not calibrate_only
    anomaly_minutes = config.minutes
    if masks and segment_minutes is None:
        segment_minutes = config.minutes * SEGMENT_SHARE
        anomaly_minutes = config.minutes - segment_minutes
    anomaly_config = replace(config, minutes=anomaly_minutes)
    if calibrate_only:
        previous = json.loads((config.out / MANIFEST_NAME).read_text(encoding="utf-8"))
        training = dict(previous.get("training", {}))
        training.pop("segment", None)
    else:
        tiles = frame_tiles(split.train, config.train_tiles, config.seed)
        train = np.stack([downscale(t) for t in tiles])
        del tiles
        training = train_anomaly(anomaly_config, train, t0)
    calibration = held_out_tiles(split.held_out, config.calibration_tiles, config.seed)
    source = _folder_record(data, split, len(calibration))
    manifest = calibrate(anomaly_config, training, calibration, source)
    if calibrate_only:
        return _keep_segment(config.out, previous) or manifest
    if not masks:
        return manifest
    from linevision.train import film_segment  # noqa: PLC0415

    seg_config = film_segment.SegConfig(
        minutes=segment_minutes if segment_minutes is not None else config.minutes,
        epochs=config.epochs,
        seed=config.seed,
        threads=config.threads,
    )
    samples = (*split.masked, *split.train)
    return film_segment.run(data, config.out, seg_config, val=val, samples=samples)


def _keep_segment(out: Path, previous: dict[str, object]) -> Manifest | None:
    """List the previous manifest's segmentation network again, if its file is unchanged."""
    from linevision.train import film_segment  # noqa: PLC0415

    files, sums = previous.get("files"), previous.get("sha256s")
    if not isinstance(files, dict) or not isinstance(sums, dict) or "segment" not in files:
        return None
    if sha256_file(out / str(files["segment"])) != sums.get("segment"):
        return None
    training, metrics = previous.get("training"), previous.get("metrics")
    seg_training = training.get("segment", {}) if isinstance(training, dict) else {}
    seg_metrics = metrics.get("segment", {}) if isinstance(metrics, dict) else {}
    return film_segment.register(out, dict(seg_training), dict(seg_metrics))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="blue_film folder (default: generated tiles)"
    )
    parser.add_argument("--out", type=Path, default=Path("models/blue_film"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-tiles", type=int, default=240)
    parser.add_argument("--calibration-tiles", type=int, default=160)
    parser.add_argument("--minutes", type=float, default=6.0, help="training time budget")
    parser.add_argument("--epochs", type=int, default=None, help="at most this many epochs")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument(
        "--holdout", type=float, default=HOLDOUT, help="share of OK frames held out (--data)"
    )
    parser.add_argument(
        "--segment-minutes",
        type=float,
        default=None,
        help="segmentation network's budget (--data with masks; default half of --minutes)",
    )
    parser.add_argument("--val", type=Path, default=None, help="held-out folder with masks")
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
        threads=args.threads,
        epochs=args.epochs,
    )
    if args.data is not None:
        run_folder(
            config,
            args.data,
            holdout=args.holdout,
            segment_minutes=args.segment_minutes,
            val=args.val,
            calibrate_only=args.calibrate_only,
        )
    elif args.calibrate_only:
        previous = json.loads((args.out / MANIFEST_NAME).read_text(encoding="utf-8"))
        training = dict(previous.get("training", {}))
        training.pop("segment", None)
        calibrate(config, training)
        _keep_segment(args.out, previous)
    else:
        run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
