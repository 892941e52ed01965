"""INT8 (QDQ) static quantisation of an exported classifier with onnxruntime.

Settings that pay off on x86 CPUs with VNNI (``docs/models.md``): unsigned 8-bit
activations, signed 8-bit weights, per-channel weight scales, QDQ format, after
onnxruntime's pre-processing (shape inference and graph clean-up, which turns repeated
initialisers into initialisers the quantiser can fold as Conv biases). Calibration feeds
training images through the manifest's preprocessing. Needs no torch.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

F32Array = npt.NDArray[np.float32]

QUANTISED_OPS: Final = ("Conv", "Gemm")
"""Op types turned to int8; attention MatMuls and element-wise ops stay float32."""


class BatchReader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime is untyped
    """Feeds preprocessed calibration batches to the quantiser under one input name."""

    def __init__(self, input_name: str, batches: Sequence[F32Array]) -> None:
        self.input_name = input_name
        self._batches: Iterator[F32Array] = iter(batches)

    def get_next(self) -> dict[str, F32Array] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}


def calibration_batches(
    images: npt.NDArray[np.uint8],
    normalise: Callable[[npt.NDArray[np.uint8]], F32Array],
    batch: int = 16,
) -> list[F32Array]:
    return [normalise(images[i : i + batch]) for i in range(0, len(images), batch)]


def quantise_int8(
    fp32_path: Path,
    int8_path: Path,
    input_name: str,
    batches: Sequence[F32Array],
    op_types: Sequence[str] = QUANTISED_OPS,
) -> None:
    """Write ``int8_path``: QDQ int8 of ``fp32_path`` calibrated on ``batches`` (MinMax)."""
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="linevision-quant-") as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(int8_path),
                BatchReader(input_name, batches),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=list(op_types),
            )
    finally:
        quiet.setLevel(level)
