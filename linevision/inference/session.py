"""onnxruntime sessions with explicit options, loaded from a verified model folder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from linevision.inference.manifest import Manifest, ModelFileError, load_manifest
from linevision.log import get_logger
from linevision.types import ModelRef

log = get_logger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True, slots=True)
class SessionOptions:
    intra_op_threads: int = 1
    graph_optimization: str = "all"


def open_session(path: Path, options: SessionOptions = SessionOptions()) -> Any:
    """An onnxruntime CPU session with the daemon's explicit options.

    Intra-op threads from the config, one inter-op thread, sequential execution, no idle
    spinning (spinning threads would steal the cores from cameras and the bus).
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = _OPT_LEVELS[options.graph_optimization]
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        msg = f"onnxruntime cannot load {path}: {exc}"
        raise ModelFileError(msg) from exc


class ModelSession:
    """One ONNX model and its manifest; ``run`` takes an already preprocessed batch."""

    def __init__(self, model_dir: Path, options: SessionOptions = SessionOptions()) -> None:
        t0 = time.perf_counter()
        self.manifest: Manifest
        self.manifest, onnx_path = load_manifest(model_dir)
        self._session = open_session(onnx_path, options)
        names = [i.name for i in self._session.get_inputs()]
        if self.manifest.input.name not in names:
            want = self.manifest.input.name
            msg = f"{onnx_path}: manifest input {want!r} not in model inputs {names}"
            raise ModelFileError(msg)
        self.ref = ModelRef(
            name=self.manifest.name, version=self.manifest.version, sha256=self.manifest.sha256
        )
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        self.warm_up_ms: float | None = None
        log.info(
            "model_loaded", model=self.ref.name, version=self.ref.version, ms=round(self.load_ms, 1)
        )

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = self._session.run([self.manifest.output], {self.manifest.input.name: batch})
        return np.asarray(out[0], dtype=np.float32)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,), repeats: int = 3) -> float:
        """Run every input shape the station will use; return the last run's ms."""
        spec = self.manifest.input
        last = 0.0
        t_start = time.perf_counter()
        for n in batch_sizes:
            x = np.zeros((n, spec.channels, spec.height, spec.width), dtype=np.float32)
            for _ in range(repeats):
                t0 = time.perf_counter()
                self.run(x)
                last = (time.perf_counter() - t0) * 1000.0
        log.info(
            "model_warmed_up", model=self.ref.name, batch_sizes=list(batch_sizes), ms=round(last, 2)
        )
        self.warm_up_ms = (time.perf_counter() - t_start) * 1000.0
        return last
