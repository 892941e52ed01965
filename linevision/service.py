"""The supervisor: builds the pipeline from a Config, runs it, shuts it down in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from linevision.bus import VerdictPublisher
from linevision.cameras import CameraDriver, open_driver
from linevision.cameras.worker import AcquisitionWorker
from linevision.config import CameraConfig, Config, StationConfig
from linevision.delivery import Delivery
from linevision.executor import EdfExecutor
from linevision.inference.session import SessionOptions
from linevision.log import get_logger
from linevision.memory import keep_large_buffers
from linevision.scheduler import CellArbiter, StationWorker
from linevision.stations import build_station
from linevision.types import Frame, FrameFault, Verdict

log = get_logger(__name__)

TRIGGER_LEAD_S = 0.5
"""Software-triggered cameras start their trigger grid this long after the service starts
them, so that every camera is open before the first cell."""


@dataclass
class Service:
    config: Config
    models_root: Path | None = None
    listeners: list[Callable[[Verdict, int, float], None]] = field(default_factory=list)
    """Called on the bus thread after each verdict is sent: (verdict, seq, latency_ms).
    A listener must be quick and must not raise; errors are logged and counted."""
    stations: dict[str, StationWorker] = field(default_factory=dict)
    cameras: dict[str, AcquisitionWorker] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)
    recipe: str | None = None
    """The product recipe the configured stations stand for (set by ``linevision.recipes``)."""

    def __post_init__(self) -> None:
        self.listener_errors = 0
        self.delivery = Delivery()
        self.publisher = VerdictPublisher(
            self.config.bus.publish,
            heartbeat_s=self.config.bus.heartbeat_s,
            state=self.state,
            on_published=self._notify_listeners,
        )
        self.arbiter = CellArbiter(self.publisher.publish)
        self.executor = EdfExecutor(self.config.inference.workers)

    def _notify_listeners(self, verdict: Verdict, seq: int, latency_ms: float) -> None:
        for fn in self.listeners:
            try:
                fn(verdict, seq, latency_ms)
            except Exception:
                self.listener_errors += 1
                log.exception("listener_failed", listener=getattr(fn, "__qualname__", repr(fn)))

    def _build_station(self, sc: StationConfig) -> StationWorker:
        opts = SessionOptions(
            intra_op_threads=self.config.inference.intra_op_threads,
            graph_optimization=self.config.inference.graph_optimization,
        )
        camera = self.config.camera(sc.cameras[0])
        built = build_station(sc, self.models_root, opts, camera)
        worker = StationWorker(
            built.station, self.arbiter, sc.deadline_ms, sc.queue_size, built.ref, self.executor
        )
        worker.recipe = self.recipe
        return worker

    def start(self) -> None:
        """Load and warm every model, bind the bus, then open the cameras.

        Models are loaded first so a bad model folder stops the start before any camera
        or socket is opened.
        """
        keep_large_buffers()
        threads = self.config.inference.opencv_threads
        cv2.setNumThreads(threads if threads > 0 else -1)
        for sc in self.config.stations:
            self.stations[sc.name] = self._build_station(sc)
        self.delivery = Delivery.open(self.config)
        self.publisher.use_delivery(self.delivery.journal, self.delivery.curve)
        self.publisher.start()
        self.delivery.start_replay(self.publisher.current)
        self.arbiter.start()
        self.executor.start()
        # software triggers of every camera on one grid: a multi-camera station's views
        # of a cell are triggered together and share the cell id
        epoch = time.monotonic() + TRIGGER_LEAD_S
        for sc in self.config.stations:
            worker = self.stations[sc.name]
            for cam_id in sc.cameras:
                cam_cfg = self.config.camera(cam_id)
                self.cameras[cam_id] = AcquisitionWorker(
                    cam_cfg, _driver_factory(cam_cfg), _sink(worker), epoch=epoch
                )
        for cam in self.cameras.values():
            cam.start()
        self.ready.set()
        log.info(
            "service_started",
            run_id=self.publisher.run_id,
            stations=list(self.stations),
            cameras=list(self.cameras),
        )

    def stop(self) -> None:
        """Cameras first (no new cells), then drain stations, then the bus."""
        t0 = time.monotonic()
        for cam in self.cameras.values():
            cam.stop()
        for cam in self.cameras.values():
            cam.join(3.0)
        self.executor.stop()
        flushed = self.arbiter.flush("shutdown")
        self.arbiter.stop()
        self.publisher.stop()
        self.delivery.close()
        log.info(
            "service_stopped",
            flushed_cells=flushed,
            last_seq=self.publisher.seq,
            ms=round((time.monotonic() - t0) * 1000.0, 1),
        )

    def state(self) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, object]]]:
        stations: dict[str, dict[str, object]] = {
            name: {
                "queue": w.queue_depth(),
                **dict(w.counters),
            }
            for name, w in self.stations.items()
        }
        cameras: dict[str, dict[str, object]] = {
            cam_id: cam.snapshot() for cam_id, cam in self.cameras.items()
        }
        return stations, cameras


def _driver_factory(cfg: CameraConfig) -> Callable[[], CameraDriver]:
    def make() -> CameraDriver:
        return open_driver(cfg)

    return make


def _sink(worker: StationWorker) -> Callable[[Frame | FrameFault], None]:
    return worker.submit
