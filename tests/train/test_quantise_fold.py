"""``fold_channel_shuffles``: a channel shuffle before a quantised convolution folded into its
weights, exactly, so that OpenVINO computes what onnxruntime computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from linevision.train.quantise import fold_channel_shuffles

SHUFFLE = np.array([0, 4, 1, 5, 2, 6, 3, 7], np.int64)


def _gsconv_like(path: Path, indices: np.ndarray = SHUFFLE) -> None:
    """A quantised half and a float half, concatenated, shuffled, quantised, convolved."""
    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, (6, 8, 3, 3)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.float32(0.02), "s1"),
        numpy_helper.from_array(np.uint8(0), "z1"),
        numpy_helper.from_array(np.float32(0.03), "s2"),
        numpy_helper.from_array(np.uint8(0), "z2"),
        numpy_helper.from_array(indices, "idx"),
        numpy_helper.from_array(w, "w_q"),
        numpy_helper.from_array(rng.uniform(0.001, 0.01, 6).astype(np.float32), "w_s"),
        numpy_helper.from_array(np.zeros(6, np.int8), "w_z"),
    ]
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("QuantizeLinear", ["a", "s1", "z1"], ["a_q"]),
        helper.make_node("DequantizeLinear", ["a_q", "s1", "z1"], ["a_d"]),
        helper.make_node("Neg", ["x"], ["n"]),
        helper.make_node("Relu", ["n"], ["b"]),
        helper.make_node("Concat", ["a_d", "b"], ["c"], axis=1),
        helper.make_node("Gather", ["c", "idx"], ["g"], axis=1),
        helper.make_node("QuantizeLinear", ["g", "s2", "z2"], ["g_q"]),
        helper.make_node("DequantizeLinear", ["g_q", "s2", "z2"], ["g_d"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_d"], axis=0),
        helper.make_node("Conv", ["g_d", "w_d"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "gsconv_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    return np.asarray(ort.InferenceSession(str(path)).run(None, {"x": x})[0])


def test_the_shuffle_is_folded_exactly(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _gsconv_like(path)
    x = np.random.default_rng(0).uniform(-2, 2, (1, 4, 8, 8)).astype(np.float32)
    before = _ort(path, x)
    assert fold_channel_shuffles(path) == 1
    assert "Gather" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    # the same products, summed in another channel order (the shipped graph, run by
    # onnxruntime's int8 kernels, comes out bit-identical)
    np.testing.assert_allclose(_ort(path, x), before, rtol=1e-6, atol=1e-6)
    assert fold_channel_shuffles(path) == 0  # nothing left to fold


def test_openvino_agrees_with_onnxruntime_on_the_folded_graph(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    path = tmp_path / "m.onnx"
    _gsconv_like(path)
    fold_channel_shuffles(path)
    x = np.random.default_rng(1).uniform(-2, 2, (1, 4, 8, 8)).astype(np.float32)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.asarray(compiled({"x": x})[0])
    np.testing.assert_allclose(got, _ort(path, x), atol=1e-4)


def test_a_gather_that_is_no_permutation_stays(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _gsconv_like(path, np.array([0, 0, 1, 5, 2, 6, 3, 7], np.int64))
    assert fold_channel_shuffles(path) == 0


def test_the_shipped_pole_piece_graph_has_no_shuffle_before_a_convolution() -> None:
    model = onnx.load(str(Path(__file__).resolve().parents[2] / "models/pole_piece/model.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type == "Gather" and producer.get(n.input[0]) is not None:
            assert producer[n.input[0]].op_type != "Concat" or not any(
                c.op_type == "QuantizeLinear" for c in model.graph.node if n.output[0] in c.input
            )
