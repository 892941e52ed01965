"""Size and speed of the seed-002 variants, measured one after the other in one process.

    python -m linevision.train.measure --stem s2d --arch resnet18 resnet18_gsconv_mse \
        --checkpoint build/ckpt/s2d_resnet18.pt build/ckpt/s2d_resnet18_gsconv_mse.pt

For each architecture (trained weights from ``--checkpoint`` when given, else a fresh
initialisation: speed does not depend on the weights): parameters in MiB, the float32
ONNX export and its INT8 (QDQ) quantisation calibrated on generated crops, and the
batch-1 median ms/image of onnxruntime float32 and INT8 and of torch eager float32 at 1
and 2 threads, with the torch-eager-over-INT8 ratio. Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from linevision.synth import pole_piece as synth
from linevision.train import classifier_export, gsnet, quantise
from linevision.train.pole_piece_resnet import normalise

if TYPE_CHECKING:
    from collections.abc import Sequence

CALIBRATION_SEED = 99
CALIBRATION_PER_CLASS = 8


def measure(arch: str, stem: str, checkpoint: Path | None) -> dict[str, object]:
    model = gsnet.build(arch, len(synth.CLASSES), stem=stem).eval()
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    images, _ = synth.generate_batch(CALIBRATION_PER_CLASS, CALIBRATION_SEED)
    with tempfile.TemporaryDirectory(prefix="linevision-measure-") as tmp:
        files = {"fp32": Path(tmp) / "fp32.onnx", "int8": Path(tmp) / "int8.onnx"}
        classifier_export.export(model, files["fp32"], channels=1, size=synth.SIZE)
        batches = quantise.calibration_batches(images, normalise)
        quantise.quantise_int8(files["fp32"], files["int8"], classifier_export.INPUT_NAME, batches)
        timing = classifier_export.latency(model, files, normalise(images[:1]))
        sizes = {f"onnx_{k}_mib": round(p.stat().st_size / 2**20, 2) for k, p in files.items()}
    return {
        "arch": arch,
        "stem": stem,
        "trained": checkpoint is not None,
        "parameters": gsnet.parameter_count(model),
        "params_mib": classifier_export.parameter_megabytes(model),
        **sizes,
        **timing,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m linevision.train.measure", description=__doc__)
    p.add_argument("--arch", nargs="+", choices=tuple(gsnet.ARCHITECTURES), required=True)
    p.add_argument("--stem", choices=gsnet.STEMS, default="s2d")
    p.add_argument("--checkpoint", nargs="*", type=Path, default=[], help="one per --arch")
    args = p.parse_args(argv)
    if args.checkpoint and len(args.checkpoint) != len(args.arch):
        p.error("give one --checkpoint per --arch, or none")
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
    }
    sys.stdout.write(json.dumps({"machine": machine}) + "\n")
    checkpoints = args.checkpoint or [None] * len(args.arch)
    for arch, checkpoint in zip(args.arch, checkpoints, strict=True):
        sys.stdout.write(json.dumps(measure(arch, args.stem, checkpoint)) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
