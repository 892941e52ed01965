"""Train the pole-piece burr classifier on generated crops and ship it as ONNX (seed 002).

    python -m linevision.train.pole_piece --out models/pole_piece --seed 0 --epochs 30 --minutes 11

Training and validation crops come from :mod:`linevision.synth.pole_piece` with different
seeds. The network is a plain CNN (six conv-BN-ReLU blocks, five of them stride 2, global
average pool, linear) sized for about a millisecond per crop on one CPU thread. The epoch
with the best validation accuracy is exported; the metrics written to the manifest are
measured on the exported ONNX file with onnxruntime and the manifest's preprocessing.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional

from linevision.inference.manifest import (
    InputSpec,
    Manifest,
    Normalisation,
    sha256_file,
    write_manifest,
)
from linevision.log import configure, get_logger
from linevision.synth import pole_piece as synth

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

NAME: Final = "pole_piece"
MODEL_FILE: Final = "model.onnx"
INPUT_NAME: Final = "image"
OUTPUT_NAME: Final = "logits"
SCALE: Final = 1.0 / 255.0
MEAN: Final = 0.5
STD: Final = 0.25
WIDTHS: Final = (16, 32, 48, 64, 96, 128)
STRIDES: Final = (2, 2, 2, 2, 2, 1)
OK_LABELS: Final = ("Normal",)
VAL_SEED_OFFSET: Final = 1000
ONNX_OPSET: Final = 18
ONNX_TOLERANCE: Final = 1e-4

U8Images = npt.NDArray[np.uint8]
Labels = npt.NDArray[np.int64]
F32Array = npt.NDArray[np.float32]

log = get_logger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    out: Path
    seed: int = 0
    epochs: int = 30
    minutes: float = 11.0
    train_per_class: int = 1000
    val_per_class: int = 200
    batch_size: int = 32
    lr: float = 2e-3
    threads: int = 2


@dataclass
class TrainResult:
    model: nn.Sequential
    epochs_run: int
    best_epoch: int
    best_val_accuracy: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def build_model(num_classes: int = len(synth.CLASSES)) -> nn.Sequential:
    """Conv-BN-ReLU blocks (3x3, stride 2 except the last), global average pool, linear."""
    layers: list[nn.Module] = []
    channels = 1
    for width, stride in zip(WIDTHS, STRIDES, strict=True):
        layers += [
            nn.Conv2d(channels, width, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def preprocess(images: U8Images) -> F32Array:
    """(N, H, W) uint8 -> (N, 1, H, W) float32 = (pixel * SCALE - MEAN) / STD."""
    x = images[:, None].astype(np.float32) * np.float32(SCALE)
    return np.asarray((x - np.float32(MEAN)) / np.float32(STD), dtype=np.float32)


def _dihedral(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The same random rotation by a multiple of 90 degrees and flip for a whole batch."""
    x = torch.rot90(x, int(rng.integers(0, 4)), dims=(2, 3))
    if rng.random() < 0.5:
        x = torch.flip(x, dims=(3,))
    return x


def _batches(n: int, size: int, rng: np.random.Generator) -> Iterator[npt.NDArray[np.int64]]:
    order = rng.permutation(n)
    for start in range(0, n - size + 1, size):
        yield order[start : start + size]


def torch_logits(model: nn.Module, images: U8Images, batch: int = 100) -> F32Array:
    model.eval()
    out: list[F32Array] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(preprocess(images[start : start + batch]))
            logits: torch.Tensor = model(x)
            out.append(logits.numpy().astype(np.float32))
    return np.concatenate(out)


def _session(path: Path, threads: int = 1) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session: Any, images: U8Images, batch: int = 50) -> F32Array:
    out = [
        np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: preprocess(images[i : i + batch])})[0])
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(out).astype(np.float32)


def onnx_latency_ms(path: Path, image: U8Images, runs: int = 300) -> dict[str, float]:
    """Median, 90th percentile and minimum of a batch-1 run on one thread, in milliseconds."""
    session = _session(path, threads=1)
    x = preprocess(image[None])
    for _ in range(30):
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
        times[i] = time.perf_counter() - t0
    return {
        "median": round(float(np.median(times)) * 1e3, 3),
        "p90": round(float(np.percentile(times, 90)) * 1e3, 3),
        "min": round(float(times.min()) * 1e3, 3),
    }


def classification_metrics(
    labels: Labels, predicted: Labels, classes: Sequence[str] = synth.CLASSES
) -> dict[str, object]:
    """Accuracy, per-class precision/recall/F1, macro F1 and the confusion matrix (rows: true)."""
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class: dict[str, dict[str, float | int]] = {}
    f1s: list[float] = []
    for i, name in enumerate(classes):
        tp = float(confusion[i, i])
        precision = tp / max(float(confusion[:, i].sum()), 1.0)
        recall = tp / max(float(confusion[i, :].sum()), 1.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        f1s.append(f1)
        per_class[name] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": int(confusion[i, :].sum()),
        }
    return {
        "accuracy": round(float(np.trace(confusion)) / max(float(confusion.sum()), 1.0), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "confusion_matrix_axes": "rows true class, columns predicted class, order of classes",
    }


def _set_memory_format(model: nn.Module, memory_format: torch.memory_format) -> None:
    """Lay the conv weights out as ``memory_format`` (channels-last trains faster on CPU)."""
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=memory_format)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _lr_at(progress: float, peak: float, warmup: float = 0.05) -> float:
    """Linear warm-up, then cosine decay to 2 % of ``peak`` at ``progress`` 1."""
    if progress < warmup:
        return peak * max(progress / warmup, 0.05)
    t = min((progress - warmup) / (1.0 - warmup), 1.0)
    return peak * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t)))


@dataclass
class _Schedule:
    """Batch size, steps taken, the time budget, and the learning rate following both."""

    batch_size: int
    peak_lr: float
    total_steps: int
    started: float
    deadline: float
    val_seconds: float = 5.0
    step: int = 0

    def out_of_time(self) -> bool:
        return time.monotonic() + 1.2 * self.val_seconds > self.deadline

    def lr(self) -> float:
        budget = max(self.deadline - self.started - 1.2 * self.val_seconds, 1.0)
        elapsed = (time.monotonic() - self.started) / budget
        return _lr_at(max(self.step / self.total_steps, elapsed), self.peak_lr)


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_set: tuple[U8Images, Labels],
    rng: np.random.Generator,
    schedule: _Schedule,
) -> tuple[list[float], bool]:
    """One pass over ``train_set``; returns the batch losses and whether time ran out."""
    images, labels = train_set
    model.train()
    losses: list[float] = []
    for index in _batches(len(images), schedule.batch_size, rng):
        if schedule.out_of_time():
            return losses, True
        _set_lr(optimizer, schedule.lr())
        x = _dihedral(torch.from_numpy(preprocess(images[index])), rng)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss = functional.cross_entropy(model(x), y)
        torch.autograd.backward(loss)
        optimizer.step()
        losses.append(float(loss.item()))
        schedule.step += 1
    return losses, False


def train(
    config: TrainConfig,
    train_set: tuple[U8Images, Labels],
    val_set: tuple[U8Images, Labels],
    deadline: float,
) -> TrainResult:
    """Adam on ``train_set``; stops after ``config.epochs`` or at ``deadline`` (monotonic)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_model()
    _set_memory_format(model, torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps_per_epoch = len(train_set[0]) // config.batch_size
    schedule = _Schedule(
        batch_size=config.batch_size,
        peak_lr=config.lr,
        total_steps=max(config.epochs * steps_per_epoch, 1),
        started=time.monotonic(),
        deadline=deadline,
    )
    result = TrainResult(model, 0, -1, -1.0, 0.0)
    best_state: dict[str, Any] = copy.deepcopy(model.state_dict())
    for epoch in range(1, config.epochs + 1):
        losses, out_of_time = _train_epoch(model, optimizer, train_set, rng, schedule)
        if not losses:
            break
        t0 = time.monotonic()
        accuracy = float(np.mean(torch_logits(model, val_set[0]).argmax(axis=1) == val_set[1]))
        schedule.val_seconds = time.monotonic() - t0
        result.epochs_run = epoch
        entry = {
            "epoch": epoch,
            "loss": round(float(np.mean(losses)), 4),
            "val_accuracy": round(accuracy, 4),
            "lr": round(schedule.lr(), 6),
            "seconds": round(time.monotonic() - schedule.started, 1),
        }
        result.history.append(entry)
        log.info("epoch_done", steps=len(losses), out_of_time=out_of_time, **entry)
        if accuracy > result.best_val_accuracy:
            result.best_val_accuracy = accuracy
            result.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        if out_of_time:
            break
    model.load_state_dict(best_state)
    _set_memory_format(model, torch.contiguous_format)
    result.model = model.eval()
    result.seconds = time.monotonic() - schedule.started
    return result


def export_onnx(model: nn.Module, path: Path) -> None:
    """Export with a dynamic batch axis; input ``image`` (N, 1, 224, 224), output ``logits``."""
    model.eval()
    example = torch.zeros(1, 1, synth.SIZE, synth.SIZE)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="You are using the legacy TorchScript-based ONNX export"
        )
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET,
            dynamo=False,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    onnx.checker.check_model(onnx.load(str(path)))


def check_onnx_matches(model: nn.Module, session: Any, images: U8Images) -> float:
    """Largest absolute logit difference between torch and onnxruntime; raises past tolerance."""
    diff = float(np.abs(torch_logits(model, images) - onnx_logits(session, images)).max())
    if diff > ONNX_TOLERANCE:
        msg = f"onnxruntime logits differ from torch by {diff:.2e} (tolerance {ONNX_TOLERANCE})"
        raise RuntimeError(msg)
    return diff


def build_manifest(
    onnx_path: Path, training: dict[str, object], metrics: dict[str, object]
) -> Manifest:
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    return Manifest(
        name=NAME,
        version=f"0.1.0-{today}",
        kind="classifier",
        file=onnx_path.name,
        sha256=sha256_file(onnx_path),
        input=InputSpec(
            name=INPUT_NAME,
            channels=1,
            height=synth.SIZE,
            width=synth.SIZE,
            color="gray",
            resize="area",
        ),
        output=OUTPUT_NAME,
        normalisation=Normalisation(scale=SCALE, mean=(MEAN,), std=(STD,)),
        classes=tuple(synth.CLASSES),
        ok_labels=OK_LABELS,
        training=training,
        metrics=metrics,
    )


def run(config: TrainConfig) -> Manifest:
    """Generate data, train, export, verify and write ``model.onnx`` + ``manifest.json``."""
    started = time.monotonic()
    deadline = started + config.minutes * 60.0
    torch.set_num_threads(config.threads)
    val_seed = config.seed + VAL_SEED_OFFSET
    train_set = synth.generate_batch(config.train_per_class, config.seed)
    val_set = synth.generate_batch(config.val_per_class, val_seed)
    log.info(
        "data_generated",
        train=len(train_set[0]),
        val=len(val_set[0]),
        seed=config.seed,
        val_seed=val_seed,
        seconds=round(time.monotonic() - started, 1),
    )
    result = train(config, train_set, val_set, deadline)
    train_minutes = (time.monotonic() - started) / 60.0

    config.out.mkdir(parents=True, exist_ok=True)
    onnx_path = config.out / MODEL_FILE
    export_onnx(result.model, onnx_path)
    session = _session(onnx_path, threads=config.threads)
    max_diff = check_onnx_matches(
        result.model, session, val_set[0][:: max(len(val_set[0]) // 40, 1)]
    )
    predicted = onnx_logits(session, val_set[0]).argmax(axis=1)
    metrics = classification_metrics(val_set[1], predicted)
    latency = onnx_latency_ms(onnx_path, val_set[0][0])
    metrics.update(
        {
            "evaluated_on": "validation set, exported ONNX, onnxruntime CPU",
            "onnxruntime_ms_per_image": latency["median"],
            "onnxruntime_ms_per_image_p90": latency["p90"],
            "onnxruntime_ms_per_image_min": latency["min"],
            "latency_setup": "onnxruntime CPUExecutionProvider, 1 thread, batch 1, 300 runs",
            "torch_onnx_max_abs_diff": max_diff,
            "onnx_bytes": onnx_path.stat().st_size,
        }
    )
    params = sum(int(p.numel()) for p in result.model.parameters())
    training: dict[str, object] = {
        "generator": "linevision.synth.pole_piece",
        "seed": config.seed,
        "val_seed": val_seed,
        "train_per_class": dict.fromkeys(synth.CLASSES, config.train_per_class),
        "val_per_class": dict.fromkeys(synth.CLASSES, config.val_per_class),
        "architecture": f"cnn conv3x3-bn-relu widths {list(WIDTHS)} strides {list(STRIDES)}, "
        "global average pool, linear",
        "parameters": params,
        "optimizer": "Adam",
        "lr": config.lr,
        "lr_schedule": "warm-up then cosine over the epochs or the time budget",
        "batch_size": config.batch_size,
        "augmentation": "rot90 and flip per batch",
        "epochs_planned": config.epochs,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "minutes_budget": config.minutes,
        "minutes_used": round(train_minutes, 2),
        "history": result.history,
        "torch": torch.__version__,
        "opset": ONNX_OPSET,
    }
    manifest = build_manifest(onnx_path, training, metrics)
    write_manifest(config.out, manifest)
    log.info(
        "model_written",
        out=str(config.out),
        accuracy=metrics["accuracy"],
        macro_f1=metrics["macro_f1"],
        onnx_ms=latency["median"],
        onnx_bytes=metrics["onnx_bytes"],
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        minutes=round((time.monotonic() - started) / 60.0, 2),
    )
    return manifest


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(
        prog="python -m linevision.train.pole_piece",
        description="Train the pole-piece burr classifier on generated crops; write ONNX.",
    )
    parser.add_argument("--out", type=Path, default=Path("models") / NAME)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--minutes",
        type=float,
        default=11.0,
        help="wall-clock budget for data generation and training; export follows",
    )
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--val-per-class", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    return TrainConfig(
        out=args.out,
        seed=args.seed,
        epochs=args.epochs,
        minutes=args.minutes,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        batch_size=args.batch_size,
        lr=args.lr,
        threads=args.threads,
    )


def main(argv: Sequence[str] | None = None) -> int:
    configure(fmt="json")
    config = parse_args(argv)
    log.info("train_start", **{k: str(v) for k, v in vars(config).items()})
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
