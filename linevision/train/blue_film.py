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
time budget. The anomaly model's training, export and calibration are in
:mod:`linevision.train.blue_film_anomaly`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from linevision.inference.manifest import MANIFEST_NAME, Manifest, sha256_file
from linevision.log import configure
from linevision.synth.contract import DataError, Sample, read_labels
from linevision.tiling import plan_tiles
from linevision.train.blue_film_anomaly import (
    NAME,
    OVERLAP,
    TILE,
    TrainConfig,
    calibrate,
    downscale,
    good_tiles,
    train_anomaly,
)
from linevision.train.folder_data import read_film, recorded_path

if TYPE_CHECKING:
    from collections.abc import Sequence

HOLDOUT: Final = 0.25
SEGMENT_SHARE: Final = 0.5

U8Images = npt.NDArray[np.uint8]


def run(config: TrainConfig) -> Manifest:
    """Train on generated good tiles, calibrate on generated good tiles of another seed."""
    t0 = time.monotonic()
    train = np.stack([downscale(t) for t in good_tiles(config.seed, config.train_tiles)])
    training = train_anomaly(config, train, t0)
    return calibrate(config, training)


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
        "data": recorded_path(data),
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
