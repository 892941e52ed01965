"""The reject bridge's shift register on disk: SQLite in WAL mode, one file per bridge.

The bridge writes behind: what changed in one event-loop turn (recorded verdicts, cells that
left at the station, the counter, the stream position) becomes one :class:`Batch`, and a
writer thread commits the batches in order, those within 2 ms of each other in one
transaction (a burst of 1,000 verdicts a second costs at most about 500 commits).
The event loop never waits for the disk (a WAL checkpoint's fsync can take 20 ms).
A process killed with ``kill -9`` leaves a consistent file (WAL recovery on the next open);
a verdict recorded but not yet committed is fetched again from the daemon's journal, because
the stream position saved beside it is that of the last committed verdict.
``synchronous=NORMAL``: a power cut may lose the last commits but never corrupts the file.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from linevision.bridges.reject_track import Changes, VerdictValue

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key INTEGER PRIMARY KEY,
    n INTEGER NOT NULL,
    verdicts TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value
);
"""

Meta = dict[str, int | str | None]

COALESCE_S = 0.002
"""The writer commits what arrives within this long of a batch in the same transaction."""


class StoreError(OSError):
    """The state file cannot be opened, read or written."""


@dataclass(frozen=True, slots=True)
class Saved:
    cells: list[tuple[int, dict[str, VerdictValue]]]
    """Oldest first."""
    meta: Meta


class RegisterStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.commits = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(path), isolation_level=None, timeout=5.0, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT COALESCE(MAX(n), 0) FROM cells").fetchone()
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot open the reject state file {path}: {exc}"
            raise StoreError(msg) from exc
        self._n = int(row[0])

    def close(self) -> None:
        self._db.close()

    def load(self) -> Saved:
        try:
            rows = self._db.execute("SELECT key, verdicts FROM cells ORDER BY n").fetchall()
            meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            msg = f"cannot read the reject state file {self.path}: {exc}"
            raise StoreError(msg) from exc
        cells = [(int(k), cast("dict[str, VerdictValue]", json.loads(v))) for k, v in rows]
        return Saved(cells, meta)

    def write(self, batches: list[Batch]) -> None:
        """One transaction for ``batches``, applied in order."""
        db = self._db
        try:
            db.execute("BEGIN")
            try:
                for b in batches:
                    self._apply(b)
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            msg = f"cannot write the reject state file {self.path}: {exc}"
            raise StoreError(msg) from exc
        self.commits += 1

    def _apply(self, b: Batch) -> None:
        db = self._db
        if b.cleared:
            db.execute("DELETE FROM cells")
        db.executemany("DELETE FROM cells WHERE key = ?", [(k,) for k in b.deletes])
        rows = []
        for key, verdicts in b.upserts:
            self._n += 1
            rows.append((key, self._n, verdicts))
        db.executemany(
            "INSERT INTO cells(key, n, verdicts) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET verdicts = excluded.verdicts",
            rows,
        )
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", b.meta.items())


@dataclass(frozen=True, slots=True)
class Batch:
    """What changed in one event-loop turn, serialised (the register may change on)."""

    cleared: bool
    upserts: list[tuple[int, str]]
    deletes: list[int]
    meta: Meta


def make_batch(changes: Changes, meta: Meta) -> Batch:
    upserts = []
    deletes = []
    for key, got in changes.cells.items():
        if got is None:
            deletes.append(key)
        else:
            upserts.append((key, json.dumps(got, separators=(",", ":"))))
    return Batch(changes.cleared, upserts, deletes, dict(meta))


class StoreWriter:
    """Commits batches on its own thread, in order; ``done(error)`` after each commit."""

    def __init__(self, store: RegisterStore, done: Callable[[StoreError | None], None]) -> None:
        self.store = store
        self._done = done
        self._queue: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="reject-store", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        self._queue.put(batch)

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batches = [first]
            until = time.monotonic() + COALESCE_S
            while (left := until - time.monotonic()) > 0:
                try:
                    nxt = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batches.append(nxt)
            try:
                self.store.write(batches)
            except StoreError as exc:
                self._done(exc)
            else:
                self._done(None)
