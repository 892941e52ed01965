"""Shared parts for the daemon and HMI tests: a tiny real ONNX model, generated frames, configs."""

from __future__ import annotations

import socket
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper

from linevision.config import Config
from linevision.inference.manifest import Manifest, sha256_file, write_manifest
from tests.helpers import free_tcp_endpoint

SIZE = 32


def make_model(
    folder: Path,
    name: str = "tiny",
    version: str = "1.0",
    invert: bool = False,
    at: float = 0.5,
) -> Path:
    """A 2-class classifier on mean brightness: frames brighter than ``at`` (0..1) are
    ``Defect`` (or ``Normal`` with ``invert``)."""
    folder.mkdir(parents=True, exist_ok=True)
    sign = -1.0 if invert else 1.0
    w = helper.make_tensor("W", TensorProto.FLOAT, [1, 2], [-20.0 * sign, 20.0 * sign])
    b = helper.make_tensor("B", TensorProto.FLOAT, [2], [20.0 * at * sign, -20.0 * at * sign])
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        ],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 2])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    manifest = Manifest.model_validate(
        {
            "name": name,
            "version": version,
            "kind": "classifier",
            "sha256": sha256_file(folder / "model.onnx"),
            "input": {"name": "x", "channels": 1, "height": SIZE, "width": SIZE},
            "output": "logits",
            "classes": ["Normal", "Defect"],
        }
    )
    write_manifest(folder, manifest)
    return folder


def make_frames(folder: Path, count: int = 8, bright_every: int = 4) -> Path:
    """``count`` frames in name order; every ``bright_every``-th one is bright (a defect)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        bright = i % bright_every == bright_every - 1
        img = np.full((48, 64), 200 if bright else 40, np.uint8)
        cv2.circle(img, (20 + 3 * i, 24), 6, 90 if bright else 120, -1)
        assert cv2.imwrite(str(folder / f"f_{i:03d}.png"), img)
    return folder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ops_config(tmp: Path, frames: Path, rate_hz: float = 50.0, **sections: object) -> Config:
    data: dict[str, object] = {
        "cameras": [
            {
                "id": "cam0",
                "backend": "replay",
                "path": str(frames),
                "rate_hz": rate_hz,
                "grab_timeout_ms": 500,
            }
        ],
        "stations": [
            {
                "name": "pole_piece",
                "type": "pole_piece",
                "cameras": ["cam0"],
                "model": "tiny",
                "deadline_ms": 500,
                "queue_size": 64,
            }
        ],
        "bus": {"publish": free_tcp_endpoint()},
        "archive": {"dir": str(tmp / "archive")},
        "metrics": {"listen": "127.0.0.1:0"},
        "control": {"endpoint": free_tcp_endpoint()},
        "logging": {"format": "json"},
    }
    data.update(sections)
    return Config.model_validate(data)
