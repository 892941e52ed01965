"""A candidate model beside the active one, on the line's cells, never in their way.

The station's worker hands every frame it inspected, after the verdict left, to
:meth:`ShadowRunner.observe` (the worker's ``observer``), which only queues it (a full queue
skips the frame and counts it). The runner's thread runs at the lowest CPU priority
(``nice 19`` for that thread alone) and, before each frame, looks at the inference pool: a frame
that finds the line's jobs waiting for a thread is skipped and counted, so the candidate only
ever uses a core the line does not need. It never publishes anything: its decisions are
compared with the active ones, cell by cell, in the session's SQLite file; the cells where the
two disagree are kept with their pictures.

Session folder: ``<archive>/shadow/<station>/<session id>/`` with ``session.json`` (candidate,
active model, who started it), ``shadow.sqlite3`` (one row per compared cell) and
``images/`` (the disagreeing cells' frames, PNG, as the cameras gave them).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

import cv2

from linevision.lifecycle.challenge import write_json
from linevision.lifecycle.jobs import lower_priority
from linevision.log import get_logger
from linevision.scheduler.pool import EdfExecutor
from linevision.stations.base import Station
from linevision.types import Decision, Frame, PreprocessError

log = get_logger(__name__)

SHADOW = "shadow"
DB = "shadow.sqlite3"
_PARTIAL = 64
"""Cells whose frames and decisions are kept while they are incomplete."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    cell_id INTEGER PRIMARY KEY,
    t_ns INTEGER NOT NULL,
    active_verdict TEXT NOT NULL,
    active_reason TEXT,
    active_label TEXT,
    active_score REAL,
    candidate_verdict TEXT NOT NULL,
    candidate_reason TEXT,
    candidate_label TEXT,
    candidate_score REAL,
    agree INTEGER NOT NULL,
    images TEXT
);
"""


@dataclass(slots=True)
class _Cell:
    frames: list[Frame]
    active: Decision | None = None
    candidate: Decision | None = None
    skipped: bool = False


class ShadowRunner:
    """One candidate on one station, for one session."""

    def __init__(  # noqa: PLR0913  (the candidate, where it runs, and where it writes)
        self,
        *,
        candidate: Station,
        candidate_dir: Path,
        active: Station,
        executor: EdfExecutor,
        folder: Path,
        queue_size: int,
        user: str | None,
    ) -> None:
        self.candidate = candidate
        self.candidate_dir = candidate_dir
        self.station = active.name
        self.executor = executor
        self.id = uuid.uuid4().hex
        self.folder = folder / SHADOW / active.name / self.id
        self.folder.mkdir(parents=True, exist_ok=True)
        self.started_ns = time.time_ns()
        self.session = {
            "id": self.id,
            "station": active.name,
            "kind": active.kind,
            "candidate": _ref(candidate, candidate_dir),
            "active": _ref(active, None),
            "user": user,
            "started_ns": self.started_ns,
        }
        write_json(self.folder / "session.json", self.session)
        self._con = sqlite3.connect(self.folder / DB, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")  # a report reads while the shadow writes
        self._con.executescript(_SCHEMA)
        self._queue: deque[tuple[Frame, Decision | None]] = deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._cells: OrderedDict[int, _Cell] = OrderedDict()
        self._stop = False
        self.counts = {
            "observed": 0,
            "compared": 0,
            "agree": 0,
            "skipped_busy": 0,
            "skipped_full": 0,
            "errors": 0,
        }
        self.niced = False
        self._thread = threading.Thread(
            target=self._loop, name=f"shadow-{active.name}", daemon=True
        )

    # -- the pool thread (the worker's observer) ---------------------------------------------

    def observe(self, frame: Frame, decision: Decision | None, _station: Station) -> None:
        """Queue a frame the live station inspected; never blocks, never raises."""
        with self._cond:
            self.counts["observed"] += 1
            if len(self._queue) >= self._queue_size:
                self.counts["skipped_full"] += 1
                return
            self._queue.append((frame, decision))
            self._cond.notify()

    # -- the shadow thread -------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,)

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._con.close()

    def _loop(self) -> None:
        self.niced = lower_priority()
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait(0.5)
                if self._stop:
                    return
                frame, active = self._queue.popleft()
            try:
                self._take(frame, active)
            except Exception as exc:
                self.counts["errors"] += 1
                log.exception("shadow_failed", station=self.station, error=repr(exc)[:300])

    def _take(self, frame: Frame, active: Decision | None) -> None:
        cell = self._cells.get(frame.cell_id)
        if cell is None:
            cell = _Cell([])
            self._cells[frame.cell_id] = cell
            while len(self._cells) > _PARTIAL:
                self._cells.popitem(last=False)
        cell.frames.append(frame)
        if active is not None:
            cell.active = active
        if not cell.skipped and self.executor.pending() > 0:
            # the line's jobs wait for a thread: the candidate's cell gives way
            cell.skipped = True
            self.counts["skipped_busy"] += 1
        if not cell.skipped:
            cell.candidate = self._inspect(frame) or cell.candidate
        if cell.active is None:
            return
        self._cells.pop(frame.cell_id, None)
        if cell.skipped or cell.candidate is None:
            return
        self._compare(frame.cell_id, cell)

    def _inspect(self, frame: Frame) -> Decision | None:
        try:
            return self.candidate.inspect(frame)
        except PreprocessError as exc:
            return Decision.fault("bad_frame", str(exc)[:200], self.candidate.model)
        except Exception as exc:
            self.counts["errors"] += 1
            log.exception("shadow_model_error", station=self.station, error=repr(exc)[:300])
            return Decision.fault("model_error", type(exc).__name__, self.candidate.model)

    def _compare(self, cell_id: int, cell: _Cell) -> None:
        a, c = cell.active, cell.candidate
        assert a is not None
        assert c is not None
        agree = a.verdict == c.verdict
        images = None if agree else self._save(cell_id, cell)
        self._con.execute(
            "INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                cell_id,
                time.time_ns(),
                a.verdict,
                a.reason,
                a.label,
                a.score,
                c.verdict,
                c.reason,
                c.label,
                c.score,
                int(agree),
                images,
            ),
        )
        self._con.commit()
        self.counts["compared"] += 1
        self.counts["agree"] += int(agree)

    def _save(self, cell_id: int, cell: _Cell) -> str:
        """The disagreeing cell's pictures: its frames, or the station's reduced picture."""
        folder = self.folder / "images"
        folder.mkdir(exist_ok=True)
        pictures = (
            [("picture", cell.active.image)]
            if cell.active is not None and cell.active.image is not None
            else [(f.view_key.replace("#", "_"), f.image) for f in cell.frames]
        )
        names = []
        for view, image in pictures:
            name = f"{cell_id}_{view}.png"
            if cv2.imwrite(str(folder / name), image):
                names.append(f"images/{name}")
        return json.dumps(names)

    def status(self) -> dict[str, object]:
        return {
            **self.session,
            "folder": str(self.folder),
            "counts": dict(self.counts),
            "low_priority": self.niced,
        }


def _ref(station: Station, folder: Path | None) -> dict[str, object]:
    m = station.model
    return {
        "name": m.name,
        "version": m.version,
        "sha256": m.sha256,
        "dir": None if folder is None else str(folder),
    }
