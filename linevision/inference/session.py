"""Inference sessions: the one place a runtime session is made (onnxruntime or OpenVINO).

Both implementations of ``Session`` take the same inputs and return the same outputs, in
the same order, as onnxruntime's ``InferenceSession.run``:

    session = open_session(path, SessionOptions(backend="openvino", intra_op_threads=1))
    session.prepare([{"image": (1, 1, 224, 224)}])     # warm-up: every shape the station uses
    logits = session.run(["logits"], {"image": x})[0]

``OnnxRuntimeSession``: intra-op threads from the config, one inter-op thread, sequential,
the configured graph optimisation, no idle spinning (spinning threads would steal the cores
from the cameras and the bus). ``OpenVinoSession``: the CPU plugin with
``INFERENCE_NUM_THREADS`` from the config, one stream, the latency hint and
``INFERENCE_PRECISION_HINT`` f32 (bf16 only when the station asks for it); a graph with a
dynamic axis is reshaped to each input shape once and compiled for it, and a thread takes an
idle infer request of that shape for each run (requests warmed at start-up are reused).
``openvino`` is imported only when a session of that backend is made, so the daemon runs
without the extra.

Which backend and precision may run a model is the manifest's (``Manifest.runtime_variant``):
``ModelSession`` refuses a combination that has no calibrated threshold.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from linevision.inference.manifest import (
    Manifest,
    ModelFileError,
    RuntimeVariant,
    load_manifest,
)
from linevision.log import get_logger
from linevision.types import ModelRef

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path

    from linevision.config import InferenceConfig, StationConfig

log = get_logger(__name__)

Backend = Literal["onnxruntime", "openvino"]
BACKENDS: Final = ("onnxruntime", "openvino")
Shape = tuple[int, ...]

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
MAX_SHAPES: Final = 64
"""Compiled shapes an OpenVINO session keeps (least recently used dropped beyond)."""
WARM_REQUESTS: Final = 2
"""Infer requests an OpenVINO session warms per shape: one per pool thread of the 2-core PC."""


class BackendUnavailableError(ModelFileError):
    """The configured backend's runtime is not installed."""


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """How a session runs: threads, backend, and ``precision`` (None: the graph's own;
    ``bf16``: OpenVINO's bf16 inference precision, only with a calibrated threshold)."""

    intra_op_threads: int = 1
    graph_optimization: str = "all"
    backend: Backend = "onnxruntime"
    precision: str | None = None

    @classmethod
    def of(cls, cfg: InferenceConfig, station: StationConfig | None = None) -> SessionOptions:
        """The options of ``cfg`` (``inference``), with ``station``'s backend and precision
        where it sets them."""
        backend = (station.backend if station is not None else None) or cfg.backend
        precision = (station.precision if station is not None else None) or cfg.precision
        return cls(cfg.intra_op_threads, cfg.graph_optimization, backend, precision)

    def for_station(self, station: StationConfig) -> SessionOptions:
        """These options with ``station``'s own backend and precision, where it sets them."""
        return replace(
            self,
            backend=station.backend or self.backend,
            precision=station.precision or self.precision,
        )


@dataclass
class RunClock:
    """CPU and wall seconds spent inside ``run`` by the calling threads, per backend."""

    runs: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0


_CLOCK_LOCK = threading.Lock()
CLOCKS: dict[str, RunClock] = {}
"""Per graph file name: what its sessions' ``run`` calls cost (read by ``linevision bench``)."""


def _account(key: str, cpu_s: float, wall_s: float) -> None:
    with _CLOCK_LOCK:
        clock = CLOCKS.setdefault(key, RunClock())
        clock.runs += 1
        clock.cpu_s += cpu_s
        clock.wall_s += wall_s


class Session(Protocol):
    """A loaded graph: ``run`` as onnxruntime's, names and declared shapes of its inputs."""

    backend: Backend
    path: Path

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    def input_shape(self, name: str) -> list[int | None]:
        """The declared shape of input ``name``; None for a dynamic axis."""
        ...

    def run(
        self, outputs: Sequence[str] | None, feeds: Mapping[str, npt.NDArray[Any]]
    ) -> list[npt.NDArray[Any]]: ...

    def prepare(self, shapes: Iterable[Mapping[str, Shape]], repeats: int = 1) -> float:
        """Compile (OpenVINO: reshape once per shape) and run zeros of every input shape;
        the last run's ms."""
        ...


def _zeros(shapes: Mapping[str, Shape]) -> dict[str, npt.NDArray[np.float32]]:
    return {name: np.zeros(shape, dtype=np.float32) for name, shape in shapes.items()}


def _prepare(session: Session, shapes: Iterable[Mapping[str, Shape]], repeats: int) -> float:
    last = 0.0
    for s in shapes:
        feeds = _zeros(s)
        for _ in range(max(repeats, 1)):
            t0 = time.perf_counter()
            session.run(None, feeds)
            last = (time.perf_counter() - t0) * 1000.0
    return last


class OnnxRuntimeSession:
    """An onnxruntime CPU session with the daemon's explicit options."""

    backend: Backend = "onnxruntime"

    def __init__(self, path: Path, options: SessionOptions) -> None:
        if options.precision == "bf16":
            msg = f"{path}: onnxruntime runs no bf16 on the CPU; use backend openvino"
            raise ModelFileError(msg)
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = _OPT_LEVELS[options.graph_optimization]
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self._key = f"onnxruntime:{path.parent.name}/{path.name}"
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=so, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            msg = f"onnxruntime cannot load {path}: {exc}"
            raise ModelFileError(msg) from exc

    @property
    def input_names(self) -> list[str]:
        return [str(i.name) for i in self._session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [str(o.name) for o in self._session.get_outputs()]

    def input_shape(self, name: str) -> list[int | None]:
        for i in self._session.get_inputs():
            if i.name == name:
                return [d if isinstance(d, int) else None for d in i.shape]
        msg = f"{self.path}: no input {name!r}; inputs are {self.input_names}"
        raise KeyError(msg)

    def run(
        self, outputs: Sequence[str] | None, feeds: Mapping[str, npt.NDArray[Any]]
    ) -> list[npt.NDArray[Any]]:
        t0, c0 = time.perf_counter(), time.thread_time()
        out = self._session.run(None if outputs is None else list(outputs), dict(feeds))
        _account(self._key, time.thread_time() - c0, time.perf_counter() - t0)
        return [np.asarray(o) for o in out]

    def prepare(self, shapes: Iterable[Mapping[str, Shape]], repeats: int = 1) -> float:
        return _prepare(self, shapes, repeats)


def _openvino() -> Any:
    try:
        import openvino  # noqa: PLC0415  (the optional backend loads only when it is asked for)
    except ImportError as exc:
        msg = (
            "inference backend 'openvino' needs the openvino extra "
            "(pip install 'linevision[openvino]'); it is not installed"
        )
        raise BackendUnavailableError(msg) from exc
    return openvino


_CORE: list[Any] = []
_CORE_LOCK = threading.Lock()


def _core() -> Any:
    """The process's one ``openvino.Core``."""
    with _CORE_LOCK:
        if not _CORE:
            _CORE.append(_openvino().Core())
        return _CORE[0]


def openvino_version() -> str | None:
    """The installed OpenVINO's version, None without it."""
    try:
        import openvino  # noqa: PLC0415
    except ImportError:
        return None
    return str(openvino.__version__)


class OpenVinoSession:
    """The OpenVINO CPU plugin: one compiled model per input shape, one request per thread."""

    backend: Backend = "openvino"

    def __init__(self, path: Path, options: SessionOptions) -> None:
        core = _core()
        self.path = path
        self._key = f"openvino:{path.parent.name}/{path.name}"
        try:
            self._model = core.read_model(str(path))
        except Exception as exc:
            msg = f"OpenVINO cannot read {path}: {exc}"
            raise ModelFileError(msg) from exc
        hint = "bf16" if options.precision == "bf16" else "f32"
        self._config = {
            "INFERENCE_NUM_THREADS": options.intra_op_threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": hint,
            "ENABLE_CPU_PINNING": False,
        }
        self._inputs = [i.get_any_name() for i in self._model.inputs]
        self._outputs = [o.get_any_name() for o in self._model.outputs]
        self._declared = {
            i.get_any_name(): [
                d.get_length() if d.is_static else None for d in i.get_partial_shape()
            ]
            for i in self._model.inputs
        }
        self._compiled: OrderedDict[tuple[tuple[str, Shape], ...], Any] = OrderedDict()
        self._free: dict[tuple[tuple[str, Shape], ...], list[tuple[Any, Any]]] = {}
        """Idle infer requests per shape: a request serves one thread at a time, and one
        warmed at start-up serves the pool's threads after."""
        self._lock = threading.RLock()
        self.compiles = 0

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def input_shape(self, name: str) -> list[int | None]:
        if name not in self._declared:
            msg = f"{self.path}: no input {name!r}; inputs are {self._inputs}"
            raise KeyError(msg)
        return list(self._declared[name])

    def _compiled_for(self, key: tuple[tuple[str, Shape], ...]) -> Any:
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is not None:
                self._compiled.move_to_end(key)
                return compiled
            t0 = time.perf_counter()
            model = self._model.clone()
            ov = _openvino()
            model.reshape({name: ov.PartialShape(list(shape)) for name, shape in key})
            try:
                compiled = _core().compile_model(model, "CPU", self._config)
            except Exception as exc:
                msg = f"OpenVINO cannot compile {self.path} for shapes {dict(key)}: {exc}"
                raise ModelFileError(msg) from exc
            self._compiled[key] = compiled
            self.compiles += 1
            while len(self._compiled) > MAX_SHAPES:
                dropped, _ = self._compiled.popitem(last=False)
                self._free.pop(dropped, None)
            log.info(
                "model_compiled",
                file=self._key,
                shapes={n: list(s) for n, s in key},
                ms=round((time.perf_counter() - t0) * 1000.0, 1),
            )
            return compiled

    def _acquire(self, key: tuple[tuple[str, Shape], ...]) -> tuple[Any, Any]:
        """A free infer request of ``key``'s compiled model (a new one when all are busy)."""
        compiled = self._compiled_for(key)
        with self._lock:
            free = self._free.setdefault(key, [])
            while free:
                owner, request = free.pop()
                if owner is compiled:
                    return compiled, request
        return compiled, compiled.create_infer_request()

    def _release(self, key: tuple[tuple[str, Shape], ...], held: tuple[Any, Any]) -> None:
        with self._lock:
            if key in self._compiled:
                self._free.setdefault(key, []).append(held)

    def run(
        self, outputs: Sequence[str] | None, feeds: Mapping[str, npt.NDArray[Any]]
    ) -> list[npt.NDArray[Any]]:
        t0, c0 = time.perf_counter(), time.thread_time()
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            msg = f"{self.path}: inputs {missing} not given (given {sorted(feeds)})"
            raise ValueError(msg)
        arrays = {n: np.ascontiguousarray(feeds[n], dtype=np.float32) for n in self._inputs}
        key = tuple((n, tuple(int(d) for d in arrays[n].shape)) for n in self._inputs)
        held = self._acquire(key)
        try:
            result = held[1].infer(arrays, share_inputs=True, share_outputs=False)
        finally:
            self._release(key, held)
        names = self._outputs if outputs is None else list(outputs)
        by_name = {name: value for port, value in result.items() for name in port.get_names()}
        try:
            out = [np.asarray(by_name[n]) for n in names]
        except KeyError as exc:
            msg = f"{self.path}: no output {exc.args[0]!r}; outputs are {self._outputs}"
            raise ValueError(msg) from exc
        _account(self._key, time.thread_time() - c0, time.perf_counter() - t0)
        return out

    def prepare(self, shapes: Iterable[Mapping[str, Shape]], repeats: int = 1) -> float:
        """Compile every shape and warm ``WARM_REQUESTS`` requests of each (the pool's
        threads then find warmed requests instead of making their own on a cell's path)."""
        shapes = list(shapes)
        last = _prepare(self, shapes, repeats)
        for s in shapes:
            feeds = {n: np.zeros(shape, np.float32) for n, shape in s.items()}
            key = tuple((n, tuple(feeds[n].shape)) for n in self._inputs)
            extra = [self._acquire(key) for _ in range(WARM_REQUESTS - 1)]
            for held in extra:
                held[1].infer(feeds, share_inputs=True, share_outputs=False)
            for held in extra:
                self._release(key, held)
        return last


def open_session(path: Path, options: SessionOptions = SessionOptions()) -> Session:
    """A session of ``options.backend`` for the graph at ``path``."""
    if options.backend == "openvino":
        return OpenVinoSession(path, options)
    if options.backend != "onnxruntime":
        msg = f"unknown inference backend {options.backend!r}; choose one of {BACKENDS}"
        raise ModelFileError(msg)
    return OnnxRuntimeSession(path, options)


def check_runtime(manifest: Manifest, options: SessionOptions, where: Path) -> RuntimeVariant:
    """The manifest's calibrated variant for the options' backend and precision, or a
    ``ModelFileError`` saying why this model may not run that way."""
    try:
        return manifest.runtime_variant(options.backend, options.precision)
    except ValueError as exc:
        msg = f"{where}: {exc}"
        raise ModelFileError(msg) from exc


class ModelSession:
    """One ONNX model and its manifest; ``run`` takes an already preprocessed batch."""

    def __init__(self, model_dir: Path, options: SessionOptions = SessionOptions()) -> None:
        t0 = time.perf_counter()
        self.manifest: Manifest
        self.manifest, onnx_path = load_manifest(model_dir)
        self.variant = check_runtime(self.manifest, options, model_dir)
        self.threshold = self.variant.threshold
        self._session = open_session(onnx_path, options)
        names = self._session.input_names
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
            "model_loaded",
            model=self.ref.name,
            version=self.ref.version,
            backend=options.backend,
            precision=self.variant.precision,
            ms=round(self.load_ms, 1),
        )

    @property
    def session(self) -> Session:
        return self._session

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = self._session.run([self.manifest.output], {self.manifest.input.name: batch})
        return np.asarray(out[0], dtype=np.float32)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,), repeats: int = 3) -> float:
        """Run every input shape the station will use; return the last run's ms."""
        spec = self.manifest.input
        t_start = time.perf_counter()
        shapes = [{spec.name: (n, spec.channels, spec.height, spec.width)} for n in batch_sizes]
        last = self._session.prepare(shapes, repeats)
        log.info(
            "model_warmed_up", model=self.ref.name, batch_sizes=list(batch_sizes), ms=round(last, 2)
        )
        self.warm_up_ms = (time.perf_counter() - t_start) * 1000.0
        return last
