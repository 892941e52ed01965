"""Repeatability: the same cells N times through the live path, an attribute-agreement study.

``linevision repeatability --station S --data DIR --n 30`` sends every sample of ``DIR`` (the
folder contract) ``n`` times through the live station, as challenge cells (never verdicts on
the bus), round after round, and reports per cell the verdicts' agreement and the scores'
spread. A ``part`` column in ``labels.csv`` (allowed by the contract) groups several images of
one physical part (re-imaged, re-placed): the part is then the cell of the study, and its
agreement covers every image and every round, which is what a measurement-system analysis of
an attribute gauge asks (AIAG MSA, attribute agreement: *within appraiser*, every trial of a
part the same; *appraiser vs standard*, every trial the expected verdict).
"""

from __future__ import annotations

import csv
import math
import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from linevision.lifecycle.challenge import write_json
from linevision.lifecycle.host import Host
from linevision.lifecycle.inject import Injector, worker_for
from linevision.lifecycle.jobs import JobThread
from linevision.lifecycle.samples import MasterSample, SampleError, load_samples
from linevision.log import get_logger
from linevision.types import FAULT_REASONS, Verdict

log = get_logger(__name__)

ARCHIVE = "repeatability"
MAX_N = 1000


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson interval of a proportion ``k / n`` (in %).

    >>> wilson(10, 10)
    (72.2, 100.0)
    >>> wilson(0, 0)
    (0.0, 100.0)
    """
    if n == 0:
        return 0.0, 100.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(100 * max(0.0, centre - half), 1), round(100 * min(1.0, centre + half), 1)


def cell_summary(
    expected: str, verdicts: list[str], scores: list[float], faults: int
) -> dict[str, object]:
    """One cell's (part's) row of the study.

    >>> r = cell_summary("OK", ["OK", "OK", "NG", "OK"], [0.9, 0.8, 0.4, 0.9], 0)
    >>> r["agreement_pct"], r["majority"], r["matches_expected_pct"], r["score_range"]
    (75.0, 'OK', 75.0, 0.5)
    """
    counts = Counter(verdicts)
    majority, top = counts.most_common(1)[0] if counts else ("-", 0)
    n = len(verdicts)
    return {
        "expected": expected,
        "n": n,
        "ok": counts["OK"],
        "ng": counts["NG"],
        "faults": faults,
        "majority": majority,
        "agreement_pct": None if n == 0 else round(100.0 * top / n, 2),
        "matches_expected_pct": None if n == 0 else round(100.0 * counts[expected] / n, 2),
        "score_mean": round(statistics.fmean(scores), 4) if scores else None,
        "score_std": round(statistics.pstdev(scores), 4) if scores else None,
        "score_min": min(scores) if scores else None,
        "score_max": max(scores) if scores else None,
        "score_range": round(max(scores) - min(scores), 4) if scores else None,
    }


def study(cells: dict[str, dict[str, object]]) -> dict[str, object]:
    """The study's totals: within-appraiser and appraiser-vs-standard agreement, with their
    95 % intervals, and the largest score spread."""
    n = len(cells)
    within = sum(1 for c in cells.values() if c["agreement_pct"] == 100.0)
    standard = sum(1 for c in cells.values() if c["matches_expected_pct"] == 100.0)
    spreads = [float(str(c["score_std"])) for c in cells.values() if c["score_std"] is not None]
    return {
        "cells": n,
        "within_agreement": {"cells": within, "pct": _pct(within, n), "ci95": wilson(within, n)},
        "vs_standard": {"cells": standard, "pct": _pct(standard, n), "ci95": wilson(standard, n)},
        "max_score_std": max(spreads, default=None),
    }


def _pct(k: int, n: int) -> float | None:
    return None if n == 0 else round(100.0 * k / n, 2)


def parts_of(folder: Path) -> dict[str, str]:
    """Image path (as in ``labels.csv``) -> part, from an optional ``part`` column."""
    with (folder / "labels.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "part" not in rows[0]:
        return {}
    key = "cell" if "cell" in rows[0] else "image"
    return {r[key].strip(): r["part"].strip() for r in rows if r.get("part", "").strip()}


class Repeatability:
    """Studies of one daemon, on the lifecycle's thread."""

    def __init__(self, host: Host, injector: Injector, jobs: JobThread, timeout_s: float) -> None:
        self.host = host
        self.injector = injector
        self.jobs = jobs
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._runs: dict[str, dict[str, object]] = {}

    def request(self, station: str, data: Path, n: int, user: str | None) -> dict[str, object]:
        names = self.host.station_names()
        if station not in names:
            msg = f"station: unknown station {station!r} (stations: {', '.join(names)})"
            raise ValueError(msg)
        if not 1 <= n <= MAX_N:
            msg = f"n: must be 1..{MAX_N}, got {n}"
            raise ValueError(msg)
        live = self.host.live(station)
        try:
            samples = load_samples(data, live.config, live.cameras)
            parts = parts_of(data)
        except (SampleError, OSError, ValueError) as exc:
            msg = f"data: {exc}"
            raise ValueError(msg) from exc
        run_id = uuid.uuid4().hex
        with self._lock:
            self._runs[run_id] = {
                "id": run_id,
                "station": station,
                "done": 0,
                "total": n * len(samples),
                "report": None,
            }
        job = _Job(run_id, station, data, samples, parts, n, user)
        self.jobs.submit(lambda: self._run(job))
        return {"id": run_id, "station": station, "samples": len(samples), "n": n}

    def status(self, run_id: str | None = None) -> dict[str, object]:
        with self._lock:
            if run_id is not None:
                run = self._runs.get(run_id)
                if run is None:
                    msg = f"id: no repeatability run {run_id!r}"
                    raise ValueError(msg)
                return dict(run)
            return {"runs": [dict(r) for r in self._runs.values()]}

    def _run(self, job: _Job) -> None:
        live = self.host.live(job.station)
        worker = worker_for(self.host, live)
        cam = live.cameras[0]
        started = time.time_ns()
        tally = _Tally()
        done = 0
        for _ in range(job.n):
            for s in job.samples:
                if self.jobs.stopping.is_set():
                    break
                v = self.injector.inspect(
                    worker,
                    s.views,
                    tuple(c.id for c in live.cameras),
                    line_scan=cam.line_scan is not None,
                    strip_period_s=cam.strip_period_s(),
                    timeout_s=self.timeout_s,
                )
                tally.add(job.parts.get(s.name, s.name), s.expected, v)
                done += 1
                with self._lock:
                    self._runs[job.id]["done"] = done
        cells = tally.cells()
        report: dict[str, object] = {
            "id": job.id,
            "station": job.station,
            "recipe": live.recipe,
            "model": sorted(tally.models),
            "data": str(job.data),
            "n": job.n,
            "user": job.user,
            "started_ns": started,
            "finished_ns": time.time_ns(),
            "complete": done == job.n * len(job.samples),
            "study": study(cells),
            "cells": cells,
        }
        self._archive(job, started, report)
        with self._lock:
            self._runs[job.id]["report"] = report
        log.info("repeatability_done", station=job.station, id=job.id, study=report["study"])

    def _archive(self, job: _Job, started: int, report: dict[str, object]) -> None:
        stamp = datetime.fromtimestamp(started / 1e9)  # noqa: DTZ006  (the plant's local time)
        path = (
            self.host.archive_dir
            / ARCHIVE
            / stamp.strftime("%Y-%m-%d")
            / f"{job.station}-{stamp.strftime('%H%M%S')}-{job.id[:8]}.json"
        )
        try:
            write_json(path, report)
            report["archive"] = str(path)
        except OSError as exc:
            log.exception("repeatability_archive_failed", path=str(path), error=str(exc))


@dataclass(frozen=True)
class _Job:
    id: str
    station: str
    data: Path
    samples: list[MasterSample]
    parts: dict[str, str]
    n: int
    user: str | None


@dataclass
class _Tally:
    """Each cell's (part's) verdicts, scores and faults as they come."""

    verdicts: dict[str, list[str]] = field(default_factory=dict)
    scores: dict[str, list[float]] = field(default_factory=dict)
    faults: Counter[str] = field(default_factory=Counter)
    expected: dict[str, str] = field(default_factory=dict)
    models: set[str] = field(default_factory=set)

    def add(self, cell: str, expected: str, v: Verdict | None) -> None:
        self.expected.setdefault(cell, expected)
        d = None if v is None else v.decision
        self.verdicts.setdefault(cell, []).append("NG" if d is None else d.verdict)
        if d is None or d.reason in FAULT_REASONS:
            self.faults[cell] += 1
        elif d.score is not None:
            self.scores.setdefault(cell, []).append(d.score)
        if d is not None and d.model is not None:
            self.models.add(d.model.sha256)

    def cells(self) -> dict[str, dict[str, object]]:
        return {
            c: cell_summary(
                self.expected[c], self.verdicts[c], self.scores.get(c, []), self.faults[c]
            )
            for c in sorted(self.verdicts)
        }
