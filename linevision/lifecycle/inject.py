"""Sending master samples through a live station, as challenge cells, and getting their verdicts.

A sample's frames are submitted to the station's worker like a camera's, marked
``challenge``: the same lane, pool, preprocessing, model, threshold and deadline as the
line's cells. The arbiter decides each one exactly once, as any cell; the service hands the
verdicts of challenge cells to :meth:`Injector.sink` instead of the bus. Challenge cells get
negative cell ids, which no camera gives, so a sample is never mistaken for a cell of the
line. One sample is in flight at a time per call: a challenge adds at most one cell's work to
a busy line.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from linevision.lifecycle.host import Host, LiveStation
from linevision.log import get_logger
from linevision.scheduler.worker import StationWorker
from linevision.types import Frame, Image, Verdict, now_ns

log = get_logger(__name__)


@dataclass(slots=True)
class _Wait:
    event: threading.Event = field(default_factory=threading.Event)
    verdict: Verdict | None = None


class Injector:
    """Submits challenge cells and waits for their verdicts (any station, any thread)."""

    def __init__(self) -> None:
        self._ids = itertools.count(-1, -1)
        self._lock = threading.Lock()
        self._waiting: dict[tuple[str, int], _Wait] = {}
        self.unclaimed = 0
        """Challenge verdicts nobody waited for any more (a sample given up on)."""

    def sink(self, verdict: Verdict) -> None:
        """The service's ``challenge_sink``: called with the arbiter's lock held, only hands
        the verdict over."""
        with self._lock:
            wait = self._waiting.pop((verdict.station, verdict.cell_id), None)
            if wait is None:
                self.unclaimed += 1
                return
        wait.verdict = verdict
        wait.event.set()

    def inspect(  # noqa: PLR0913  (the sample, where it goes, and its pacing)
        self,
        worker: StationWorker,
        views: tuple[Image, ...],
        cameras: tuple[str, ...],
        *,
        line_scan: bool,
        strip_period_s: float,
        timeout_s: float,
    ) -> Verdict | None:
        """One cell of ``views`` through ``worker``; its verdict, None if none came in time.

        ``cameras`` are the station's cameras in view order; a line-scan cell's strips all
        come from its one camera, ``strip_period_s`` apart as the camera delivers them.
        """
        cell = next(self._ids)
        key = (worker.station.name, cell)
        wait = _Wait()
        with self._lock:
            self._waiting[key] = wait
        parts = len(views) if line_scan else 1
        for k, image in enumerate(views):
            camera = cameras[0] if line_scan else cameras[k]
            t_mono, t_wall = now_ns()
            part = k if line_scan else 0
            frame = Frame(camera, cell, 0, t_mono, t_wall, image, part, parts, challenge=True)
            worker.submit(frame)
            if line_scan and k < len(views) - 1:
                time.sleep(strip_period_s)
        if wait.event.wait(timeout_s):
            return wait.verdict
        with self._lock:
            self._waiting.pop(key, None)
        log.error("challenge_no_verdict", station=key[0], cell_id=cell, timeout_s=timeout_s)
        return None


def worker_for(host: Host, live: LiveStation) -> StationWorker:
    """Where a station's master samples go: its live worker, or for a station whose frames
    must come in order (line-scan strips) a second instance of it in the same scheduler, so
    a sample's strips never fall between those of a cell on the line."""
    station = live.worker.station
    if not station.parallel and station.views > 1:
        return host.twin(live.config.name)
    return live.worker
