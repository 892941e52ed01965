"""Train the seed-002 pole-piece classifier on a labelled folder and ship it as ONNX.

    linevision train --station pole_piece --data DIR --out MODELDIR [--minutes M] [--epochs N]
    python -m linevision.train.pole_piece_resnet --data DIR --out MODELDIR --val DIR --test DIR

Training runs until ``--minutes`` (default 10) is spent, the held-out macro F1 has not
improved for ``--patience`` epochs (default 20), or the optional ``--epochs`` cap; the best
epoch is exported, also when Ctrl-C stops the run (exit 0). Batches are varied the way a
line varies (``linevision.train.augment``; ``--edge`` says which flips the crops allow).

The network is a plain CNN from random weights whose head sees each channel's largest and
mean response (``pole_piece_nets.PlainCNN``), and epochs are drawn class balanced so a class
of 30 images stays learned. ``--arch efficientnet_lite0`` fine-tunes EfficientNet-Lite0 from
ImageNet weights with a new head (the backbone at a lower learning rate). ``--arch
resnet18_gsconv_mse`` is the
paper's ResNet18 with GSConv and multi-head SE attention (the plain ResNet18 and the
single-change variants train the same way for the ablation), with a 2x2 space-to-depth
before the stem by default (``--stem s2d``, a quarter of the compute; see
``gsnet.ResNet18``; ``--stem standard`` is the paper's stem). Images
are read from the folder contract and converted as the runtime converts them. The
held-out set (``--val``, or a stratified share of ``--data``) picks the best epoch and
decides whether the INT8 (QDQ) export ships: it does when its accuracy and macro F1 are
within 0.5 points of float32's through the runtime path. Then ``model.onnx`` is the INT8
file and ``model_fp32.onnx`` the float32 one; otherwise ``model.onnx`` is float32. The
manifest's metrics are measured through the runtime path on ``--test`` when given, else
on the held-out set, and its latency figures (onnxruntime and torch eager, 1 and 2
threads) come from the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
import torch

from linevision.inference.manifest import (
    InputSpec,
    Manifest,
    Normalisation,
    sha256_file,
    write_manifest,
)
from linevision.inference.session import ModelSession
from linevision.log import configure, get_logger
from linevision.synth import pole_piece as synth
from linevision.tools import eval_run
from linevision.train import augment, classifier_export, gsnet, pole_piece_nets, quantise
from linevision.train.budget import STOP_INTERRUPTED, run_interruptibly
from linevision.train.folder_data import (
    MIN_TRAIN_PER_CLASS,
    MIN_VAL_PER_CLASS,
    ImageSet,
    check_per_class,
    load_folder,
    recorded_path,
    split_per_class,
)
from linevision.train.loop import LoopConfig, fit
from linevision.train.progress import Progress

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import nn

    from linevision.tools import evaluate

NAME: Final = "pole_piece"
VERSION: Final = "0.2.0"
MODEL_FILE: Final = "model.onnx"
FP32_FILE: Final = "model_fp32.onnx"
INT8_FILE: Final = "model_int8.onnx"
OK_LABELS: Final = ("Normal",)
INT8_TOLERANCE: Final = 0.005
ONNX_TOLERANCE: Final = 1e-3
CALIBRATION_PER_CLASS: Final = 32
PATIENCE: Final = 20
"""Epochs without a better held-out macro F1 before the run stops (a few hundred held-out
crops move by a point or two from epoch to epoch while the learning rate is high)."""
WEAK_MACRO_F1: Final = 0.9
"""Below this held-out macro F1 the model is written but ``train`` says it is not fit for a
line (the line's target is 0.97)."""
SCALE: Final = 1.0 / 255.0
MEAN: Final = 0.5
STD: Final = 0.25

log = get_logger(__name__)


def normalise(images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """(N, H, W) uint8 -> (N, 1, H, W) float32 = (pixel * SCALE - MEAN) / STD, as the manifest's
    normalisation makes the runtime do."""
    x = images[:, None].astype(np.float32) * np.float32(SCALE)
    return np.asarray((x - np.float32(MEAN)) / np.float32(STD), dtype=np.float32)


@dataclass(frozen=True)
class Config:
    data: Path
    out: Path
    val: Path | None = None
    test: Path | None = None
    arch: str = pole_piece_nets.DEFAULT_ARCH
    stem: str = "s2d"
    epochs: int | None = None
    minutes: float = 10.0
    patience: int | None = PATIENCE
    edge: str = augment.EDGE_ANY
    seed: int = 0
    batch_size: int = 32
    lr: float = 2e-3
    val_fraction: float = 0.15
    threads: int = 2
    int8: bool = True
    keep_fp32: bool = True
    bf16: bool = True
    coarse_size: int | None = None
    timing: bool = True
    checkpoint: Path | None = None


@dataclass(frozen=True)
class Data:
    train: ImageSet
    val: ImageSet
    test: ImageSet | None
    val_source: str


def load_data(config: Config) -> Data:
    classes, size = synth.CLASSES, synth.SIZE
    data = load_folder(config.data, NAME, classes, size)
    if config.val is not None:
        train, val = data, load_folder(config.val, NAME, classes, size)
        source = f"folder {recorded_path(config.val)}"
        why = "every class is learned and validated"
        check_per_class(train.counts(), MIN_TRAIN_PER_CLASS, f"{config.data}/labels.csv", why)
        check_per_class(val.counts(), MIN_VAL_PER_CLASS, f"{config.val}/labels.csv", why)
    else:
        train, val = split_per_class(data, config.val_fraction, config.seed)
        source = f"{config.val_fraction:.0%} of --data per class (seed {config.seed})"
    test = None if config.test is None else load_folder(config.test, NAME, classes, size)
    return Data(train, val, test, source)


def manifest_for(
    onnx_path: Path, training: dict[str, object], metrics: dict[str, object]
) -> Manifest:
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    return Manifest(
        name=NAME,
        version=f"{VERSION}-{today}",
        kind="classifier",
        file=onnx_path.name,
        sha256=sha256_file(onnx_path),
        input=InputSpec(
            name=classifier_export.INPUT_NAME,
            channels=1,
            height=synth.SIZE,
            width=synth.SIZE,
            color="gray",
            resize="area",
        ),
        output=classifier_export.OUTPUT_NAME,
        normalisation=Normalisation(scale=SCALE, mean=(MEAN,), std=(STD,)),
        classes=tuple(synth.CLASSES),
        ok_labels=OK_LABELS,
        threshold=0.0,
        training=training,
        metrics=metrics,
    )


def score(onnx_path: Path, images: ImageSet) -> evaluate.Report:
    """``images`` through the runtime path (manifest, ModelSession, decide) of one file."""
    with tempfile.TemporaryDirectory(prefix="linevision-eval-") as tmp:
        folder = Path(tmp)
        shutil.copyfile(onnx_path, folder / onnx_path.name)
        write_manifest(folder, manifest_for(folder / onnx_path.name, {}, {}))
        session = ModelSession(folder)
        session.warm_up()
        samples = (
            (img, images.classes[int(k)])
            for img, k in zip(images.images, images.labels, strict=True)
        )
        return eval_run.classify(session, samples).report(images.classes)


def _calibration(train: ImageSet, seed: int) -> list[quantise.F32Array]:
    rng = np.random.default_rng(seed)
    picks = [
        rng.permutation(np.flatnonzero(train.labels == k))[:CALIBRATION_PER_CLASS]
        for k in range(len(train.classes))
    ]
    index = rng.permutation(np.concatenate(picks))
    return quantise.calibration_batches(train.images[index], normalise)


def _within(int8: evaluate.Report, fp32: evaluate.Report) -> bool:
    accuracy_ok = int8["accuracy"] >= fp32["accuracy"] - INT8_TOLERANCE
    return accuracy_ok and int8["macro_f1"] >= fp32["macro_f1"] - INT8_TOLERANCE


def export_and_choose(
    model: nn.Module, data: Data, config: Config
) -> tuple[dict[str, Path], dict[str, object]]:
    """Write the ONNX files; return the shipped files by precision and the held-out scores."""
    out = config.out
    fp32_path = out / FP32_FILE
    classifier_export.export(model, fp32_path, channels=1, size=synth.SIZE)
    probe = data.val.images[:: max(len(data.val.labels) // 40, 1)]
    diff = classifier_export.max_logit_difference(model, fp32_path, probe, normalise)
    if diff > ONNX_TOLERANCE:
        msg = f"onnxruntime logits differ from torch by {diff:.2e} (tolerance {ONNX_TOLERANCE})"
        raise RuntimeError(msg)
    fp32 = score(fp32_path, data.val)
    held_out: dict[str, object] = {
        "set": data.val_source,
        "n": fp32["n"],
        "fp32": {"accuracy": fp32["accuracy"], "macro_f1": fp32["macro_f1"]},
        "rule": "int8 ships if its accuracy and macro F1 are within 0.5 points of fp32's",
        "torch_onnx_max_abs_diff": diff,
    }
    files = {"fp32": fp32_path}
    if config.int8:
        int8_path = out / INT8_FILE
        quantise.quantise_int8(
            fp32_path, int8_path, classifier_export.INPUT_NAME, _calibration(data.train, 0)
        )
        int8 = score(int8_path, data.val)
        accepted = _within(int8, fp32)
        held_out["int8"] = {"accuracy": int8["accuracy"], "macro_f1": int8["macro_f1"]}
        held_out["int8_accepted"] = accepted
        log.info("int8_checked", accepted=accepted, fp32=held_out["fp32"], int8=held_out["int8"])
        files["int8"] = int8_path
    return files, held_out


def ship(files: dict[str, Path], held_out: dict[str, object], config: Config) -> Path:
    """Name the runtime file ``model.onnx``; keep or drop the other precision."""
    runtime = config.out / MODEL_FILE
    if held_out.get("int8_accepted"):
        files["int8"].replace(runtime)
        if not config.keep_fp32:
            files["fp32"].unlink()
    else:
        files["fp32"].replace(runtime)
        if "int8" in files:
            files["int8"].unlink()
    return runtime


def run(config: Config) -> Manifest:
    started = time.monotonic()
    deadline = started + config.minutes * 60.0
    torch.set_num_threads(config.threads)
    data = load_data(config)
    log.info(
        "data_loaded",
        train=data.train.counts(),
        val=len(data.val.labels),
        test=None if data.test is None else len(data.test.labels),
        seconds=round(time.monotonic() - started, 1),
    )
    torch.manual_seed(config.seed)
    model = pole_piece_nets.build(config.arch, len(synth.CLASSES), stem=config.stem)
    variation = augment.for_edge(config.edge)

    def vary(images: npt.NDArray[np.uint8], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
        return augment.augment(images, rng, variation)

    loop = LoopConfig(
        epochs=config.epochs,
        patience=config.patience,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=config.seed,
        bf16=config.bf16,
        coarse_size=config.coarse_size,
        augment=vary,
    )
    steps = (config.epochs or 0) * (len(data.train.labels) // config.batch_size)
    progress = Progress(steps, config.epochs, deadline)
    result = fit(
        model,
        train_set=data.train,
        val_set=data.val,
        normalise=normalise,
        config=loop,
        deadline=deadline,
        progress=progress,
    )
    train_minutes = (time.monotonic() - started) / 60.0
    if result.stop_reason == STOP_INTERRUPTED:
        log.warning(
            "training_interrupted",
            exporting="the best epoch so far",
            best_epoch=result.best_epoch,
            best_macro_f1=round(result.best_macro_f1, 4),
            epochs_run=result.epochs_run,
        )
    config.out.mkdir(parents=True, exist_ok=True)
    if config.checkpoint is not None:
        torch.save(result.model.state_dict(), config.checkpoint)
    files, held_out = export_and_choose(result.model, data, config)
    x = normalise(data.val.images[:1])
    timing = classifier_export.latency(result.model, files, x) if config.timing else {}
    runtime = ship(files, held_out, config)
    final_set = data.test if data.test is not None else data.val
    report = score(runtime, final_set)
    precision = "int8" if held_out.get("int8_accepted") else "fp32"
    metrics: dict[str, object] = {
        **report,
        "evaluated_on": "--test folder" if data.test is not None else "held-out set",
        "evaluated_through": "ModelSession (1 thread), inference.classifier preprocess/decide",
        "runtime_file": MODEL_FILE,
        "runtime_precision": precision,
        "held_out": held_out,
        "latency_batch1_ms": timing,
        "latency_setup": "median of batch-1 runs; onnxruntime CPU, sequential, n threads",
        "params_mib": classifier_export.parameter_megabytes(result.model),
        "onnx_bytes": runtime.stat().st_size,
    }
    fp32_kept = config.out / FP32_FILE
    if fp32_kept.is_file():
        metrics["fp32_file"] = FP32_FILE
        metrics["fp32_sha256"] = sha256_file(fp32_kept)
    training: dict[str, object] = {
        "data": data.train.summary(),
        "held_out": {**data.val.summary(), "source": data.val_source},
        "test": None if data.test is None else data.test.summary(),
        "architecture": config.arch,
        "stem": config.stem,
        "description": pole_piece_nets.describe(config.arch, config.stem),
        "parameters": gsnet.parameter_count(result.model),
        "loop": {k: v for k, v in asdict(loop).items() if k != "augment"},
        "optimizer": "AdamW, warm-up then cosine planned over the time budget from the "
        "measured step time (or over the --epochs cap when that comes first)",
        "augmentation": variation.describe(),
        "edge": config.edge,
        "coarse_phase": None
        if config.coarse_size is None
        else f"first {loop.coarse_fraction:.0%} at {config.coarse_size} px, then {synth.SIZE} px",
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "stopped_by_time": result.stopped_by_time,
        "minutes_budget": config.minutes,
        "minutes_used": round(train_minutes, 2),
        "history": result.history,
        "calibration_images": CALIBRATION_PER_CLASS * len(synth.CLASSES),
        "torch": torch.__version__,
        "opset": classifier_export.ONNX_OPSET,
    }
    manifest = manifest_for(runtime, training, metrics)
    write_manifest(config.out, manifest)
    if report["macro_f1"] < WEAK_MACRO_F1:
        sys.stderr.write(
            f"train: WARNING: {config.out} scores macro F1 {report['macro_f1']:.3f} on "
            f"{metrics['evaluated_on']} (the line needs 0.97); do not run a line with it. "
            "Check the labels, give it more --minutes, or try another --arch.\n"
        )
    log.info(
        "model_written",
        out=str(config.out),
        arch=config.arch,
        precision=precision,
        accuracy=round(report["accuracy"], 4),
        macro_f1=round(report["macro_f1"], 4),
        minutes=round((time.monotonic() - started) / 60.0, 2),
        **timing,
    )
    return manifest


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(
        prog="python -m linevision.train.pole_piece_resnet",
        description="Train the pole-piece classifier (pretrained EfficientNet-Lite0) on a folder.",
    )
    p.add_argument("--data", type=Path, required=True, help="training folder (image,label)")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--val", type=Path, default=None, help="held-out folder (default: a split)")
    p.add_argument("--test", type=Path, default=None, help="folder for the manifest's metrics")
    p.add_argument("--arch", choices=pole_piece_nets.ARCHITECTURES, default=Config.arch)
    p.add_argument("--stem", choices=gsnet.STEMS, default=Config.stem, help="see gsnet.ResNet18")
    p.add_argument(
        "--epochs",
        type=int,
        default=Config.epochs,
        help="at most this many epochs (default: no cap; the budget and --patience decide)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=Config.minutes,
        help="budget for loading and training; export, INT8 and timing follow",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=Config.patience,
        help="stop after this many epochs without a better held-out macro F1 (0: never)",
    )
    p.add_argument(
        "--edge",
        choices=augment.EDGES,
        default=Config.edge,
        help="how the edge runs in every crop: any (rotate and flip freely, as the generator "
        "draws them) or vertical/horizontal (only the flip along the edge)",
    )
    p.add_argument("--seed", type=int, default=Config.seed)
    p.add_argument("--batch-size", type=int, default=Config.batch_size)
    p.add_argument("--lr", type=float, default=Config.lr)
    p.add_argument("--val-fraction", type=float, default=Config.val_fraction)
    p.add_argument("--threads", type=int, default=Config.threads)
    p.add_argument("--no-int8", action="store_true", help="ship float32 only")
    p.add_argument("--no-fp32-copy", action="store_true", help="drop model_fp32.onnx")
    p.add_argument("--no-bf16", action="store_true", help="train without bfloat16 autocast")
    p.add_argument(
        "--coarse-size",
        type=int,
        default=None,
        help="train the first 70%% of the run on images downscaled to this side",
    )
    p.add_argument("--no-timing", action="store_true", help="skip the latency measurements")
    p.add_argument("--checkpoint", type=Path, default=None, help="also save the state dict")
    a = p.parse_args(argv)
    return Config(
        data=a.data,
        out=a.out,
        val=a.val,
        test=a.test,
        arch=a.arch,
        stem=a.stem,
        epochs=a.epochs,
        minutes=a.minutes,
        patience=a.patience or None,
        edge=a.edge,
        seed=a.seed,
        batch_size=a.batch_size,
        lr=a.lr,
        val_fraction=a.val_fraction,
        threads=a.threads,
        int8=not a.no_int8,
        keep_fp32=not a.no_fp32_copy,
        bf16=not a.no_bf16,
        coarse_size=a.coarse_size,
        timing=not a.no_timing,
        checkpoint=a.checkpoint,
    )


def main(argv: Sequence[str] | None = None) -> int:
    configure(fmt="auto")
    config = parse_args(argv)
    log.info("train_start", **{k: str(v) for k, v in asdict(config).items()})
    return run_interruptibly(lambda: run(config).training, config.out)


if __name__ == "__main__":
    sys.exit(main())
