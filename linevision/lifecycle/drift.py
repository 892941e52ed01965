"""The drift monitor: OK cells' scores and image statistics against a baseline, per station
and recipe, in the daemon's process and off its hot path.

The bus thread hands each OK verdict (a model decision, with its picture) to
:meth:`DriftMonitor.listener`, which only queues it (a full queue drops and counts); the
monitor's own thread (at nice 19, like a shadow model's) takes the statistics
(:mod:`linevision.lifecycle.stats`), keeps the last ``drift.window`` cells per station,
recipe and model, and every ``drift.every`` cells compares each statistic with the baseline
by its population stability index. The worst statistic of a station sets its level: ``ok``,
``warning`` (``drift_warning``), ``critical`` (``drift_critical``); ``no_baseline`` while
there is none. Alarms name the station, the statistic and its PSI, with the medians of
baseline and window.

The baseline of a station and recipe is the one ``linevision baseline capture`` took (the next
``cells`` OK cells, kept in ``baselines/<station>/<recipe>.json`` in the state folder), else
``baseline.json`` in the model's folder (the same format). The score is compared only with a
baseline of the same model (scores of two models do not compare); the image statistics with
any baseline of the recipe.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from linevision.lifecycle.challenge import write_json
from linevision.lifecycle.host import Host
from linevision.lifecycle.jobs import lower_priority
from linevision.lifecycle.stats import STATISTICS, image_stats, psi, score_stat
from linevision.lifecycle_config import DriftConfig
from linevision.log import get_logger
from linevision.types import Image, Verdict

log = get_logger(__name__)

BASELINES = "baselines"
MODEL_BASELINE = "baseline.json"
LEVELS = ("no_baseline", "ok", "warning", "critical")


@dataclass(frozen=True, slots=True)
class _Item:
    station: str
    recipe: str | None
    model_sha: str | None
    score: float | None
    image: Image


@dataclass
class Baseline:
    station: str
    recipe: str | None
    model_sha256: str | None
    captured_ns: int
    stats: dict[str, list[float]]
    source: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "schema": 1,
            "station": self.station,
            "recipe": self.recipe,
            "model_sha256": self.model_sha256,
            "captured_ns": self.captured_ns,
            "cells": max((len(v) for v in self.stats.values()), default=0),
            "stats": self.stats,
        }

    @classmethod
    def read(cls, path: Path) -> Baseline:
        """ValueError naming the file when it is not a baseline."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            stats = {
                str(k): [float(x) for x in v]
                for k, v in data["stats"].items()
                if k in STATISTICS and len(v) > 0
            }
            return cls(
                str(data["station"]),
                None if data.get("recipe") is None else str(data["recipe"]),
                None if data.get("model_sha256") is None else str(data["model_sha256"]),
                int(data["captured_ns"]),
                stats,
                str(path),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            msg = f"{path}: not a drift baseline ({exc})"
            raise ValueError(msg) from exc


@dataclass
class _Capture:
    id: str
    station: str
    recipe: str | None
    model_sha: str | None
    target: int
    stats: dict[str, list[float]] = field(default_factory=dict)
    done: bool = False
    path: str | None = None

    @property
    def cells(self) -> int:
        return max((len(v) for v in self.stats.values()), default=0)


@dataclass
class _Window:
    values: dict[str, deque[float]]
    since_eval: int = 0


@dataclass
class StationDrift:
    level: str
    recipe: str | None
    window: int
    psi: dict[str, float]
    medians: dict[str, tuple[float, float]]
    baseline: str | None


def baseline_path(state_dir: Path, station: str, recipe: str | None) -> Path:
    return state_dir / BASELINES / station / f"{recipe or 'default'}.json"


class DriftMonitor(Collector):
    def __init__(self, host: Host, cfg: DriftConfig) -> None:
        self.host = host
        self.cfg = cfg
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=cfg.queue_size)
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str | None, str | None], _Window] = {}
        self._baselines: dict[tuple[str, str | None, str], Baseline | None] = {}
        """Per station, recipe and model folder (a promoted model may bring its own)."""
        self._state: dict[str, StationDrift] = {}
        self._captures: dict[str, _Capture] = {}
        self._alarms: dict[str, tuple[tuple[str, str], ...]] = {}
        self.dropped = 0
        self.cells = 0
        self.niced = False
        self._thread = threading.Thread(target=self._loop, name="drift", daemon=True)

    # -- the bus thread ---------------------------------------------------------------------

    def listener(self, v: Verdict, _seq: int, _latency_ms: float) -> None:
        """Queue an OK cell decided by its model; never blocks."""
        d = v.decision
        if d.verdict != "OK" or d.reason is not None or v.image is None:
            return
        sha = None if d.model is None else d.model.sha256
        try:
            self._queue.put_nowait(_Item(v.station, v.recipe, sha, d.score, v.image))
        except queue.Full:
            self.dropped += 1

    # -- the monitor's thread ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,)

    def stop(self, timeout_s: float = 2.0) -> None:
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=timeout_s)
            except queue.Full:
                return
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        self.niced = lower_priority()
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._take(item)
            except Exception as exc:
                log.exception("drift_cell_failed", station=item.station, error=repr(exc)[:300])

    def _take(self, item: _Item) -> None:
        stats = image_stats(item.image, self.cfg.max_side)
        if item.score is not None:
            stats["score"] = score_stat(item.score)
        self.cells += 1
        self._capture(item, stats)
        key = (item.station, item.recipe, item.model_sha)
        win = self._windows.get(key)
        if win is None:
            win = _Window({s: deque(maxlen=self.cfg.window) for s in STATISTICS})
            self._windows[key] = win
        for name, value in stats.items():
            win.values[name].append(value)
        win.since_eval += 1
        n = len(win.values["brightness"])
        if win.since_eval >= self.cfg.every and n >= self.cfg.min_cells:
            win.since_eval = 0
            self._evaluate(item, win, n)

    def _capture(self, item: _Item, stats: dict[str, float]) -> None:
        with self._lock:
            cap = self._captures.get(item.station)
            if (
                cap is None
                or cap.done
                or (cap.recipe, cap.model_sha)
                != (
                    item.recipe,
                    item.model_sha,
                )
            ):
                return
            for name, value in stats.items():
                cap.stats.setdefault(name, []).append(value)
            if cap.cells < cap.target:
                return
            cap.done = True
        baseline = Baseline(cap.station, cap.recipe, cap.model_sha, time.time_ns(), dict(cap.stats))
        path = baseline_path(self.host.state_dir, cap.station, cap.recipe)
        try:
            write_json(path, baseline.to_json())
        except OSError as exc:
            log.exception("baseline_unwritable", path=str(path), error=str(exc))
        baseline.source = str(path)
        model_dir = str(self.host.live(cap.station).model_dir)
        with self._lock:
            cap.path = str(path)
            # a capture stands for the recipe whatever the model: every cached lookup of it
            for key in [k for k in self._baselines if k[:2] == (cap.station, cap.recipe)]:
                del self._baselines[key]
            self._baselines[(cap.station, cap.recipe, model_dir)] = baseline
        log.info("baseline_captured", station=cap.station, recipe=cap.recipe, cells=cap.cells)

    def _baseline(self, station: str, recipe: str | None) -> Baseline | None:
        live = self.host.live(station)
        key = (station, recipe, str(live.model_dir))
        with self._lock:
            if key in self._baselines:
                return self._baselines[key]
        found: Baseline | None = None
        for path in (
            baseline_path(self.host.state_dir, station, recipe),
            live.model_dir / MODEL_BASELINE,
        ):
            if not path.is_file():
                continue
            try:
                found = Baseline.read(path)
            except ValueError as exc:
                log.exception("baseline_unreadable", error=str(exc))
                continue
            break
        with self._lock:
            self._baselines[key] = found
        return found

    def _evaluate(self, item: _Item, win: _Window, n: int) -> None:
        base = self._baseline(item.station, item.recipe)
        values: dict[str, float] = {}
        medians: dict[str, tuple[float, float]] = {}
        if base is not None:
            for name in STATISTICS:
                if name == "score" and base.model_sha256 != item.model_sha:
                    continue
                ref, now = base.stats.get(name), list(win.values[name])
                if not ref or len(now) < self.cfg.min_cells:
                    continue
                values[name] = psi(ref, now)
                medians[name] = (float(np.median(ref)), float(np.median(now)))
        worst = max(values.values(), default=0.0)
        level = (
            "no_baseline"
            if base is None
            else "critical"
            if worst >= self.cfg.critical_psi
            else "warning"
            if worst >= self.cfg.warning_psi
            else "ok"
        )
        state = StationDrift(
            level, item.recipe, n, values, medians, None if base is None else base.source
        )
        with self._lock:
            self._state[item.station] = state
        self._update_alarms()

    def _update_alarms(self) -> None:
        with self._lock:
            states = dict(self._state)
        for level in ("warning", "critical"):
            code = f"drift_{level}"
            limit = self.cfg.warning_psi if level == "warning" else self.cfg.critical_psi
            drifts = []
            for station, st in sorted(states.items()):
                if st.level != level:
                    continue
                for name, value in sorted(st.psi.items(), key=lambda kv: -kv[1]):
                    if value >= limit:
                        base_median, window_median = st.medians[name]
                        drifts.append(
                            {
                                "station": station,
                                "recipe": st.recipe,
                                "statistic": name,
                                "psi": value,
                                "baseline_median": round(base_median, 4),
                                "window_median": round(window_median, 4),
                                "window": st.window,
                            }
                        )
            names = tuple((str(d["station"]), str(d["statistic"])) for d in drifts)
            if names == self._alarms.get(code, ()):
                continue
            self._alarms[code] = names
            if drifts:
                worst = max(drifts, key=lambda d: float(str(d["psi"])))
                self.host.raise_alarm(
                    code,
                    station=worst["station"],
                    statistic=worst["statistic"],
                    psi=worst["psi"],
                    drifts=drifts,
                )
            else:
                self.host.clear_alarm(code)

    # -- requests and state -----------------------------------------------------------------

    def capture(self, station: str, cells: int | None = None) -> dict[str, object]:
        """Take the next ``cells`` OK cells of ``station`` as its baseline (recipe in force)."""
        names = self.host.station_names()
        if station not in names:
            msg = f"station: unknown station {station!r} (stations: {', '.join(names)})"
            raise ValueError(msg)
        target = self.cfg.baseline_cells if cells is None else cells
        if not 10 <= target <= 100_000:
            msg = f"cells: must be 10..100000, got {target}"
            raise ValueError(msg)
        live = self.host.live(station)
        with self._lock:
            cap = self._captures.get(station)
            if cap is None or cap.done:
                cap = _Capture(
                    uuid.uuid4().hex,
                    station,
                    live.recipe,
                    live.worker.station.model.sha256,
                    target,
                )
                self._captures[station] = cap
        log.info("baseline_capture_started", station=station, recipe=cap.recipe, cells=target)
        return {"id": cap.id, "station": station, "recipe": cap.recipe, "cells": cap.target}

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {}
        with self._lock:
            states = dict(self._state)
            captures = dict(self._captures)
        for name in self.host.station_names():
            st = states.get(name)
            cap = captures.get(name)
            out[name] = {
                "level": "no_data" if st is None else st.level,
                "recipe": None if st is None else st.recipe,
                "window": 0 if st is None else st.window,
                "psi": {} if st is None else st.psi,
                "baseline": None if st is None else st.baseline,
                "capture": None
                if cap is None
                else {
                    "id": cap.id,
                    "cells": cap.cells,
                    "target": cap.target,
                    "done": cap.done,
                    "path": cap.path,
                },
            }
        return {"stations": out, "dropped": self.dropped, "cells": self.cells}

    def station_fields(self) -> dict[str, dict[str, object]]:
        """Per station, for the heartbeat: ``drift`` (level), its worst statistic and PSI."""
        with self._lock:
            states = dict(self._state)
        out: dict[str, dict[str, object]] = {}
        for name, st in states.items():
            worst = max(st.psi.items(), key=lambda kv: kv[1], default=(None, None))
            out[name] = {"drift": st.level, "drift_statistic": worst[0], "drift_psi": worst[1]}
        return out

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        psi_metric = GaugeMetricFamily(
            "linevision_drift_psi",
            "Population stability index of the last window of OK cells against the baseline",
            labels=["station", "statistic"],
        )
        level = GaugeMetricFamily(
            "linevision_drift_level",
            "0 no baseline, 1 ok, 2 warning, 3 critical",
            labels=["station"],
        )
        with self._lock:
            states = dict(self._state)
        for name, st in sorted(states.items()):
            level.add_metric([name], float(LEVELS.index(st.level)))
            for stat, value in sorted(st.psi.items()):
                psi_metric.add_metric([name, stat], value)
        dropped = CounterMetricFamily(
            "linevision_drift_dropped", "OK cells the drift monitor's full queue dropped"
        )
        dropped.add_metric([], self.dropped)
        yield from (psi_metric, level, dropped)
