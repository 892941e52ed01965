"""The lifecycle's parts in the daemon: built here, handed a :class:`DaemonHost`."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.registry import Collector

from linevision.config import Config
from linevision.daemon.control import Handler
from linevision.daemon.service import Service
from linevision.inference.session import SessionOptions
from linevision.lifecycle.challenge import ChallengeManager
from linevision.lifecycle.drift import DriftMonitor
from linevision.lifecycle.host import LiveStation
from linevision.lifecycle.inject import Injector
from linevision.lifecycle.jobs import JobThread
from linevision.lifecycle.models import ModelManager
from linevision.lifecycle.repeatability import Repeatability
from linevision.scheduler.worker import StationWorker
from linevision.stations import BuiltStation, build_station, resolve_model_dir

TRIGGERS_FROM_OUTSIDE = ("cli", "plc")


class DaemonHost:
    """What the lifecycle may use of a running :class:`Service` (the ``Host`` protocol)."""

    def __init__(
        self, service: Service, models_root: Path | None, state_dir: Path, archive_dir: Path
    ) -> None:
        self.service = service
        self.models_root = models_root
        self.state_dir = state_dir
        self.archive_dir = archive_dir
        inference = service.config.inference
        self._options = SessionOptions(
            intra_op_threads=inference.intra_op_threads,
            graph_optimization=inference.graph_optimization,
        )

    @property
    def run_id(self) -> str:
        return self.service.publisher.run_id

    def station_names(self) -> tuple[str, ...]:
        return tuple(self.service.stations)

    def live(self, station: str) -> LiveStation:
        worker = self.service.stations[station]
        sc = self.service.built[station].config
        cameras = tuple(self.service.config.camera(c) for c in sc.cameras)
        model_dir = resolve_model_dir(sc.model, self.models_root)
        return LiveStation(sc, cameras, worker, worker.recipe, model_dir)

    def twin(self, station: str) -> StationWorker:
        live = self.live(station)
        sc = live.config
        built = build_station(sc, self.models_root, self._options, live.cameras[0])
        svc = self.service
        return StationWorker(
            built.station, svc.arbiter, sc.deadline_ms, sc.queue_size, svc.executor
        )

    def build(self, station: str, model_dir: Path) -> BuiltStation:
        live = self.live(station)
        sc = live.config.model_copy(update={"model": model_dir})
        return build_station(sc, self.models_root, self._options, live.cameras[0])

    def use(self, built: BuiltStation) -> None:
        name = built.config.name
        self.service.use(built, self.service.stations[name].recipe)

    def watch(self, threads: Iterable[threading.Thread]) -> None:
        for t in threads:
            self.service.supervisor.watch(t)

    def unwatch(self, threads: Iterable[threading.Thread]) -> None:
        for t in threads:
            self.service.supervisor.unwatch(t)

    def send(self, topic: str, payload: bytes) -> None:
        self.service.publisher.send_raw(topic, payload)

    def raise_alarm(self, code: str, **detail: object) -> None:
        self.service.supervisor.raise_alarm(code, "error", **detail)

    def clear_alarm(self, code: str, **detail: object) -> None:
        self.service.supervisor.clear_alarm(code, **detail)


class Lifecycle:
    """Challenge (and the rest of the loop) for one daemon; ``handlers`` go on its control
    socket."""

    def __init__(self, cfg: Config, host: DaemonHost) -> None:
        self.host = host
        self.injector = Injector()
        self.jobs = JobThread()
        self.challenge = ChallengeManager(host, cfg.challenge, self.injector, self.jobs)
        service = host.service
        service.challenge_sink = self.injector.sink
        service.station_state.append(self.challenge.station_fields)
        self.models = ModelManager(host, cfg.shadow)
        self.repeatability = Repeatability(
            host, self.injector, self.jobs, cfg.challenge.sample_timeout_s
        )
        self.drift: DriftMonitor | None = None
        if cfg.drift.enabled:
            self.drift = DriftMonitor(host, cfg.drift)
            service.listeners.append(self.drift.listener)
            service.station_state.append(self.drift.station_fields)

    def collectors(self) -> list[Collector]:
        """Their metrics, for the daemon's registry."""
        return [self.challenge] + ([] if self.drift is None else [self.drift])

    def start(self) -> None:
        sup = self.host.service.supervisor
        self.jobs.start()
        sup.watch_all(self.jobs)
        if self.drift is not None:
            self.drift.start()
            sup.watch_all(self.drift)

    def stop(self) -> None:
        self.models.stop()
        self.jobs.stop()
        if self.drift is not None:
            self.drift.stop()

    def recipe_switched(self) -> None:
        """A candidate shadowed under the old recipe compares nothing under the new one."""
        self.models.stop()

    def handlers(self) -> dict[str, Handler]:
        return {
            "challenge.run": self._challenge_run,
            "challenge.status": self._challenge_status,
            "baseline.capture": self._baseline_capture,
            "drift.status": lambda _req: self._drift().status(),
            "repeatability.run": self._repeatability_run,
            "repeatability.status": lambda req: self.repeatability.status(_opt(req, "id")),
            "model.shadow": self._model_shadow,
            "model.unshadow": lambda req: self.models.unshadow(str(req["station"])),
            "model.report": self._model_report,
            "model.status": lambda _req: self.models.status(),
            "model.promote": self._model_promote,
            "model.rollback": lambda req: self.models.rollback(
                str(req["station"]), _opt(req, "user")
            ),
        }

    def _repeatability_run(self, req: dict[str, object]) -> dict[str, object]:
        n = str(req.get("n") or "30")
        if not n.isdigit():
            msg = f"n: must be a whole number, got {n[:20]!r}"
            raise ValueError(msg)
        return self.repeatability.request(
            str(req["station"]), Path(str(req["data"])), int(n), _opt(req, "user")
        )

    def _model_shadow(self, req: dict[str, object]) -> dict[str, object]:
        return self.models.shadow(str(req["station"]), Path(str(req["model"])), _opt(req, "user"))

    def _model_report(self, req: dict[str, object]) -> dict[str, object]:
        session = _opt(req, "session")
        return self.models.report(_opt(req, "station"), None if session is None else Path(session))

    def _model_promote(self, req: dict[str, object]) -> dict[str, object]:
        force = _opt(req, "force")
        if force not in (None, "true", "false"):
            msg = f"force: must be true or false, got {force[:20]!r}"
            raise ValueError(msg)
        model = _opt(req, "model")
        return self.models.promote(
            str(req["station"]),
            None if model is None else Path(model),
            _opt(req, "user"),
            force=force == "true",
        )

    def extra(self) -> dict[str, float]:
        return {
            "challenge_unclaimed": float(self.injector.unclaimed),
            "lifecycle_errors": float(self.jobs.errors),
        }

    def _drift(self) -> DriftMonitor:
        if self.drift is None:
            msg = "the drift monitor is off (drift.enabled: false)"
            raise ValueError(msg)
        return self.drift

    def _baseline_capture(self, req: dict[str, object]) -> dict[str, object]:
        cells = req.get("cells")
        if cells is not None and not str(cells).isdigit():
            msg = f"cells: must be a whole number, got {str(cells)[:40]!r}"
            raise ValueError(msg)
        return self._drift().capture(
            str(req["station"]), None if cells is None else int(str(cells))
        )

    def _challenge_run(self, req: dict[str, object]) -> dict[str, object]:
        trigger = str(req.get("trigger") or "cli")
        if trigger not in TRIGGERS_FROM_OUTSIDE:
            msg = f"trigger: must be one of {', '.join(TRIGGERS_FROM_OUTSIDE)}, got {trigger!r}"
            raise ValueError(msg)
        station = req.get("station")
        user = req.get("user")
        ids = self.challenge.request(
            None if station is None else str(station),
            "plc" if trigger == "plc" else "cli",
            None if user is None else str(user),
        )
        return {"runs": ids}

    def _challenge_status(self, req: dict[str, object]) -> dict[str, object]:
        station = req.get("station")
        if station is not None and station not in self.host.station_names():
            msg = f"station: unknown station {station!r}"
            raise ValueError(msg)
        return self.challenge.status(None if station is None else str(station))


def _opt(req: dict[str, object], key: str) -> str | None:
    value = req.get(key)
    return None if value is None else str(value)
