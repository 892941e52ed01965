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
from typing import TYPE_CHECKING, Any, Final

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
        fold_channel_shuffles(int8_path)
    finally:
        quiet.setLevel(level)


def fold_channel_shuffles(path: Path) -> int:
    """Fold each channel shuffle between a Concat and a quantised Conv into the Conv's
    weights, in place; returns how many were folded.

    GSConv concatenates a quantised half with a float half and shuffles the channels
    (``Gather`` on axis 1) before the next convolution's QuantizeLinear. onnxruntime runs
    that as written; OpenVINO's CPU plugin (2026.4) moves the quantisation through the
    Gather and the Concat and computes the next convolution wrongly (logits off by up to 5
    on real crops, the top class changed on most of them). Permuting the convolution's
    input channels instead, ``W'[:, idx] = W``, is exact: the quantised weights are only
    reordered (their scales are per output channel), so onnxruntime's outputs are
    bit-identical and OpenVINO's agree with them.
    """
    import onnx  # noqa: PLC0415  (the train extra)
    from onnx import numpy_helper  # noqa: PLC0415

    model = onnx.load(str(path))
    graph = _Graph(model.graph)
    folded = 0
    for gather in [n for n in model.graph.node if n.op_type == "Gather"]:
        found = graph.shuffle_before_conv(gather)
        if found is None:
            continue
        quant, idx, weights = found
        for w in weights:
            values = numpy_helper.to_array(w)
            permuted = np.empty_like(values)
            permuted[:, idx] = values
            w.CopyFrom(numpy_helper.from_array(permuted, w.name))
        quant.input[0] = gather.input[0]
        model.graph.node.remove(gather)
        folded += 1
    if folded:
        onnx.save(model, str(path))
    return folded


class _Graph:
    """Producers, consumers and initialisers of an ONNX graph, for ``fold_channel_shuffles``."""

    def __init__(self, graph: Any) -> None:
        self.init = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in graph.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)

    def _only(self, name: str, op: str) -> Any:
        found = self.consumers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op else None

    def _indices(self, name: str) -> npt.NDArray[np.int64] | None:
        from onnx import numpy_helper  # noqa: PLC0415

        if name in self.init:
            return np.asarray(numpy_helper.to_array(self.init[name]), np.int64)
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return np.asarray(numpy_helper.to_array(node.attribute[0].t), np.int64)
        return None

    def shuffle_before_conv(
        self, gather: Any
    ) -> tuple[Any, npt.NDArray[np.int64], list[Any]] | None:
        """(QuantizeLinear, indices, the Convs' quantised weights) of a channel shuffle
        Concat -> Gather(axis 1) -> Q -> DQ -> Conv(s), or None for any other Gather."""
        from onnx import numpy_helper  # noqa: PLC0415

        source = self.producer.get(gather.input[0])
        axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
        idx = self._indices(gather.input[1])
        if source is None or source.op_type != "Concat" or axis != 1 or idx is None:
            return None
        if not np.array_equal(np.sort(idx), np.arange(idx.size)):
            return None
        quant = self._only(gather.output[0], "QuantizeLinear")
        dequant = self._only(quant.output[0], "DequantizeLinear") if quant is not None else None
        convs = self.consumers.get(dequant.output[0], []) if dequant is not None else []
        if not convs or any(c.op_type != "Conv" for c in convs):
            return None
        makers = [self.producer.get(c.input[1]) for c in convs]
        names = [m.input[0] for m in makers if m is not None and m.op_type == "DequantizeLinear"]
        weights: list[Any] = [self.init[n] for n in names if n in self.init]
        if len(weights) != len(convs) or len(set(names)) != len(names):
            return None
        shapes = [numpy_helper.to_array(w).shape for w in weights]
        if any(len(s) != 4 or s[1] != idx.size for s in shapes):
            return None
        return quant, idx, weights
