"""Train the blue-film segmentation network (seed 003) on NG frames with masks; ship ONNX.

    python -m linevision.train.film_segment --data DIR --out MODELDIR --minutes 8 \
        [--base models/blue_film] [--val DIR] [--threads 1]
    python -m linevision.train.film_segment --out models/blue_film --adopt MODELDIR

A small U-Net (plain torch) maps a full-resolution BGR crop to a per-pixel defect logit of
the same size: five levels (widths 8, 16, 32, 64, 96; stride-2 convolutions down,
2 x 2 transposed convolutions up, skip connections concatenated), 3 x 3 conv-BN-ReLU
throughout, a 1 x 1 head. Sides must be multiples of 16. It replaces the seed's ResNet50: the
defects are a few pixels to 80 px on a smooth film, and the crops come from the first two
stages, so a net of 0.35 M parameters fits the CPU budget of the line PC.

Training data and the held-out figures: :mod:`linevision.train.film_segment_data` (crops
around every mask component of NG frames and random crops of OK frames). Loss BCE + Dice,
AdamW on a cosine schedule over the time budget.

The ONNX file (opset 18, dynamic batch, height and width) goes into a model folder beside the
anomaly model: ``files["segment"]``/``sha256s["segment"]`` of its manifest, the training
record under ``training["segment"]`` and held-out figures under ``metrics["segment"]``. When
``--out`` has no manifest yet, ``--base`` (a tile_anomaly folder) is copied into it first.
``--adopt`` copies a trained folder's ``segment.onnx`` and its records into another model
folder (e.g. the shipped one) without training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from linevision.inference.film.segment import (
    INPUT_NAME,
    OUTPUT_NAME,
    SEGMENT_FILE,
    SEGMENT_ROLE,
    FilmSegmenter,
)
from linevision.inference.manifest import (
    MANIFEST_NAME,
    Manifest,
    ModelFileError,
    load_manifest,
    sha256_file,
    write_manifest,
)
from linevision.log import configure, get_logger
from linevision.synth.contract import Sample, read_labels
from linevision.train.film_segment_data import (
    EVAL_CROP,
    TRAIN_CROP,
    Regions,
    collect_regions,
    heldout_iou,
    sample_batch,
)
from linevision.train.folder_data import recorded_path

if TYPE_CHECKING:
    from collections.abc import Sequence

WIDTHS: Final = (8, 16, 32, 64, 96)
ONNX_OPSET: Final = 18

log = get_logger(__name__)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SegmentNet(nn.Module):  # type: ignore[misc, unused-ignore]
    """(N, 3, H, W) BGR 0..255 -> (N, 1, H, W) defect logits; H, W multiples of 16."""

    def __init__(self, widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        w = list(widths)
        self.down = nn.ModuleList([nn.Sequential(_conv(3, w[0]), _conv(w[0], w[0]))])
        for cin, cout in itertools.pairwise(w):
            self.down.append(nn.Sequential(_conv(cin, cout, 2), _conv(cout, cout)))
        self.up = nn.ModuleList(
            [
                nn.ConvTranspose2d(cin, cout, 2, stride=2)
                for cin, cout in zip(w[:0:-1], w[-2::-1], strict=True)
            ]
        )
        self.fuse = nn.ModuleList([_conv(2 * c, c) for c in w[-2::-1]])
        self.head = nn.Conv2d(w[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x / 127.5 - 1.0
        skips = []
        for stage in self.down:
            y = stage(y)
            skips.append(y)
        for up, fuse, skip in zip(self.up, self.fuse, skips[-2::-1], strict=True):
            y = fuse(torch.cat([up(y), skip], dim=1))
        out: torch.Tensor = self.head(y)
        return out


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE + soft Dice over the whole batch (so defect-free crops count, too)."""
    bce = functional.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    dice = (2.0 * (prob * target).sum() + 1.0) / (prob.sum() + target.sum() + 1.0)
    return bce + (1.0 - dice)


@dataclass(frozen=True)
class SegConfig:
    minutes: float = 8.0
    epochs: int | None = None
    seed: int = 0
    batch_size: int = 12
    crop: int = TRAIN_CROP
    lr: float = 3e-3
    threads: int = 1


@dataclass
class SegHistory:
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def train(regions: Regions, config: SegConfig) -> tuple[SegmentNet, SegHistory]:
    """Fit the net until ``config.minutes`` (or ``config.epochs`` passes over the regions)."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = SegmentNet()
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    steps_per_epoch = max(len(regions) // config.batch_size, 1)
    max_steps = None if config.epochs is None else config.epochs * steps_per_epoch
    budget = config.minutes * 60.0
    history = SegHistory()
    start = time.monotonic()
    net.train()
    window: list[float] = []
    while max_steps is None or history.steps < max_steps:
        elapsed = time.monotonic() - start
        if elapsed >= budget:
            break
        progress = elapsed / budget
        if max_steps is not None:
            progress = max(progress, history.steps / max_steps)
        for group in optimiser.param_groups:
            group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        x, y = sample_batch(regions, config.batch_size, config.crop, rng)
        loss = seg_loss(net(x), y)
        optimiser.zero_grad()
        torch.autograd.backward(loss)
        optimiser.step()
        history.steps += 1
        window.append(float(loss.detach()))
        if len(window) == steps_per_epoch:
            history.losses.append(float(np.mean(window)))
            log.info("film_segment_epoch", epoch=len(history.losses), loss=round(window[-1], 4))
            window = []
    if window:
        history.losses.append(float(np.mean(window)))
    history.seconds = time.monotonic() - start
    return net.eval(), history


def export(net: SegmentNet, path: Path, side: int = EVAL_CROP) -> None:
    """ONNX opset 18; batch, height and width dynamic."""
    dummy = torch.zeros(1, 3, side, side)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            net,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def register(model_dir: Path, training: dict[str, object], metrics: dict[str, object]) -> Manifest:
    """List ``model_dir/segment.onnx`` in the folder's manifest (files, sha256s, records)."""
    path = model_dir / MANIFEST_NAME
    manifest = Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    digest = sha256_file(model_dir / SEGMENT_FILE)
    updated = manifest.model_copy(
        update={
            "files": {**manifest.files, SEGMENT_ROLE: SEGMENT_FILE},
            "sha256s": {**manifest.sha256s, SEGMENT_ROLE: digest},
            "training": {**manifest.training, SEGMENT_ROLE: training},
            "metrics": {**manifest.metrics, SEGMENT_ROLE: metrics},
        }
    )
    write_manifest(model_dir, Manifest.model_validate(updated.model_dump()))
    return updated


def copy_base(base: Path, out: Path) -> None:
    """Copy a tile_anomaly folder's manifest and anomaly model into ``out`` (no segment)."""
    manifest = Manifest.model_validate(
        json.loads((base / MANIFEST_NAME).read_text(encoding="utf-8"))
    )
    if manifest.kind != "tile_anomaly":
        msg = f"{base}: kind {manifest.kind!r}, expected 'tile_anomaly'"
        raise ModelFileError(msg)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(base / manifest.file, out / manifest.file)
    kept = {k: v for k, v in manifest.files.items() if k != SEGMENT_ROLE}
    sums = {k: v for k, v in manifest.sha256s.items() if k != SEGMENT_ROLE}
    for name in kept.values():
        shutil.copy2(base / name, out / name)
    write_manifest(out, manifest.model_copy(update={"files": kept, "sha256s": sums}))


def adopt(source: Path, out: Path) -> Manifest:
    """Copy ``source``'s checked segment.onnx into the model folder ``out`` and list it there.

    The training record and figures travel with it; ``out``'s anomaly model is kept.
    """
    manifest, _ = load_manifest(source)
    if SEGMENT_ROLE not in manifest.files:
        msg = f"{source}: the manifest lists no {SEGMENT_ROLE!r} file"
        raise ModelFileError(msg)
    load_manifest(out)
    shutil.copy2(source / manifest.files[SEGMENT_ROLE], out / SEGMENT_FILE)
    training, metrics = manifest.training.get(SEGMENT_ROLE), manifest.metrics.get(SEGMENT_ROLE)
    return register(
        out,
        dict(training) if isinstance(training, dict) else {},
        dict(metrics) if isinstance(metrics, dict) else {},
    )


def run(  # noqa: PLR0913  (one argument per command-line option)
    data: Path,
    out: Path,
    config: SegConfig,
    *,
    base: Path | None = None,
    val: Path | None = None,
    samples: Sequence[Sample] | None = None,
) -> Manifest:
    """Train on ``data`` (or the given samples), export into ``out``, measure, register."""
    t0 = time.monotonic()
    if not (out / MANIFEST_NAME).is_file():
        if base is None:
            msg = f"{out} has no {MANIFEST_NAME}; give --base, a blue_film anomaly model folder"
            raise ModelFileError(msg)
        copy_base(base, out)
    rows = list(samples) if samples is not None else read_labels(data, "blue_film")
    regions = collect_regions(rows, config.seed)
    log.info(
        "film_segment_data",
        regions=len(regions),
        with_defect=int(regions.defect.sum()),
        s=round(time.monotonic() - t0, 1),
    )
    net, history = train(regions, config)
    export(net, out / SEGMENT_FILE)
    training: dict[str, object] = {
        "data": recorded_path(data),
        "seed": config.seed,
        "regions": len(regions),
        "defect_regions": int(regions.defect.sum()),
        "crop": config.crop,
        "batch_size": config.batch_size,
        "steps": history.steps,
        "final_loss": round(history.losses[-1], 5) if history.losses else None,
        "seconds": round(history.seconds, 1),
        "threads": config.threads,
        "parameters": sum(p.numel() for p in net.parameters()),
    }
    register(out, training, {})
    metrics: dict[str, object] = {}
    if val is not None:
        segmenter = FilmSegmenter(out, threads=config.threads)
        figures = heldout_iou(segmenter, read_labels(val, "blue_film"), config.seed + 1)
        metrics = {"val": recorded_path(val), "crop": EVAL_CROP, **figures.as_json()}
        log.info("film_segment_heldout", **metrics)
    manifest = register(out, training, metrics)
    log.info("film_segment_shipped", out=str(out), steps=history.steps)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="blue_film folder with masks")
    parser.add_argument("--out", type=Path, required=True, help="model folder to add it to")
    parser.add_argument("--base", type=Path, default=None, help="anomaly folder to start from")
    parser.add_argument("--val", type=Path, default=None, help="held-out blue_film folder")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--adopt",
        type=Path,
        default=None,
        help="no training: copy this folder's segment.onnx (and its records) into --out",
    )
    args = parser.parse_args(argv)
    configure()
    if args.adopt is not None:
        adopt(args.adopt, args.out)
        return 0
    if args.data is None:
        parser.error("--data is required unless --adopt is given")
    config = SegConfig(
        minutes=args.minutes,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    run(args.data, args.out, config, base=args.base, val=args.val)
    return 0


if __name__ == "__main__":
    sys.exit(main())
