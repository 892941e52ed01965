"""The supervisor: builds the pipeline from a Config, runs it, shuts it down in order."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from linevision.bus.delivery import Delivery
from linevision.bus.publisher import VerdictPublisher
from linevision.cameras import CameraDriver, open_driver
from linevision.cameras.worker import AcquisitionWorker
from linevision.config import CameraConfig, Config, StationConfig
from linevision.daemon.memory import keep_large_buffers
from linevision.daemon.supervisor import Supervisor
from linevision.inference.session import SessionOptions
from linevision.log import get_logger
from linevision.scheduler.arbiter import CellArbiter
from linevision.scheduler.pool import EdfExecutor
from linevision.scheduler.worker import StationWorker
from linevision.stations import BuiltStation, build_station
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
    built: dict[str, BuiltStation] = field(default_factory=dict)
    """Per station, the build in force: its model and how long it took to load and warm."""
    cameras: dict[str, AcquisitionWorker] = field(default_factory=dict)
    recipe: str | None = None
    """The product recipe the configured stations stand for (set by ``daemon.recipes``)."""

    def __post_init__(self) -> None:
        self.listener_errors = 0
        self.delivery = Delivery()
        self.supervisor = Supervisor(self._send_raw, period_s=self.config.bus.heartbeat_s)
        self.publisher = VerdictPublisher(
            self.config.bus.publish,
            heartbeat_s=self.config.bus.heartbeat_s,
            state=self.state,
            on_published=self._notify_listeners,
            threads=self.supervisor.threads,
            on_death=self.supervisor.on_death,
        )
        self.challenge_sink: Callable[[Verdict], None] | None = None
        """Takes the verdicts of master samples (``Frame.challenge``), which never go on the
        verdict bus; called with the arbiter's lock held: it must only hand them over."""
        self.challenge_unclaimed = 0
        self.station_state: list[Callable[[], dict[str, dict[str, object]]]] = []
        """Per station, more fields for the heartbeat (a challenge's ``verified``)."""
        self.arbiter = CellArbiter(self._route)
        self.executor = EdfExecutor(self.config.inference.workers)

    def _route(self, verdict: Verdict) -> None:
        """The arbiter's hand-over (its lock held): line cells to the bus, master samples to
        the challenge that sent them."""
        if not verdict.challenge:
            self.publisher.publish(verdict)
            return
        sink = self.challenge_sink
        if sink is None:
            self.challenge_unclaimed += 1
            return
        sink(verdict)

    def _send_raw(self, topic: str, payload: bytes) -> None:
        self.publisher.send_raw(topic, payload)

    def _notify_listeners(self, verdict: Verdict, seq: int, latency_ms: float) -> None:
        for fn in self.listeners:
            try:
                fn(verdict, seq, latency_ms)
            except Exception:
                self.listener_errors += 1
                log.exception("listener_failed", listener=getattr(fn, "__qualname__", repr(fn)))

    def _build_station(self, sc: StationConfig) -> StationWorker:
        opts = SessionOptions.of(self.config.inference)
        camera = self.config.camera(sc.cameras[0])
        built = build_station(sc, self.models_root, opts, camera)
        worker = StationWorker(
            built.station, self.arbiter, sc.deadline_ms, sc.queue_size, self.executor
        )
        worker.recipe = self.recipe
        self.built[sc.name] = built
        return worker

    def use(self, built: BuiltStation, recipe: str | None) -> None:
        """Inspect the station's cells registered from now on with ``built.station``.

        Cells already queued keep the station (and recipe) they were registered with.
        """
        name = built.config.name
        worker = self.stations.get(name)
        if worker is None:
            msg = f"no station {name!r} in this service"
            raise KeyError(msg)
        worker.switch(built.station, recipe)
        self.built[name] = built

    def start(self) -> None:
        """Load and warm every model, bind the bus, then open the cameras.

        Models are loaded first so a bad model folder stops the start before any camera
        or socket is opened.
        """
        keep_large_buffers()
        sup = self.supervisor
        threads = self.config.inference.opencv_threads
        cv2.setNumThreads(threads if threads > 0 else -1)
        for sc in self.config.stations:
            self.stations[sc.name] = self._build_station(sc)
        self.delivery = Delivery.open(self.config)
        self.publisher.use_delivery(self.delivery.journal, self.delivery.curve)
        self.publisher.start()
        sup.watch_all(self.publisher)
        self.delivery.start_replay(self.publisher.current)
        if self.delivery.replay is not None:
            sup.watch_all(self.delivery.replay)
        self.arbiter.start()
        sup.watch_all(self.arbiter)
        self.executor.start()
        sup.watch_all(self.executor)
        # software triggers of every camera on one grid: a multi-camera station's views
        # of a cell are triggered together and share the cell id
        epoch = time.monotonic() + TRIGGER_LEAD_S
        # the bus thread's heartbeat reads ``self.cameras`` already: filled in one step
        cameras: dict[str, AcquisitionWorker] = {}
        for sc in self.config.stations:
            worker = self.stations[sc.name]
            for cam_id in sc.cameras:
                cam_cfg = self.config.camera(cam_id)
                cameras[cam_id] = AcquisitionWorker(
                    cam_cfg, _driver_factory(cam_cfg), _sink(worker), epoch=epoch
                )
        self.cameras.update(cameras)
        for cam in cameras.values():
            cam.start()
            sup.watch_all(cam)
        sup.start()
        log.info(
            "service_started",
            run_id=self.publisher.run_id,
            stations=list(self.stations),
            cameras=list(self.cameras),
        )

    def stop(self) -> None:
        """Cameras first (no new cells), then drain stations, then the bus."""
        t0 = time.monotonic()
        self.supervisor.stop()
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
        """The heartbeat's stations and cameras (on the bus thread, while ``start`` may run).

        ``list(d.items())`` copies in one step, so a dict that another thread fills (or a
        recipe switch changes) is never iterated while it changes size.
        """
        stations: dict[str, dict[str, object]] = {
            name: {
                "queue": w.queue_depth(),
                **w.counters.snapshot(),
                **w.identity(),
            }
            for name, w in list(self.stations.items())
        }
        for provide in list(self.station_state):
            for name, fields in provide().items():
                if name in stations:
                    stations[name].update(fields)
        cameras: dict[str, dict[str, object]] = {
            cam_id: cam.snapshot() for cam_id, cam in list(self.cameras.items())
        }
        return stations, cameras


def _driver_factory(cfg: CameraConfig) -> Callable[[], CameraDriver]:
    def make() -> CameraDriver:
        return open_driver(cfg)

    return make


def _sink(worker: StationWorker) -> Callable[[Frame | FrameFault], None]:
    return worker.submit
