"""A bounded on-disk journal of recent verdict payloads, keyed by ``(run_id, seq)``.

SQLite in WAL mode: every append is its own transaction, committed before the verdict is
sent, so a verdict that reached any subscriber is in the journal, and a process killed with
``kill -9`` leaves a consistent file (WAL recovery on the next open). ``synchronous=NORMAL``
keeps appends fast; a power cut may lose the last few committed rows but never corrupts
the file.

Writers and readers open their own :class:`Journal` (one SQLite connection each); WAL lets
the replay server read while the publisher writes.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from linevision.log import get_logger

log = get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    pos INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    station TEXT NOT NULL,
    cell_id INTEGER NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (run_id, seq)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_pos INTEGER NOT NULL
);
"""

PRUNE_EVERY = 1000


class JournalError(RuntimeError):
    """The journal file cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class RunSpan:
    """What the journal still holds of one run."""

    run_id: str
    first_seq: int | None
    last_seq: int | None


class Journal:
    """One connection to the journal file. Not shared between threads unless ``shared``."""

    def __init__(
        self,
        path: Path,
        max_entries: int = 100_000,
        *,
        readonly: bool = False,
        shared: bool = False,
    ) -> None:
        self.path = path
        self.max_entries = max_entries
        self._appended = 0
        self._lock = threading.Lock()
        try:
            if not readonly:
                path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=not shared, timeout=5.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if not readonly:
                self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot open journal {path}: {exc}"
            raise JournalError(msg) from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def begin_run(self, run_id: str) -> None:
        """Record that a run started (so a run with no verdicts yet is still known)."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO runs(run_id, started_pos) "
                    "VALUES (?, (SELECT COALESCE(MAX(pos), 0) FROM verdicts))",
                    (run_id,),
                )
            except sqlite3.Error as exc:
                msg = f"cannot write journal {self.path}: {exc}"
                raise JournalError(msg) from exc

    def append(self, run_id: str, seq: int, station: str, cell_id: int, payload: bytes) -> None:
        """Commit one verdict; returns once it is on disk (process-crash safe)."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO verdicts(run_id, seq, station, cell_id, payload) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (run_id, seq, station, cell_id, payload),
                )
            except sqlite3.Error as exc:
                msg = f"cannot write journal {self.path}: {exc}"
                raise JournalError(msg) from exc
            self._appended += 1
            if self._appended % PRUNE_EVERY == 0:
                self._prune()

    def _prune(self) -> None:
        row = self._db.execute("SELECT MAX(pos) FROM verdicts").fetchone()
        if row is None or row[0] is None:
            return
        cutoff = int(row[0]) - self.max_entries
        if cutoff > 0:
            self._db.execute("DELETE FROM verdicts WHERE pos <= ?", (cutoff,))
            self._db.execute(
                "DELETE FROM runs WHERE run_id NOT IN (SELECT DISTINCT run_id FROM verdicts) "
                "AND started_pos <= ?",
                (cutoff,),
            )

    def read(self, run_id: str, from_seq: int, to_seq: int | None, limit: int) -> list[bytes]:
        """Payloads of ``run_id`` with ``from_seq <= seq <= to_seq``, in seq order."""
        upper = to_seq if to_seq is not None else 2**62
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT payload FROM verdicts WHERE run_id = ? AND seq BETWEEN ? AND ? "
                    "ORDER BY seq LIMIT ?",
                    (run_id, from_seq, upper, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                msg = f"cannot read journal {self.path}: {exc}"
                raise JournalError(msg) from exc
        return [bytes(r[0]) for r in rows]

    def span(self, run_id: str) -> RunSpan | None:
        """First and last journaled seq of a run; None if the run is unknown."""
        with self._lock:
            try:
                first, last = self._db.execute(
                    "SELECT MIN(seq), MAX(seq) FROM verdicts WHERE run_id = ?", (run_id,)
                ).fetchone()
                known = self._db.execute(
                    "SELECT 1 FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
            except sqlite3.Error as exc:
                msg = f"cannot read journal {self.path}: {exc}"
                raise JournalError(msg) from exc
        if first is None and known is None:
            return None
        return RunSpan(run_id, first, last)

    def count(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()
        return int(row[0])
