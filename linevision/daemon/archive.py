"""The verdict archive and audit trail: SQLite in WAL mode, JPEGs with overlay beside it.

Layout of ``archive.dir``::

    verdicts.sqlite3 (+ -wal, -shm)    one row per verdict, every station
    images/<YYYY-MM-DD>/<station>/<run_id>-<seq>.jpg    the picture (the row's ``image``)
    images/<YYYY-MM-DD>/<station>/<run_id>-<seq>-d<k>.jpg, .json    its crops, what they show
    raw/<YYYY-MM-DD>/<station>/<run_id>-<seq>.png    a review candidate's frame (PNG)
    raw/<YYYY-MM-DD>/<station>/<run_id>-<seq>/1.png .. 6.png    a six_view candidate's views
    raw/<YYYY-MM-DD>/<station>/<run_id>-<seq>/tile<k>.png, mask<k>.png, tiles.json
                                       a blue_film NG's tiles around its defects

The bus thread only enqueues (:meth:`Archive.listener` never blocks); one writer thread
encodes images, writes each one atomically (temp file, then rename) *before* the
transaction that records it commits, and commits in small batches. A ``kill -9`` leaves the
database as of its last commit (SQLite's WAL recovery) and at worst an image without a row,
which the next retention pass removes.
"""

from __future__ import annotations

import json
import queue
import shutil
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from linevision.config import ArchiveConfig
from linevision.daemon.metrics import stage_seconds
from linevision.daemon.overlay import Caption, encode_png
from linevision.daemon.pictures import PictureJob, write_pictures
from linevision.lifecycle.review import ok_confidence
from linevision.lifecycle_config import ReviewConfig
from linevision.log import get_logger
from linevision.paths import (
    IMAGES,
    RAW,
    picture_of,
    raw_cell_relpath,
    raw_relpath,
    sibling_relpaths,
)
from linevision.types import Crop, Image, Verdict

log = get_logger(__name__)

DB_NAME = "verdicts.sqlite3"
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


RAW_KINDS = ("pole_piece", "seal_edge", "six_view", "blue_film")
"""Stations whose review candidates keep what their model took, for a dataset: the frame, a
six-view cell's six views (``Decision.views``), or for a film frame (4000 x 18000, 133 MB as
PNG) its full-resolution tiles around its first defects (``Decision.tiles``)."""


@dataclass(slots=True)
class _Item:
    row: dict[str, object]
    picture: PictureJob | None
    raw: bool = False
    """Keep the frame too (PNG, no overlay): a cell an operator may review for a dataset."""
    views: tuple[Image, ...] = ()
    """With ``raw``, a multi-view cell's frames in view order, kept instead of the picture."""
    tiles: tuple[Crop, ...] = ()
    """With ``raw``, a film frame's tiles and masks, kept instead of the picture."""


class Archive:
    """Records every verdict of one run; ``listener`` goes into ``Service.listeners``."""

    def __init__(  # noqa: PLR0913  (the run's folder and settings, and what the lifecycle adds)
        self,
        folder: Path,
        cfg: ArchiveConfig,
        run_id: str,
        on_commit: Callable[[int], None] | None = None,
        *,
        review: ReviewConfig | None = None,
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.review = review
        """Low-margin OK cells keep their picture, and review candidates their frame."""
        self.kinds = kinds or {}
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

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,)

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
        review = self._review_candidate(v)
        image = v.image if v.image is not None and (review or self._wants_image(v)) else None
        job = None
        if image is not None:
            with self._images_lock:
                if self._images_pending >= self.cfg.image_queue_size:
                    image = None
                    self.counters["images_dropped"] += 1
                else:
                    self._images_pending += 1
        if image is not None:
            caption = Caption(d.verdict, d.reason, d.label, d.score, v.station, v.cell_id, v.recipe)
            job = PictureJob(
                v.station, self.run_id, seq, v.t_frame_ns, image, v.image_scale, caption,
                d.defects, d.detail,
            )  # fmt: skip
        try:
            raw = (
                review
                and self.review is not None
                and self.review.raw
                and self.kinds.get(v.station) in RAW_KINDS
            )
            kind = self.kinds.get(v.station)
            views = d.views if raw and kind == "six_view" else ()
            tiles = d.tiles if raw and kind == "blue_film" else ()
            keep = raw and bool(views or tiles or kind not in ("six_view", "blue_film"))
            self._queue.put_nowait(_Item(row, job, keep, views, tiles))
        except queue.Full:
            if job is not None:
                with self._images_lock:
                    self._images_pending -= 1
            self.counters["records_dropped"] += 1
            dropped = self.counters["records_dropped"]
        else:
            return
        if dropped == 1 or dropped % 1000 == 0:
            log.error("archive_queue_full", station=v.station, seq=seq, dropped=dropped)

    def _review_candidate(self, v: Verdict) -> bool:
        """An NG the model decided, or an OK it was not sure of (``review.ok_below``)."""
        if self.review is None:
            return False
        d = v.decision
        if d.verdict == "NG":
            return d.reason == "defect"
        confidence = ok_confidence(self.kinds.get(v.station, ""), d.score)
        return d.reason is None and confidence is not None and confidence < self.review.ok_below

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
            if item.picture is not None:
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
        if self._on_commit is not None:
            self._on_commit(last)

    def _save_image(self, item: _Item) -> None:
        assert item.picture is not None
        rel, size = write_pictures(self.folder, item.picture, self.cfg.jpeg_quality)
        if item.raw and item.views:
            cell = self.folder / raw_cell_relpath(rel)
            for i, view in enumerate(item.views, start=1):
                png = encode_png(view)
                _write_atomic(cell / f"{i}.png", png)
                size += len(png)  # retention keeps the views and the picture within max_bytes
        elif item.raw and item.tiles:
            size += _write_tiles(self.folder / raw_cell_relpath(rel), item.tiles)
        elif item.raw:
            png = encode_png(item.picture.image)
            _write_atomic(self.folder / raw_relpath(rel), png)
            size += len(png)  # retention keeps the frame and its picture within max_bytes
        item.row["image"] = rel
        item.row["image_bytes"] = size
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


def apply_retention(con: sqlite3.Connection, folder: Path, cfg: ArchiveConfig) -> dict[str, int]:
    """Delete rows older than ``max_age_days`` and the oldest images past ``max_bytes``."""
    cutoff = time.time_ns() - int(cfg.max_age_days * 86400e9)
    old = con.execute(
        "SELECT image FROM verdicts WHERE t_frame_ns < ? AND image IS NOT NULL", (cutoff,)
    ).fetchall()
    for (rel,) in old:
        _unlink_picture(folder, rel)
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
            _unlink_picture(folder, rel)
            with con:
                con.execute(
                    "UPDATE verdicts SET image = NULL, image_bytes = 0 WHERE id = ?", (row_id,)
                )
            total -= int(size)
            trimmed += 1
    _remove_empty_folders(folder)
    return {"rows_expired": rows, "images_expired": len(old), "images_trimmed": trimmed}


def _write_tiles(folder: Path, tiles: tuple[Crop, ...]) -> int:
    """A film frame's tiles (``tile<k>.png``), their masks (``mask<k>.png``) and where they
    lie in the frame (``tiles.json``); the bytes written."""
    size = 0
    where = []
    for k, tile in enumerate(tiles, start=1):
        for name, image in ((f"tile{k}.png", tile.pixels), (f"mask{k}.png", tile.mask)):
            if image is not None:
                png = encode_png(image)
                _write_atomic(folder / name, png)
                size += len(png)
        where.append({"tile": f"tile{k}.png", "x": tile.x, "y": tile.y})
    data = json.dumps(where).encode()
    _write_atomic(folder / "tiles.json", data)
    return size + len(data)


def _unlink_picture(folder: Path, rel: str) -> None:
    """A picture and the files that go with it (its crops and their description)."""
    (folder / rel).unlink(missing_ok=True)
    (folder / raw_relpath(rel)).unlink(missing_ok=True)
    shutil.rmtree(folder / raw_cell_relpath(rel), ignore_errors=True)
    for sibling in sibling_relpaths(rel):
        (folder / sibling).unlink(missing_ok=True)


def remove_orphans(con: sqlite3.Connection, folder: Path, grace_s: float = 60.0) -> int:
    """Delete files of pictures that no row names (a write cut short by a crash), older than
    ``grace_s``."""
    images = [r[0] for r in con.execute("SELECT image FROM verdicts WHERE image IS NOT NULL")]
    known = {*images, *(raw_relpath(i) for i in images), *(raw_cell_relpath(i) for i in images)}
    grace = time.time() - grace_s
    removed = 0
    for path in [*(folder / IMAGES).glob("*/*/*"), *(folder / RAW).glob("*/*/*")]:
        rel = path.relative_to(folder).as_posix()
        if rel not in known and picture_of(rel) not in known and path.stat().st_mtime < grace:
            if path.is_dir():  # a six-view cell's views
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    return removed


def _remove_empty_folders(folder: Path) -> None:
    for day in [*(folder / IMAGES).glob("*"), *(folder / RAW).glob("*")]:
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


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file, then rename: a crash never leaves half a file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
