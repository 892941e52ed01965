"""Export a trained classifier to ONNX, check it against torch, and time it.

``export`` writes opset-18 ONNX with a dynamic batch axis (input ``image``, output
``logits``); ``max_logit_difference`` compares onnxruntime with torch on real images;
``latency`` times batch-1 runs of onnxruntime sessions and of the torch module in the
same process, one after the other, so the figures in a manifest come from one run.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
import onnx
import torch

from linevision.inference.session import SessionOptions, open_session
from linevision.train.loop import predict

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from torch import nn

INPUT_NAME: Final = "image"
OUTPUT_NAME: Final = "logits"
ONNX_OPSET: Final = 18
WARMUP_RUNS: Final = 20

F32Array = npt.NDArray[np.float32]


def export(model: nn.Module, path: Path, channels: int, size: int) -> None:
    """ONNX of ``model`` in eval mode, batch axis dynamic; checked by ``onnx.checker``."""
    model.eval()
    example = torch.zeros(1, channels, size, size)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
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


def onnx_logits(path: Path, batch: F32Array, threads: int = 2) -> F32Array:
    session = open_session(path, SessionOptions(intra_op_threads=threads))
    out = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    return np.asarray(out, dtype=np.float32)


def max_logit_difference(
    model: nn.Module,
    path: Path,
    images: npt.NDArray[np.uint8],
    normalise: Callable[[npt.NDArray[np.uint8]], F32Array],
) -> float:
    """Largest absolute difference between torch and onnxruntime logits on ``images``."""
    expected = predict(model, images, normalise)
    actual = onnx_logits(path, normalise(images))
    return float(np.abs(expected - actual).max())


def _median_ms(run: Callable[[], object], runs: int) -> float:
    for _ in range(WARMUP_RUNS):
        run()
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        run()
        times[i] = time.perf_counter() - t0
    return round(float(np.median(times)) * 1e3, 3)


def onnx_ms(path: Path, x: F32Array, threads: int, runs: int = 200) -> float:
    """Median batch-1 run time of an onnxruntime session, in milliseconds."""
    sess = open_session(path, SessionOptions(intra_op_threads=threads))
    return _median_ms(lambda: sess.run([OUTPUT_NAME], {INPUT_NAME: x}), runs)


def torch_ms(model: nn.Module, x: F32Array, threads: int, runs: int = 100) -> float:
    """Median batch-1 eager fp32 forward time of ``model``, in milliseconds."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    tensor = torch.from_numpy(x)
    try:
        with torch.inference_mode():
            return _median_ms(lambda: model(tensor), runs)
    finally:
        torch.set_num_threads(previous)


def latency(
    model: nn.Module, files: dict[str, Path], x: F32Array, threads: tuple[int, ...] = (1, 2)
) -> dict[str, float]:
    """ms/image of each ONNX file (``fp32``, ``int8``) and of torch eager fp32, per thread count.

    Keys: ``onnxruntime_<variant>_<n>t`` and ``torch_eager_fp32_<n>t``, plus
    ``int8_speedup_vs_torch_<n>t`` when an ``int8`` file is given.
    """
    out: dict[str, float] = {}
    for n in threads:
        for variant, path in files.items():
            out[f"onnxruntime_{variant}_{n}t"] = onnx_ms(path, x, n)
        out[f"torch_eager_fp32_{n}t"] = torch_ms(model, x, n)
        if "int8" in files:
            ratio = out[f"torch_eager_fp32_{n}t"] / out[f"onnxruntime_int8_{n}t"]
            out[f"int8_speedup_vs_torch_{n}t"] = round(ratio, 2)
    return out


def parameter_megabytes(model: nn.Module) -> float:
    """Parameters as float32 in MiB, as the seed's table counts them (ResNet18: 42.6)."""
    return round(sum(int(p.numel()) for p in model.parameters()) * 4 / 2**20, 2)
