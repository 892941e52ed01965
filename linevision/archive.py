"""The verdict archive and audit trail: SQLite in WAL mode, JPEGs with overlay beside it.

Layout of ``archive.dir``::

    verdicts.sqlite3 (+ -wal, -shm)    one row per verdict, every station
    images/<YYYY-MM-DD>/<station>/<run_id>-<seq>.jpg

The bus thread only enqueues (:meth:`Archive.listener` never blocks); one writer thread
encodes images, writes each one atomically (temp file, then rename) *before* the
transaction that records it commits, and commits in small batches. A ``kill -9`` leaves the
database as of its last commit (SQLite's WAL recovery) and at worst an image without a row,
which the next retention pass removes.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from linevision.config import ArchiveConfig
from linevision.log import get_logger
from linevision.metrics import stage_seconds
from linevision.overlay import Caption, draw, encode_jpeg
from linevision.paths import state_dir
from linevision.types import Defect, Image, Verdict

log = get_logger(__name__)

DB_NAME = "verdicts.sqlite3"
IMAGES = "images"
_BATCH = 256
_BATCH_WAIT_S = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    station TEXT NOT NULL,
    cell_id INTEGER NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('OK', 'NG')),
    reason TEXT,
    label TEXT,
    score REAL,
    defects TEXT NOT NULL,
    model_name TEXT,
    model_version TEXT,
    model_sha256 TEXT,
    recipe TEXT,
    t_frame_ns INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    stages_ms TEXT NOT NULL,
    image TEXT,
    image_bytes INTEGER NOT NULL DEFAULT 0,
    UNIQUE (run_id, seq)
);
CREATE INDEX IF NOT EXISTS verdicts_cell ON verdicts (cell_id, station);
CREATE INDEX IF NOT EXISTS verdicts_time ON verdicts (t_frame_ns);
"""
COLUMNS = (
    "run_id",
    "seq",
    "station",
    "cell_id",
    "verdict",
    "reason",
    "label",
    "score",
    "defects",
    "model_name",
    "model_version",
    "model_sha256",
    "recipe",
    "t_frame_ns",
    "latency_ms",
    "stages_ms",
    "image",
    "image_bytes",
)
_INSERT = (
    f"INSERT OR IGNORE INTO verdicts ({', '.join(COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(COLUMNS))})"
)


def image_relpath(station: str, run_id: str, seq: int, t_frame_ns: int) -> str:
    """Where a verdict's image lives under the archive folder (also used by the HMI).

    >>> image_relpath("pole_piece", "ab12", 7, 0)
    'images/1970-01-01/pole_piece/ab12-0000000007.jpg'
    """
    day = datetime.fromtimestamp(t_frame_ns / 1e9, tz=UTC).strftime("%Y-%m-%d")
    return f"{IMAGES}/{day}/{station}/{run_id}-{seq:010d}.jpg"


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    else:
        con = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.executescript(_SCHEMA)
    con.row_factory = sqlite3.Row
    return con


@dataclass(slots=True)
class _Item:
    row: dict[str, object]
    image: Image | None
    caption: Caption | None
    defects: tuple[Defect, ...]


class Archive:
    """Records every verdict of one run; ``listener`` goes into ``Service.listeners``."""

    def __init__(
        self,
        folder: Path,
        cfg: ArchiveConfig,
        run_id: str,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.folder = folder
        self.cfg = cfg
        self.run_id = run_id
        self._on_commit = on_commit
        folder.mkdir(parents=True, exist_ok=True)
        (folder / IMAGES).mkdir(exist_ok=True)
        self._con = connect(folder / DB_NAME)
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=cfg.queue_size)
        self._images_pending = 0
        self._images_lock = threading.Lock()
        self._ok_seen: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.last_committed_seq = 0
        self._next_retention = time.monotonic()
        self._swept = False
        self._thread = threading.Thread(target=self._loop, name="archive-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, then close the database."""
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=timeout_s)
            except queue.Full:
                self.counters["stop_timeouts"] += 1
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._con.close()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def listener(self, v: Verdict, seq: int, latency_ms: float) -> None:
        """Called on the bus thread: build the row, enqueue, never block."""
        d = v.decision
        row: dict[str, object] = {
            "run_id": self.run_id,
            "seq": seq,
            "station": v.station,
            "cell_id": v.cell_id,
            "verdict": d.verdict,
            "reason": d.reason,
            "label": d.label,
            "score": d.score,
            "defects": json.dumps(
                [
                    {"kind": x.kind, "score": x.score, "x": x.x, "y": x.y, "w": x.w, "h": x.h}
                    for x in d.defects
                ]
            ),
            "model_name": None if d.model is None else d.model.name,
            "model_version": None if d.model is None else d.model.version,
            "model_sha256": None if d.model is None else d.model.sha256,
            "recipe": v.recipe,
            "t_frame_ns": v.t_frame_ns,
            "latency_ms": round(latency_ms, 3),
            "stages_ms": json.dumps(
                {k: round(s * 1000.0, 3) for k, s in stage_seconds(v, latency_ms).items()}
            ),
            "image": None,
            "image_bytes": 0,
        }
        image = v.image if v.image is not None and self._wants_image(v) else None
        caption = None
        if image is not None:
            with self._images_lock:
                if self._images_pending >= self.cfg.image_queue_size:
                    image = None
                    self.counters["images_dropped"] += 1
                else:
                    self._images_pending += 1
            caption = Caption(d.verdict, d.reason, d.label, d.score, v.station, v.cell_id, v.recipe)
        try:
            self._queue.put_nowait(_Item(row, image, caption, scaled(d.defects, v.image_scale)))
        except queue.Full:
            if image is not None:
                with self._images_lock:
                    self._images_pending -= 1
            self.counters["records_dropped"] += 1
            dropped = self.counters["records_dropped"]
        else:
            return
        if dropped == 1 or dropped % 1000 == 0:
            log.error("archive_queue_full", station=v.station, seq=seq, dropped=dropped)

    def _wants_image(self, v: Verdict) -> bool:
        if v.decision.verdict == "NG":
            return True
        every = self.cfg.ok_sample_every
        if every <= 0:
            return False
        self._ok_seen[v.station] += 1
        return self._ok_seen[v.station] % every == 1 or every == 1

    def _loop(self) -> None:
        while True:
            batch: list[_Item] = []
            stopping = self._fill(batch)
            if batch:
                self._write(batch)
            if stopping:
                return
            if time.monotonic() >= self._next_retention:
                self._next_retention = time.monotonic() + self.cfg.retention_interval_s
                self._retention_safely()

    def _fill(self, batch: list[_Item]) -> bool:
        """Wait up to 1 s for an item, then take more for ``_BATCH_WAIT_S``.

        True when the stop marker came.
        """
        wait = 1.0
        deadline = time.monotonic() + wait
        while len(batch) < _BATCH:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                return False
            if item is None:
                return True
            if not batch:
                deadline = time.monotonic() + _BATCH_WAIT_S
            batch.append(item)
        return False

    def _write(self, batch: list[_Item]) -> None:
        for item in batch:
            if item.image is not None:
                try:
                    self._save_image(item)
                except Exception as exc:
                    self.counters["image_errors"] += 1
                    log.exception("archive_image_failed", error=repr(exc), seq=item.row["seq"])
                finally:
                    with self._images_lock:
                        self._images_pending -= 1
        try:
            with self._con:
                self._con.execute("BEGIN")
                self._con.executemany(_INSERT, [[it.row[c] for c in COLUMNS] for it in batch])
        except sqlite3.Error as exc:
            self.counters["write_errors"] += len(batch)
            log.exception("archive_write_failed", error=str(exc), rows=len(batch))
            return
        self.counters["records"] += len(batch)
        last = int(str(batch[-1].row["seq"]))
        self.last_committed_seq = last
        if self._on_commit is not None:
            self._on_commit(last)

    def _save_image(self, item: _Item) -> None:
        assert item.image is not None
        assert item.caption is not None
        row = item.row
        rel = image_relpath(
            str(row["station"]), self.run_id, int(str(row["seq"])), int(str(row["t_frame_ns"]))
        )
        data = encode_jpeg(draw(item.image, item.caption, item.defects), self.cfg.jpeg_quality)
        path = self.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
        tmp.replace(path)
        row["image"] = rel
        row["image_bytes"] = len(data)
        self.counters["images"] += 1

    def _retention_safely(self) -> None:
        try:
            removed = apply_retention(self._con, self.folder, self.cfg)
            if not self._swept:
                removed["orphans"] = remove_orphans(self._con, self.folder)
                self._swept = True
        except (OSError, sqlite3.Error) as exc:
            log.exception("archive_retention_failed", error=str(exc))
            return
        if any(removed.values()):
            log.info("archive_retention", **removed)


def scaled(defects: tuple[Defect, ...], scale: float) -> tuple[Defect, ...]:
    """Defect boxes in the pixels of a picture ``scale`` times the frame's size.

    >>> scaled((Defect("film_anomaly", 1.0, 800, 160, 48, 16),), 0.125)
    (Defect(kind='film_anomaly', score=1.0, x=100, y=20, w=6, h=2),)
    """
    if scale == 1.0:
        return defects
    return tuple(
        replace(
            d,
            x=int(d.x * scale),
            y=int(d.y * scale),
            w=max(1, round(d.w * scale)),
            h=max(1, round(d.h * scale)),
        )
        for d in defects
    )


def apply_retention(con: sqlite3.Connection, folder: Path, cfg: ArchiveConfig) -> dict[str, int]:
    """Delete rows older than ``max_age_days`` and the oldest images past ``max_bytes``."""
    cutoff = time.time_ns() - int(cfg.max_age_days * 86400e9)
    old = con.execute(
        "SELECT image FROM verdicts WHERE t_frame_ns < ? AND image IS NOT NULL", (cutoff,)
    ).fetchall()
    for (rel,) in old:
        (folder / rel).unlink(missing_ok=True)
    with con:
        con.execute("BEGIN")
        rows = con.execute("DELETE FROM verdicts WHERE t_frame_ns < ?", (cutoff,)).rowcount
    total = int(con.execute("SELECT COALESCE(SUM(image_bytes), 0) FROM verdicts").fetchone()[0])
    trimmed = 0
    while total > cfg.max_bytes:
        oldest = con.execute(
            "SELECT id, image, image_bytes FROM verdicts WHERE image IS NOT NULL "
            "ORDER BY t_frame_ns LIMIT 500"
        ).fetchall()
        if not oldest:
            break
        for row_id, rel, size in oldest:
            if total <= cfg.max_bytes:
                break
            (folder / rel).unlink(missing_ok=True)
            with con:
                con.execute(
                    "UPDATE verdicts SET image = NULL, image_bytes = 0 WHERE id = ?", (row_id,)
                )
            total -= int(size)
            trimmed += 1
    _remove_empty_folders(folder)
    return {"rows_expired": rows, "images_expired": len(old), "images_trimmed": trimmed}


def remove_orphans(con: sqlite3.Connection, folder: Path, grace_s: float = 60.0) -> int:
    """Delete images that no row names (a write cut short by a crash), older than ``grace_s``."""
    known = {r[0] for r in con.execute("SELECT image FROM verdicts WHERE image IS NOT NULL")}
    grace = time.time() - grace_s
    removed = 0
    for path in (folder / IMAGES).glob("*/*/*"):
        rel = path.relative_to(folder).as_posix()
        if rel not in known and path.stat().st_mtime < grace:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _remove_empty_folders(folder: Path) -> None:
    for day in (folder / IMAGES).glob("*"):
        for station in day.glob("*"):
            if station.is_dir() and not any(station.iterdir()):
                station.rmdir()
        if day.is_dir() and not any(day.iterdir()):
            day.rmdir()


def read_history(folder: Path, cell_id: int, station: str | None = None) -> list[dict[str, object]]:
    """Every recorded verdict of ``cell_id`` (all stations unless ``station``), oldest first."""
    db = folder / DB_NAME
    if not db.is_file():
        msg = f"no archive at {db}"
        raise FileNotFoundError(msg)
    con = connect(db, read_only=True)
    try:
        sql = "SELECT * FROM verdicts WHERE cell_id = ?"
        args: list[object] = [cell_id]
        if station is not None:
            sql += " AND station = ?"
            args.append(station)
        rows = con.execute(sql + " ORDER BY t_frame_ns, seq", args).fetchall()
    finally:
        con.close()
    return [dict(r) for r in rows]


def archive_dir(cfg: ArchiveConfig, env: Mapping[str, str] | None = None) -> Path:
    """``archive.dir``, else ``archive/`` in the state folder (see :func:`state_dir`)."""
    return cfg.dir if cfg.dir is not None else state_dir(env) / "archive"
