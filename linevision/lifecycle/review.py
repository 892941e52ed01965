"""Operator review: which archived cells to look at, and what the operators said of them.

The candidates are the archive's NG cells decided by the model (reason ``defect``) and its
low-margin OK cells (confidence below ``review.ok_below``), with their pictures. An operator
confirms an NG, marks it a false reject, confirms a low-margin OK or marks it a missed
defect; each review is a row of ``review.sqlite3`` (in ``review.dir``) with the operator's
name and the label the cell takes in a dataset. Reviews are never changed: a later review of
the same cell is a new row, and the latest counts. Only the HMI writes here (the archive
stays the daemon's).
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from linevision.paths import raw_cell_relpath, raw_relpath
from linevision.synth.contract import LABELS

DB_NAME = "review.sqlite3"
ARCHIVE_DB = "verdicts.sqlite3"
DECISIONS = ("confirm_ng", "false_reject", "confirm_ok", "missed_defect")
FOR_VERDICT = {"NG": ("confirm_ng", "false_reject"), "OK": ("confirm_ok", "missed_defect")}
OPERATOR = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
MAX_NOTE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    station TEXT NOT NULL,
    cell_id INTEGER NOT NULL,
    t_frame_ns INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    decision TEXT NOT NULL,
    label TEXT NOT NULL,
    operator TEXT NOT NULL,
    note TEXT,
    t_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_cell ON reviews (run_id, seq);
CREATE INDEX IF NOT EXISTS reviews_station ON reviews (station, t_frame_ns);
"""


class ReviewError(ValueError):
    """A review that cannot be recorded; ``param`` names the field."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(f"{param}: {problem}")
        self.param = param


@dataclass(frozen=True, slots=True)
class StationRules:
    """What the review needs of a station: its kind and the labels that pass."""

    kind: str
    ok_labels: tuple[str, ...] = ("Normal",)

    def ok_label(self) -> str:
        return self.ok_labels[0] if self.kind == "pole_piece" else "OK"

    def defect_labels(self) -> tuple[str, ...]:
        """The labels a defective cell may take in a dataset."""
        if self.kind == "pole_piece":
            return tuple(c for c in LABELS["pole_piece"] if c not in self.ok_labels)
        return ("NG",)


def ok_confidence(kind: str, score: float | None) -> float | None:
    """How sure the model was of an OK verdict (None: its score does not say).

    >>> ok_confidence("pole_piece", 0.62), ok_confidence("six_view", 0.3)
    (0.62, 0.7)
    >>> ok_confidence("blue_film", 0.1) is None
    True
    """
    if score is None:
        return None
    if kind == "pole_piece":
        return score
    if kind in ("seal_edge", "six_view"):
        return round(1.0 - score, 9)
    return None


def connect(folder: Path) -> sqlite3.Connection:
    folder.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(folder / DB_NAME, timeout=5.0, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(_SCHEMA)
    con.row_factory = sqlite3.Row
    return con


def latest_reviews(
    folder: Path, station: str | None = None, since_ns: int = 0
) -> dict[tuple[str, int], dict[str, object]]:
    """The latest review of each cell (``(run_id, seq)``) of ``station`` since ``since_ns``."""
    if not (folder / DB_NAME).is_file():
        return {}
    con = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True, timeout=5.0)
    con.row_factory = sqlite3.Row
    try:
        sql = "SELECT * FROM reviews WHERE t_frame_ns >= ?"
        args: list[object] = [since_ns]
        if station is not None:
            sql += " AND station = ?"
            args.append(station)
        rows = con.execute(sql + " ORDER BY id", args).fetchall()
    finally:
        con.close()
    return {(str(r["run_id"]), int(r["seq"])): dict(r) for r in rows}


def candidates(  # noqa: PLR0913  (the archive, the station's rules and the filter)
    archive: Path,
    review: Path,
    station: str,
    rules: StationRules,
    *,
    ok_below: float,
    since_ns: int = 0,
    limit: int = 100,
) -> list[dict[str, object]]:
    """The station's cells to review, newest first, each with its latest review."""
    db = archive / ARCHIVE_DB
    if not db.is_file():
        return []
    sql = (
        "SELECT run_id, seq, station, cell_id, verdict, reason, label, score, recipe, "
        "model_name, model_version, t_frame_ns, image FROM verdicts "
        "WHERE station = ? AND t_frame_ns >= ? AND image IS NOT NULL AND "
    )
    ok = _low_margin_sql(rules.kind)
    sql += f"((verdict = 'NG' AND reason = 'defect') OR {ok}) ORDER BY t_frame_ns DESC LIMIT ?"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    con.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in con.execute(sql, (station, since_ns, ok_below, limit))]
    finally:
        con.close()
    reviews = latest_reviews(review, station, since_ns)
    for r in rows:
        r["confidence"] = ok_confidence(rules.kind, r["score"]) if r["verdict"] == "OK" else None
        rel = str(r["image"])
        r["raw"] = (archive / raw_relpath(rel)).is_file() or (
            archive / raw_cell_relpath(rel)
        ).is_dir()
        r["review"] = reviews.get((str(r["run_id"]), int(r["seq"])))
        r["decisions"] = list(FOR_VERDICT[str(r["verdict"])])
    return rows


def _low_margin_sql(kind: str) -> str:
    """The SQL condition of a low-margin OK cell (``?`` is ``ok_below``)."""
    if kind == "pole_piece":
        return "(verdict = 'OK' AND reason IS NULL AND score < ?)"
    if kind in ("seal_edge", "six_view"):
        return "(verdict = 'OK' AND reason IS NULL AND 1.0 - score < ?)"
    return "(verdict = 'OK' AND ? < 0)"  # no confidence to read: no low-margin OK


def record(  # noqa: PLR0913  (the cell, the decision, its label, who, why)
    archive: Path,
    review: Path,
    rules: dict[str, StationRules],
    *,
    run_id: str,
    seq: int,
    decision: str,
    operator: str,
    label: str | None = None,
    note: str | None = None,
) -> dict[str, object]:
    """Check and store one review; ReviewError naming the field when it cannot be."""
    operator = operator.strip()
    if not OPERATOR.match(operator):
        raise ReviewError("operator", "your name, 1 to 64 printable characters")
    if decision not in DECISIONS:
        raise ReviewError("decision", f"one of {', '.join(DECISIONS)}")
    if note is not None and len(note) > MAX_NOTE:
        raise ReviewError("note", f"at most {MAX_NOTE} characters")
    cell = _archived(archive, run_id, seq)
    station = str(cell["station"])
    st = rules.get(station)
    if st is None:
        raise ReviewError("seq", f"station {station!r} is not in the configuration")
    if decision not in FOR_VERDICT[str(cell["verdict"])]:
        allowed = " or ".join(FOR_VERDICT[str(cell["verdict"])])
        raise ReviewError("decision", f"a {cell['verdict']} cell takes {allowed}")
    final = _label(st, decision, label, cell.get("label"))
    now = time.time_ns()
    row = {
        "run_id": run_id,
        "seq": seq,
        "station": station,
        "cell_id": int(str(cell["cell_id"])),
        "t_frame_ns": int(str(cell["t_frame_ns"])),
        "verdict": str(cell["verdict"]),
        "decision": decision,
        "label": final,
        "operator": operator,
        "note": note,
        "t_ns": now,
    }
    con = connect(review)
    try:
        con.execute(
            f"INSERT INTO reviews ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608  (column names are ours)
            list(row.values()),
        )
    finally:
        con.close()
    return row


def _archived(archive: Path, run_id: str, seq: int) -> dict[str, object]:
    db = archive / ARCHIVE_DB
    if not db.is_file():
        raise ReviewError("seq", "the archive has no verdicts yet")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    con.row_factory = sqlite3.Row
    try:
        row = con.execute(
            "SELECT station, cell_id, verdict, reason, label, t_frame_ns FROM verdicts "
            "WHERE run_id = ? AND seq = ?",
            (run_id, seq),
        ).fetchone()
    finally:
        con.close()
    if row is None:
        raise ReviewError("seq", f"no archived verdict {run_id[:8]}/{seq}")
    return dict(row)


def _label(st: StationRules, decision: str, given: str | None, model_label: object) -> str:
    """The label the cell takes in a dataset."""
    if decision in ("false_reject", "confirm_ok"):
        if given not in (None, "", st.ok_label()):
            raise ReviewError("label", f"a good cell is {st.ok_label()}")
        return st.ok_label()
    defects = st.defect_labels()
    if given:
        if given not in defects:
            raise ReviewError("label", f"one of {', '.join(defects)}")
        return given
    if decision == "confirm_ng" and isinstance(model_label, str) and model_label in defects:
        return model_label
    if len(defects) == 1:
        return defects[0]
    raise ReviewError("label", f"which defect: one of {', '.join(defects)}")
