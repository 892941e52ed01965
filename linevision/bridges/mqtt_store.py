"""The MQTT bridge's outbox on disk: SQLite in WAL mode, one file per bridge.

What the bridge reads from the daemon (verdicts, lost ranges, a shift's final yield) is
committed here, in order, with the stream position it came from and the shift tallies, in
one transaction; then it is published. A row is acknowledged when the broker's PUBACK for it
(and for every row before it) has come; the acknowledged position is the only one that
advances on PUBACK. Acknowledged rows are kept ``resend_s`` more and sent again after a lost
connection (a broker may acknowledge before it has persisted), then pruned.

A process killed with ``kill -9`` leaves a consistent file (WAL recovery on the next open):
rows not yet committed are fetched again from the daemon's journal (the stream position is
that of the last committed row), acknowledgements not yet committed are published again
(consumers drop the duplicates on ``(run_id, seq)``). ``synchronous=NORMAL``: a power cut
may lose the last commits but never corrupts the file.

Not thread-safe: the bridge calls it from one thread (its store executor).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    run_id TEXT,
    seq INTEGER,
    acked_ns INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_acked ON outbox(acked_ns);
CREATE TABLE IF NOT EXISTS tally (
    shift TEXT NOT NULL,
    station TEXT NOT NULL,
    key TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (shift, station, key)
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value
);
"""


class StoreError(OSError):
    """The outbox file cannot be opened, read or written."""


@dataclass(frozen=True, slots=True)
class Row:
    """One message of the outbox; ``run_id``/``seq`` for verdicts (None for the rest)."""

    pos: int
    topic: str
    payload: bytes
    retain: bool
    run_id: str | None
    seq: int | None


@dataclass(frozen=True, slots=True)
class NewRow:
    topic: str
    payload: bytes
    retain: bool = False
    run_id: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Append:
    """One transaction's worth: rows in order, tally increments, the stream position."""

    rows: list[NewRow]
    tally: dict[tuple[str, str, str], int]
    """(shift start, station, key) -> increment; key ``OK`` or ``NG:<reason>``."""
    meta: dict[str, int | str | None]


@dataclass(frozen=True, slots=True)
class Dropped:
    """Unacknowledged rows dropped because the outbox was full (oldest first)."""

    count: int
    verdicts: list[tuple[str, int]]
    """(run_id, seq) of the verdicts among them."""


class Outbox:
    def __init__(self, path: Path, max_entries: int) -> None:
        self.path = path
        self.max_entries = max_entries
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), isolation_level=None, timeout=5.0, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot open the MQTT outbox {path}: {exc}"
            raise StoreError(msg) from exc

    def close(self) -> None:
        self._db.close()

    def _fail(self, what: str, exc: sqlite3.Error) -> StoreError:
        return StoreError(f"cannot {what} the MQTT outbox {self.path}: {exc}")

    def meta(self) -> dict[str, int | str | None]:
        try:
            return dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc

    def tally(self) -> dict[tuple[str, str, str], int]:
        try:
            rows = self._db.execute("SELECT shift, station, key, n FROM tally").fetchall()
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        return {(s, st, k): int(n) for s, st, k, n in rows}

    def append(self, batch: Append) -> int:
        """Commit ``batch``; returns the pos of its last row (0: none yet)."""
        db = self._db
        try:
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT INTO outbox(topic, payload, retain, run_id, seq) VALUES (?,?,?,?,?)",
                    [(r.topic, r.payload, int(r.retain), r.run_id, r.seq) for r in batch.rows],
                )
                db.executemany(
                    "INSERT INTO tally(shift, station, key, n) VALUES (?,?,?,?) "
                    "ON CONFLICT(shift, station, key) DO UPDATE SET n = n + excluded.n",
                    [(s, st, k, n) for (s, st, k), n in batch.tally.items()],
                )
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", batch.meta.items())
                last = self._last_assigned()
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail("write", exc) from exc
        return int(last)

    def ack(self, upto: int, t_ns: int, meta: dict[str, int | str | None]) -> None:
        """Rows up to ``upto`` are acknowledged (at ``t_ns``); ``meta`` names the position."""
        db = self._db
        try:
            db.execute("BEGIN")
            try:
                db.execute(
                    "UPDATE outbox SET acked_ns = ? WHERE pos <= ? AND acked_ns IS NULL",
                    (t_ns, upto),
                )
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail("write", exc) from exc

    def prune(self, acked_before_ns: int, keep_shifts: set[str]) -> Dropped:
        """Drop acknowledged rows older than ``acked_before_ns``, unacknowledged rows past
        ``max_entries`` (oldest first, reported), and tallies of shifts not in ``keep_shifts``."""
        db = self._db
        try:
            db.execute(
                "DELETE FROM outbox WHERE acked_ns IS NOT NULL AND acked_ns < ?", (acked_before_ns,)
            )
            n = db.execute("SELECT COUNT(*) FROM outbox WHERE acked_ns IS NULL").fetchone()[0]
            dropped = Dropped(0, [])
            if n > self.max_entries:
                excess = n - self.max_entries
                rows = db.execute(
                    "SELECT pos, run_id, seq FROM outbox WHERE acked_ns IS NULL "
                    "ORDER BY pos LIMIT ?",
                    (excess,),
                ).fetchall()
                db.execute("DELETE FROM outbox WHERE pos <= ? AND acked_ns IS NULL", (rows[-1][0],))
                dropped = Dropped(len(rows), [(r, s) for _, r, s in rows if r is not None])
            if keep_shifts:
                marks = ",".join("?" * len(keep_shifts))
                db.execute(f"DELETE FROM tally WHERE shift NOT IN ({marks})", tuple(keep_shifts))  # noqa: S608  (placeholders only)
        except sqlite3.Error as exc:
            raise self._fail("prune", exc) from exc
        return dropped

    def page(self, after: int, limit: int) -> list[Row]:
        """Rows with ``pos > after``, in order."""
        try:
            rows = self._db.execute(
                "SELECT pos, topic, payload, retain, run_id, seq FROM outbox WHERE pos > ? "
                "ORDER BY pos LIMIT ?",
                (after, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail("read", exc) from exc
        return [Row(int(p), t, bytes(b), bool(r), run, seq) for p, t, b, r, run, seq in rows]

    def first_kept(self) -> int | None:
        """The oldest row still here (acknowledged within ``resend_s`` or not at all)."""
        row = self._db.execute("SELECT MIN(pos) FROM outbox").fetchone()
        return None if row[0] is None else int(row[0])

    def first_unacked(self) -> int | None:
        row = self._db.execute("SELECT MIN(pos) FROM outbox WHERE acked_ns IS NULL").fetchone()
        return None if row[0] is None else int(row[0])

    def backlog(self) -> int:
        """Rows not acknowledged yet."""
        row = self._db.execute("SELECT COUNT(*) FROM outbox WHERE acked_ns IS NULL").fetchone()
        return int(row[0])

    def last_pos(self) -> int:
        """The last pos ever given to a row (0: none), pruned or not."""
        return self._last_assigned()

    def _last_assigned(self) -> int:
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return 0 if row is None else int(row[0])
