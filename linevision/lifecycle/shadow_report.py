"""The shadow report: how a candidate's decisions compare with the active model's, cell by
cell (reads a shadow session's folder; no daemon needed)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np

from linevision.lifecycle.shadow import DB

VERDICTS = ("OK", "NG")
SHOWN = 200
"""Disagreeing cells listed in a report (all are in the session's database)."""


def comparable(verdict: str, score: float | None, kind: str) -> float | None:
    """A score on one scale for both models: how good the cell looks (0..1).

    pole_piece's score is the probability of its top class: for an NG cell 1 - score bounds
    the probability of the OK class. The other stations' scores are already one scale (P(NG),
    an anomaly score).

    >>> comparable("OK", 0.9, "pole_piece"), comparable("NG", 0.9, "pole_piece")
    (0.9, 0.09999999999999998)
    >>> comparable("NG", 0.7, "seal_edge")
    0.7
    """
    if score is None:
        return None
    if kind == "pole_piece":
        return score if verdict == "OK" else 1.0 - score
    return score


def correlation(a: list[float], b: list[float]) -> float | None:
    """Pearson's r; None with fewer than 3 pairs or a constant side.

    >>> correlation([1.0, 2.0, 3.0], [2.0, 4.0, 6.5])
    0.9979
    >>> correlation([1.0, 1.0, 1.0], [2.0, 4.0, 6.0]) is None
    True
    """
    if len(a) < 3 or float(np.std(a)) == 0.0 or float(np.std(b)) == 0.0:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 4)


def shadow_report(folder: Path, counts: dict[str, int] | None = None) -> dict[str, object]:
    """The report of the shadow session in ``folder`` (``counts``: the live runner's)."""
    session_file = folder / "session.json"
    try:
        session = json.loads(session_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"{session_file}: not a shadow session ({exc})"
        raise ValueError(msg) from exc
    con = sqlite3.connect(f"file:{folder / DB}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT cell_id, t_ns, active_verdict, active_reason, active_label, active_score, "
            "candidate_verdict, candidate_reason, candidate_label, candidate_score, agree, images "
            "FROM cells ORDER BY cell_id"
        ).fetchall()
    finally:
        con.close()
    kind = str(session.get("kind", ""))
    matrix = {a: dict.fromkeys(VERDICTS, 0) for a in VERDICTS}
    labels: dict[str, dict[str, int]] = {}
    xs: list[float] = []
    ys: list[float] = []
    disagree = []
    for r in rows:
        cell, t_ns, av, ar, al, ascore, cv, cr, cl, cscore, agree, images = r
        matrix[av][cv] += 1
        labels.setdefault(str(al), {}).setdefault(str(cl), 0)
        labels[str(al)][str(cl)] += 1
        x, y = comparable(av, ascore, kind), comparable(cv, cscore, kind)
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
        if not agree:
            disagree.append(
                {
                    "cell_id": cell,
                    "t_ns": t_ns,
                    "active": {"verdict": av, "reason": ar, "label": al, "score": ascore},
                    "candidate": {"verdict": cv, "reason": cr, "label": cl, "score": cscore},
                    "images": [str(folder / p) for p in json.loads(images or "[]")],
                }
            )
    n = len(rows)
    agreed = sum(1 for r in rows if r[10])
    return {
        "session": session,
        "folder": str(folder),
        "compared": n,
        "agreement_pct": None if n == 0 else round(100.0 * agreed / n, 2),
        "confusion": {"rows": "active", "columns": "candidate", "matrix": matrix},
        "labels": labels,
        "score_correlation": correlation(xs, ys),
        "disagreeing": len(disagree),
        "disagreeing_cells": disagree[:SHOWN],
        "counts": counts,
    }


def format_report(r: dict[str, object]) -> str:
    """The report as a line engineer reads it."""
    session = r["session"]
    assert isinstance(session, dict)
    cand, act = session["candidate"], session["active"]
    conf = r["confusion"]
    assert isinstance(conf, dict)
    m = conf["matrix"]
    head = (
        f"station {session['station']}: candidate {cand['name']} {cand['version']} "
        f"({str(cand['sha256'])[:12]}) beside active {act['name']} {act['version']} "
        f"({str(act['sha256'])[:12]})"
    )
    totals = (
        f"cells compared: {r['compared']}   agreement: {r['agreement_pct']} %   "
        f"score correlation: {r['score_correlation']}"
    )
    lines = [
        head,
        totals,
        "                 candidate OK   candidate NG",
        f"active OK        {m['OK']['OK']:>12}   {m['OK']['NG']:>12}",
        f"active NG        {m['NG']['OK']:>12}   {m['NG']['NG']:>12}",
    ]
    counts = r.get("counts")
    if isinstance(counts, dict):
        lines.append(
            f"skipped: {counts.get('skipped_busy', 0)} (pool busy), "
            f"{counts.get('skipped_full', 0)} (queue full); errors {counts.get('errors', 0)}"
        )
    cells = r["disagreeing_cells"]
    assert isinstance(cells, list)
    lines.append(f"disagreeing cells: {r['disagreeing']}")
    for c in cells[:20]:
        a, k = c["active"], c["candidate"]
        lines.append(
            f"  cell {c['cell_id']}: active {a['verdict']} {a['label']} {a['score']}, "
            f"candidate {k['verdict']} {k['label']} {k['score']}  {' '.join(c['images'])}"
        )
    return "\n".join(lines)
