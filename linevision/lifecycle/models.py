"""Which model each station runs: shadow a candidate, promote it, roll it back, audited.

``promote`` and ``rollback`` build the new station off the hot path (the line goes on), then
hand it to the station's worker in one step, as a recipe switch does: cells registered before
finish on the model they started with (every view of a multi-view cell included), cells after
go to the new one; nothing is dropped and ``seq`` has no gap. The choice is kept per recipe and
station in ``models.json`` in the state folder (a restart keeps it, a recipe switch applies the
recipe's own choice) with the models before it, which ``rollback`` returns to. Every switch is
a line of ``models/audit.jsonl`` in the archive: who, when, station, recipe, model old -> new
(name, version, sha256, folder) and the shadow report it was based on.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from linevision.config import Config
from linevision.lifecycle.challenge import write_json
from linevision.lifecycle.host import Host, LiveStation
from linevision.lifecycle.shadow import ShadowRunner
from linevision.lifecycle.shadow_report import shadow_report
from linevision.lifecycle_config import ShadowConfig
from linevision.log import get_logger
from linevision.types import ModelRef

log = get_logger(__name__)

STATE_FILE = "models.json"
AUDIT = Path("models") / "audit.jsonl"
DISAGREEING_IN_AUDIT = 50


class ModelError(ValueError):
    """A model command that cannot be done; the message says why."""


def load_choices(state_dir: Path) -> dict[str, object]:
    """``models.json``: ``{"active": {recipe: {station: dir}}, "history": {...}}``."""
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"active": {}, "history": {}}
    except (OSError, ValueError) as exc:
        log.exception("models_state_unreadable", path=str(path), error=str(exc))
        return {"active": {}, "history": {}}
    if not isinstance(data, dict):
        return {"active": {}, "history": {}}
    data.setdefault("active", {})
    data.setdefault("history", {})
    return data


def apply_choices(cfg: Config, recipe: str | None, choices: dict[str, object]) -> Config:
    """``cfg`` with the promoted model of each station under ``recipe`` (pure)."""
    active = choices.get("active")
    chosen = active.get(recipe or "", {}) if isinstance(active, dict) else {}
    if not isinstance(chosen, dict) or not chosen:
        return cfg
    stations = tuple(
        sc.model_copy(update={"model": Path(str(chosen[sc.name]))}) if sc.name in chosen else sc
        for sc in cfg.stations
    )
    return cfg.model_copy(update={"stations": stations})


def _ref(model: ModelRef, folder: Path) -> dict[str, object]:
    return {
        "name": model.name,
        "version": model.version,
        "sha256": model.sha256,
        "dir": str(folder),
    }


class ModelManager:
    """Shadow sessions, promotions and rollbacks of one daemon."""

    def __init__(self, host: Host, cfg: ShadowConfig) -> None:
        self.host = host
        self.cfg = cfg
        self.shadows: dict[str, ShadowRunner] = {}
        self._lock = threading.Lock()

    # -- shadow ----------------------------------------------------------------------------

    def shadow(self, station: str, model_dir: Path, user: str | None) -> dict[str, object]:
        """Run ``model_dir`` beside the active model of ``station`` (replacing a shadow)."""
        live = self._live(station)
        with self._lock:
            built = self.host.build(station, model_dir)
            self._stop_shadow(station)
            runner = ShadowRunner(
                candidate=built.station,
                candidate_dir=model_dir,
                active=live.worker.station,
                executor=live.worker.executor,
                folder=self.host.archive_dir,
                queue_size=self.cfg.queue_size,
                user=user,
            )
            runner.start()
            self.host.watch(runner.threads())
            self.shadows[station] = runner
            live.worker.observer = runner.observe
        log.info("shadow_started", station=station, model=str(model_dir), user=user, id=runner.id)
        return runner.status()

    def unshadow(self, station: str) -> dict[str, object]:
        self._live(station)
        with self._lock:
            runner = self._stop_shadow(station)
        if runner is None:
            msg = f"station {station!r} has no shadow model"
            raise ModelError(msg)
        return runner.status()

    def _stop_shadow(self, station: str) -> ShadowRunner | None:
        """Detach and stop the station's shadow (lock held)."""
        runner = self.shadows.pop(station, None)
        if runner is None:
            return None
        self.host.live(station).worker.observer = None
        self.host.unwatch(runner.threads())
        runner.stop()
        log.info("shadow_stopped", station=station, id=runner.id, **runner.counts)
        return runner

    def stop(self) -> None:
        with self._lock:
            for station in list(self.shadows):
                self._stop_shadow(station)

    def report(self, station: str | None = None, session: Path | None = None) -> dict[str, object]:
        """The report of ``station``'s running shadow, or of a session folder."""
        if session is not None:
            return shadow_report(session)
        if station is None:
            msg = "station: give a station (or a session folder)"
            raise ModelError(msg)
        self._live(station)
        runner = self.shadows.get(station)
        if runner is None:
            msg = (
                f"station {station!r} has no shadow model: start one with 'linevision model shadow'"
            )
            raise ModelError(msg)
        return shadow_report(runner.folder, dict(runner.counts))

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {}
        choices = load_choices(self.host.state_dir)
        for name in self.host.station_names():
            live = self.host.live(name)
            runner = self.shadows.get(name)
            out[name] = {
                "active": _ref(live.worker.station.model, live.model_dir),
                "recipe": live.recipe,
                "shadow": None if runner is None else runner.status(),
                "can_roll_back": bool(self._history(choices, live.recipe, name)),
            }
        return {"stations": out}

    # -- promote / roll back ---------------------------------------------------------------

    def promote(
        self, station: str, model_dir: Path | None, user: str | None, *, force: bool = False
    ) -> dict[str, object]:
        """Make the shadow's candidate (or ``model_dir``) the station's active model."""
        self._live(station)
        with self._lock:
            runner = self.shadows.get(station)
            target = model_dir or (None if runner is None else runner.candidate_dir)
            if target is None:
                msg = f"station {station!r}: no candidate (give --model, or shadow one first)"
                raise ModelError(msg)
            report = None
            if runner is not None and runner.candidate_dir == target:
                report = shadow_report(runner.folder, dict(runner.counts))
            compared = 0 if report is None else int(str(report["compared"]))
            if not force and compared < self.cfg.min_cells:
                msg = (
                    f"station {station!r}: the shadow of {target} compared {compared} cells; "
                    f"a promotion needs {self.cfg.min_cells} (shadow.min_cells), or --force"
                )
                raise ModelError(msg)
            record = self._switch(station, target, "promote", user, report, force=force)
            if runner is not None:
                self._stop_shadow(station)
        return record

    def rollback(self, station: str, user: str | None) -> dict[str, object]:
        """Back to the model the station ran before its last promotion."""
        live = self._live(station)
        with self._lock:
            choices = load_choices(self.host.state_dir)
            history = self._history(choices, live.recipe, station)
            if not history:
                msg = f"station {station!r}: no earlier model to roll back to"
                raise ModelError(msg)
            previous = history[-1]
            return self._switch(station, Path(str(previous["dir"])), "rollback", user, None)

    def _switch(  # noqa: PLR0913  (what, to what, who and why)
        self,
        station: str,
        target: Path,
        action: str,
        user: str | None,
        report: dict[str, object] | None,
        *,
        force: bool = False,
    ) -> dict[str, object]:
        live = self.host.live(station)
        old = _ref(live.worker.station.model, live.model_dir)
        t0 = time.perf_counter()
        built = self.host.build(station, target)
        self.host.use(built)
        ms = round((time.perf_counter() - t0) * 1000.0, 1)
        new = _ref(built.station.model, target)
        self._remember(station, live.recipe, action, old, new)
        if report is not None:
            cells = report.get("disagreeing_cells")
            if isinstance(cells, list):
                report = {**report, "disagreeing_cells": cells[:DISAGREEING_IN_AUDIT]}
        now = time.time_ns()
        record: dict[str, object] = {
            "t_ns": now,
            "time": datetime.fromtimestamp(now / 1e9, tz=UTC).isoformat(),
            "user": user,
            "action": action,
            "station": station,
            "recipe": live.recipe,
            "old": old,
            "new": new,
            "forced": force,
            "switch_ms": ms,
            "report": report,
        }
        path = self.host.archive_dir / AUDIT
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
            fh.flush()
        log.info(
            "model_promoted" if action == "promote" else "model_rolled_back",
            station=station,
            user=user,
            old=old["sha256"],
            new=new["sha256"],
            ms=ms,
        )
        return record

    def _remember(
        self,
        station: str,
        recipe: str | None,
        action: str,
        old: dict[str, object],
        new: dict[str, object],
    ) -> None:
        """The station's model under ``recipe`` in ``models.json``, with its history."""
        choices = load_choices(self.host.state_dir)
        active = choices["active"]
        assert isinstance(active, dict)
        active.setdefault(recipe or "", {})[station] = new["dir"]
        history = choices["history"]
        assert isinstance(history, dict)
        stack = history.setdefault(f"{recipe or ''}/{station}", [])
        if action == "promote":
            stack.append(old)
        elif stack:
            stack.pop()
        write_json(self.host.state_dir / STATE_FILE, choices)

    @staticmethod
    def _history(
        choices: dict[str, object], recipe: str | None, station: str
    ) -> list[dict[str, object]]:
        history = choices.get("history")
        stack = history.get(f"{recipe or ''}/{station}", []) if isinstance(history, dict) else []
        return [h for h in stack if isinstance(h, dict)] if isinstance(stack, list) else []

    def _live(self, station: str) -> LiveStation:
        names = self.host.station_names()
        if station not in names:
            msg = f"station: unknown station {station!r} (stations: {', '.join(names)})"
            raise ModelError(msg)
        return self.host.live(station)
