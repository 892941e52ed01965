"""What runs around the pipeline on a line PC: archive, metrics, recipes, control, systemd.

``linevision run`` uses it as::

    ops = Operations(cfg, models_root)          # picks the recipe, opens the archive
    service = ops.make_service()                # Service with archive + metrics listeners
    ops.start()  /  service.start()  /  ops.ready(stop)    # READY=1, watchdog
    ...          ops.reload()  on SIGHUP
    ops.stopping()  /  service.stop()  /  ops.close()
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from linevision.archive import Archive, archive_dir
from linevision.config import Config
from linevision.control import ControlError, ControlServer
from linevision.log import get_logger
from linevision.metrics import ModelTiming, ServiceMetrics
from linevision.notify import (
    DEFAULT_STALL_S,
    Watchdog,
    notify,
    pipeline_problems,
    wait_cameras_open,
    watchdog_interval_s,
)
from linevision.paths import state_dir
from linevision.recipes import RecipeManager
from linevision.service import Service

if TYPE_CHECKING:
    from linevision.hmi.server import HmiServer

log = get_logger(__name__)


class Operations:
    def __init__(
        self,
        cfg: Config,
        models_root: Path | None,
        env: Mapping[str, str] | None = None,
        stall_s: float = DEFAULT_STALL_S,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.base = cfg
        self.recipes = RecipeManager(cfg, state_dir(self.env), models_root)
        self.config = self.recipes.initial()
        self.models_root = models_root
        self.stall_s = stall_s
        self.service: Service | None = None
        self.archive: Archive | None = None
        self.metrics: ServiceMetrics | None = None
        self.metrics_address: tuple[str, int] | None = None
        self.control: ControlServer | None = None
        self.watchdog: Watchdog | None = None
        self._models: dict[str, ModelTiming] = {}

    def make_service(self) -> Service:
        svc = Service(self.config, models_root=self.models_root, recipe=self.recipes.active)
        self.service = svc
        self.metrics = ServiceMetrics(svc, models=self.model_timings, extra=self._extra)
        svc.listeners.append(self.metrics.listener)
        if self.config.archive.enabled:
            folder = archive_dir(self.config.archive, self.env)
            self.archive = Archive(folder, self.config.archive, svc.publisher.run_id)
            svc.listeners.append(self.archive.listener)
        return svc

    def start(self) -> None:
        """Before ``service.start()``: the archive writer, metrics and control endpoints."""
        if self.archive is not None:
            self.archive.start()
        if self.metrics is not None and self.config.metrics.enabled:
            try:
                self.metrics_address = self.metrics.serve(self.config.metrics.listen)
            except OSError as exc:
                log.exception(
                    "metrics_bind_failed", listen=self.config.metrics.listen, error=str(exc)
                )
        if self.config.control.enabled:
            self.control = ControlServer(
                self.config.control.endpoint,
                {
                    "recipe.switch": self._cmd_switch,
                    "recipe.reload": lambda _req: self._cmd_reload(),
                    "status": lambda _req: self.status(),
                },
            )
            try:
                self.control.start()
            except ControlError as exc:
                log.exception("control_bind_failed", error=str(exc))
                self.control = None

    def ready(self, stop: threading.Event, camera_timeout_s: float = 60.0) -> bool:
        """After ``service.start()``: wait for the cameras, READY=1, start the watchdog."""
        svc = self._svc()
        for name, worker in svc.stations.items():
            self._remember_model(name, worker.station)
        notify("STATUS=waiting for cameras")
        waiting = wait_cameras_open(
            lambda: {k: c.stats().state for k, c in svc.cameras.items()}, camera_timeout_s, stop
        )
        if waiting:
            log.error("cameras_not_open", cameras=waiting, timeout_s=camera_timeout_s)
            notify("STATUS=cameras not open: " + ", ".join(waiting))
            return False
        notify(
            f"READY=1\nSTATUS=running, recipe {self.recipes.active or '-'}\nMAINPID={os.getpid()}"
        )
        log.info("ready", recipe=self.recipes.active)
        interval = watchdog_interval_s(self.env)
        if interval is not None:
            self.watchdog = Watchdog(lambda: pipeline_problems(svc, self.stall_s), interval)
            self.watchdog.start()
        return True

    def reload(self) -> dict[str, object] | None:
        """SIGHUP: reload the active recipe from disk."""
        notify("RELOADING=1")
        try:
            return self._cmd_reload()
        finally:
            notify(f"READY=1\nSTATUS=running, recipe {self.recipes.active or '-'}")

    def stopping(self) -> None:
        notify("STOPPING=1")
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.control is not None:
            self.control.stop()

    def close(self) -> None:
        """After ``service.stop()``: record the last verdicts, close the endpoints."""
        if self.archive is not None:
            self.archive.stop()
        if self.metrics is not None:
            self.metrics.close()

    def status(self) -> dict[str, object]:
        svc = self._svc()
        return {
            "run_id": svc.publisher.run_id,
            "recipe": self.recipes.active,
            "seq": svc.publisher.seq,
            "problems": pipeline_problems(svc, self.stall_s),
        }

    def model_timings(self) -> list[ModelTiming]:
        return list(self._models.values())

    def _cmd_switch(self, req: dict[str, object]) -> dict[str, object]:
        name = req.get("name")
        if not isinstance(name, str) or not name:
            msg = "recipe.switch needs a name"
            raise ValueError(msg)
        result = self.recipes.switch(self._svc().stations, name)
        self._refresh_models()
        notify(f"STATUS=running, recipe {name}")
        return result

    def _cmd_reload(self) -> dict[str, object]:
        result = self.recipes.reload(self._svc().stations)
        self._refresh_models()
        return result or {"recipe": None}

    def _refresh_models(self) -> None:
        for name, worker in self._svc().stations.items():
            self._remember_model(name, worker.station)

    def _remember_model(self, name: str, station: object) -> None:
        session = getattr(station, "session", None)
        ref = getattr(session, "ref", None)
        if session is None or ref is None:
            return
        self._models[name] = ModelTiming(
            station=name,
            model=ref.name,
            version=ref.version,
            load_s=float(getattr(session, "load_ms", 0.0)) / 1000.0,
            warm_up_s=float(getattr(session, "warm_up_ms", None) or 0.0) / 1000.0,
        )

    def _extra(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.service is not None:
            out["listener_errors"] = float(self.service.listener_errors)
        if self.archive is not None:
            out["archive_queue_depth"] = float(self.archive.queue_depth())
            for key in ("records", "images", "records_dropped", "images_dropped", "write_errors"):
                out[f"archive_{key}"] = float(self.archive.counters.get(key, 0))
        if self.watchdog is not None:
            out["watchdog_withheld"] = float(self.watchdog.withheld)
        out["recipe_switches"] = float(self.recipes.switches)
        return out

    def _svc(self) -> Service:
        if self.service is None:
            msg = "make_service() first"
            raise RuntimeError(msg)
        return self.service


class DaemonStartError(Exception):
    """The daemon could not start (model, recipe, socket or cameras); it has cleaned up."""


def run_daemon(
    cfg: Config,
    models_root: Path | None,
    stop: threading.Event,
    reload: threading.Event,
    *,
    hmi: bool = False,
) -> None:
    """Run until ``stop`` is set; ``reload`` (SIGHUP) reloads the active recipe."""
    from linevision.inference.manifest import ModelFileError  # noqa: PLC0415
    from linevision.recipes import RecipeError  # noqa: PLC0415

    try:
        ops = Operations(cfg, models_root)
    except RecipeError as exc:
        raise DaemonStartError(str(exc)) from exc
    service = ops.make_service()
    server = None
    try:
        ops.start()
        service.start()
        if hmi:
            server = _embedded_hmi(ops)
        ready = ops.ready(stop)
    except (ModelFileError, RuntimeError, ValueError, OSError) as exc:
        log.exception("start_failed", error=str(exc))
        ops.stopping()
        service.stop()
        ops.close()
        raise DaemonStartError(str(exc)) from exc
    try:
        if not ready and not stop.is_set():
            msg = "cameras did not open in time"
            raise DaemonStartError(msg)
        while not stop.wait(0.25):
            if reload.is_set():
                reload.clear()
                try:
                    ops.reload()
                except (RecipeError, ModelFileError, OSError) as exc:
                    log.exception("recipe_reload_failed", error=str(exc))
    finally:
        ops.stopping()
        service.stop()
        ops.close()
        if server is not None:
            server.stop()


def _embedded_hmi(ops: Operations) -> HmiServer | None:
    """The demo's HMI in this process; a busy port is logged, not fatal."""
    from linevision.hmi.server import HmiServer  # noqa: PLC0415

    folder = ops.archive.folder if ops.archive is not None else None
    server = HmiServer(ops.config.hmi, ops.config.bus.publish, folder)
    try:
        server.start()
    except RuntimeError as exc:
        log.exception("hmi_start_failed", error=str(exc))
        return None
    return server
