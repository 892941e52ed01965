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

from linevision.config import Config
from linevision.daemon.archive import Archive
from linevision.daemon.control import ControlError, ControlServer, Handler
from linevision.daemon.lifecycle import DaemonHost, Lifecycle
from linevision.daemon.metrics import ServiceMetrics
from linevision.daemon.notify import (
    DEFAULT_STALL_S,
    Watchdog,
    notify,
    pipeline_problems,
    wait_cameras_open,
    watchdog_interval_s,
)
from linevision.daemon.recipes import RecipeManager
from linevision.daemon.service import Service
from linevision.log import get_logger
from linevision.paths import archive_dir, review_dir, state_dir

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
        self.lifecycle: Lifecycle | None = None

    def make_service(self) -> Service:
        svc = Service(self.config, models_root=self.models_root, recipe=self.recipes.active)
        self.service = svc
        self.metrics = ServiceMetrics(svc, extra=self._extra)
        svc.listeners.append(self.metrics.listener)
        folder = archive_dir(self.config.archive, self.env)
        if self.config.archive.enabled:
            kinds = {sc.name: sc.type for sc in self.config.stations}
            self.archive = Archive(
                folder,
                self.config.archive,
                svc.publisher.run_id,
                review=self.config.review,
                kinds=kinds,
            )
            svc.listeners.append(self.archive.listener)
        host = DaemonHost(svc, self.models_root, state_dir(self.env), folder)
        reviews = review_dir(self.config.review.dir, self.env)
        try:
            # the HMI writes the operators' reviews there, and may not create folders
            reviews.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("review_dir_unwritable", path=str(reviews), error=str(exc))
        self.lifecycle = Lifecycle(self.config, host)
        for collector in self.lifecycle.collectors():
            self.metrics.registry.register(collector)
        return svc

    def start(self) -> None:
        """Before ``service.start()``: the archive writer, metrics and control endpoints."""
        sup = self._svc().supervisor
        if self.archive is not None:
            self.archive.start()
            sup.watch_all(self.archive)
        if self.metrics is not None and self.config.metrics.enabled:
            try:
                self.metrics_address = self.metrics.serve(self.config.metrics.listen)
            except OSError as exc:
                log.exception(
                    "metrics_bind_failed", listen=self.config.metrics.listen, error=str(exc)
                )
            sup.watch_all(self.metrics)
        if self.config.control.enabled:
            handlers: dict[str, Handler] = {
                "recipe.switch": self._cmd_switch,
                "recipe.reload": lambda _req: self._cmd_reload(),
                "status": lambda _req: self.status(),
            }
            if self.lifecycle is not None:
                handlers.update(self.lifecycle.handlers())
            self.control = ControlServer(self.config.control.endpoint, handlers)
            try:
                self.control.start()
            except ControlError as exc:
                log.exception("control_bind_failed", error=str(exc))
                self.control = None
            else:
                sup.watch_all(self.control)

    def ready(self, stop: threading.Event, camera_timeout_s: float = 60.0) -> bool:
        """After ``service.start()``: wait for the cameras, READY=1, start the watchdog."""
        svc = self._svc()
        notify("STATUS=waiting for cameras")
        waiting = wait_cameras_open(
            lambda: {k: c.stats().state for k, c in svc.cameras.items()}, camera_timeout_s, stop
        )
        if waiting:
            log.error("cameras_not_open", cameras=waiting, timeout_s=camera_timeout_s)
            notify("STATUS=cameras not open: " + ", ".join(waiting))
            return False
        if self.lifecycle is not None:
            self.lifecycle.start()
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
        if self.service is not None:
            self.service.supervisor.stop()
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.control is not None:
            self.control.stop()
        if self.lifecycle is not None:
            self.lifecycle.stop()

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

    def _cmd_switch(self, req: dict[str, object]) -> dict[str, object]:
        name = req.get("name")
        if not isinstance(name, str) or not name:
            msg = "recipe.switch needs a name"
            raise ValueError(msg)
        result = self.recipes.switch(self._svc(), name)
        if self.lifecycle is not None:
            self.lifecycle.recipe_switched()
        notify(f"STATUS=running, recipe {name}")
        return result

    def _cmd_reload(self) -> dict[str, object]:
        result = self.recipes.reload(self._svc())
        if result is not None and self.lifecycle is not None:
            self.lifecycle.recipe_switched()
        return result or {"recipe": None}

    def _extra(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.service is not None:
            out["listener_errors"] = float(self.service.listener_errors)
            out["bus_state_errors"] = float(self.service.publisher.state_errors)
            out["bus_unsent"] = float(self.service.publisher.unsent)
            replay = self.service.delivery.replay
            if replay is not None:
                out["replay_bad_requests"] = float(replay.bad_input.count)
                out["replay_request_failures"] = float(replay.failures.count)
        if self.control is not None:
            out["control_bad_requests"] = float(self.control.bad_input.count)
            out["control_request_failures"] = float(self.control.failures.count)
        if self.archive is not None:
            out["archive_queue_depth"] = float(self.archive.queue_depth())
            for key in ("records", "images", "records_dropped", "images_dropped", "write_errors"):
                out[f"archive_{key}"] = float(self.archive.counters.get(key, 0))
        if self.watchdog is not None:
            out["watchdog_withheld"] = float(self.watchdog.withheld)
        out["recipe_switches"] = float(self.recipes.switches)
        if self.lifecycle is not None:
            out.update(self.lifecycle.extra())
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
    from linevision.daemon.recipes import RecipeError  # noqa: PLC0415
    from linevision.inference.manifest import ModelFileError  # noqa: PLC0415

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
    from linevision.hmi.server import HmiServer, review_api  # noqa: PLC0415
    from linevision.hmi.state import stations_of  # noqa: PLC0415

    folder = ops.archive.folder if ops.archive is not None else None
    review = None if folder is None else review_api(ops.config, folder, ops.env)
    server = HmiServer(
        ops.config.hmi,
        ops.config.bus.publish,
        folder,
        stations=stations_of(ops.config),
        review=review,
    )
    try:
        server.start()
    except RuntimeError as exc:
        log.exception("hmi_start_failed", error=str(exc))
        return None
    if ops.service is not None:
        ops.service.supervisor.watch_all(server)
    return server
