"""One station's front: frames -> the arbiter and the shared pool, and back."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from linevision.log import get_logger
from linevision.scheduler.arbiter import CellArbiter
from linevision.scheduler.pool import EdfExecutor
from linevision.scheduler.tally import Tally
from linevision.stations.base import Station
from linevision.types import Decision, Frame, FrameFault, PreprocessError

log = get_logger(__name__)

Observer = Callable[[Frame, Decision | None, Station], None]

_RECENT_JOBS = 15
"""Job times a station's 'usual job time' is the median of."""
_CELLS_REMEMBERED = 256
"""Cells of a multi-view station whose station is remembered (far more than are in flight)."""
_PROBE_AFTER = 8
"""After this many cells shed in a row, the next job runs anyway: its time is measured
afresh, so one slow job cannot make a station shed everything from then on."""


class StationWorker:
    """One station's front: registers frames with the arbiter and queues them in a lane.

    The jobs run on an :class:`EdfExecutor` shared by every station (``executor``); without
    one, the worker makes a private single-thread pool. A station that sets ``parallel``
    True may have as many of its frames in work at once as the pool has threads; otherwise
    its frames are handled one at a time, in order. The lane holds ``queue_size`` frames,
    and never fewer than two cells' worth (a line-scan cell is many strips).

    A job whose cell can no longer meet its deadline (now + the station's usual job time,
    the median of its recent jobs, is past it) is not run: the cell becomes NG ``overload``
    at once. A job whose deadline
    has already passed is left to the arbiter, which publishes NG ``timeout``.
    """

    def __init__(
        self,
        station: Station,
        arbiter: CellArbiter,
        deadline_ms: float,
        queue_size: int,
        executor: EdfExecutor | None = None,
    ) -> None:
        self.station = station
        self.arbiter = arbiter
        self.deadline_ms = deadline_ms
        self.recipe: str | None = None
        self._switch_lock = threading.Lock()
        self._own_executor = executor is None
        self.executor = (
            executor if executor is not None else EdfExecutor(1, f"station-{station.name}")
        )
        capacity = max(queue_size, 2 * station.views)
        self._lane = self.executor.lane(
            station.name, capacity, self.executor.workers if station.parallel else 1
        )
        self.counters = Tally()
        # job times and the shed run are shared by the pool threads of a parallel station
        self._jobs_lock = threading.Lock()
        self._recent_ns: deque[int] = deque(maxlen=_RECENT_JOBS)
        self._job_cpu_s = 0.0
        self._jobs = 0
        self._sheds_in_row = 0
        self._cells: OrderedDict[int, tuple[Station, str | None]] = OrderedDict()
        """Multi-view stations: the station each recent cell's first view went to."""
        self.observer: Observer | None = None
        """Called on the pool thread with each frame the station inspected (and its
        decision; None for a view or strip before the cell's last) after the verdict was
        handed to the arbiter. It must only queue: a shadow model runs elsewhere."""

    @property
    def last_loop_mono(self) -> float:
        return self.executor.last_beat()

    def start(self) -> None:
        self.executor.start()

    def switch(self, station: Station, recipe: str | None) -> None:
        """Use ``station`` for every cell registered from now on.

        Cells already queued keep the station (and recipe) they were registered with, and
        so do the later views (or strips) of a cell whose first one came before the switch:
        a cell is never split between two models.
        """
        with self._switch_lock:
            self.station, self.recipe = station, recipe

    def identity(self) -> dict[str, object]:
        """The recipe and model in force for new cells (the heartbeat carries them)."""
        with self._switch_lock:
            station, recipe = self.station, self.recipe
        m = station.model
        return {
            "recipe": recipe,
            "model": {"name": m.name, "version": m.version, "sha256": m.sha256},
        }

    def _station_for(self, item: Frame | FrameFault) -> tuple[Station, str | None]:
        """The station (and recipe) of ``item``'s cell: the one its first view went to."""
        with self._switch_lock:
            current = (self.station, self.recipe)
            if current[0].views == 1 or isinstance(item, FrameFault):
                return current
            first = self._cells.get(item.cell_id)
            if first is not None:
                return first
            self._cells[item.cell_id] = current
            while len(self._cells) > _CELLS_REMEMBERED:
                self._cells.popitem(last=False)
            return current

    def submit(self, item: Frame | FrameFault) -> None:
        """Called from acquisition threads; never blocks."""
        station, recipe = self._station_for(item)
        name, model = station.name, station.model
        if isinstance(item, FrameFault):
            self.counters.add(f"fault_{item.reason}")
            self.arbiter.fault(name, item, model, recipe, self.deadline_ms)
            return
        # a master sample of a challenge is counted apart: the heartbeat's counts are the line's
        self.counters.add("challenge_frames" if item.challenge else "frames")
        if not self.arbiter.expect(
            item,
            name,
            self.deadline_ms,
            model,
            recipe,
            views=station.views,
            assembly_ms=station.assembly_ms,
        ):
            return
        deadline = self.arbiter.deadline_of(name, item.cell_id)
        if deadline is None:
            return
        # a view or strip is due deadline_ms after it arrived, even when its cell may wait
        # longer for the rest: done at the pace they come, only the last one's work is left
        # when the cell completes (and no backlog of earlier strips stands before it). A
        # station may grant the parts before its last one ``part_slack_ms`` more: they are
        # not on the path to a verdict, so a job that is (a pole-piece image, the last strip)
        # goes first when both wait for a thread.
        due_ms = self.deadline_ms
        if item.part < item.parts - 1:
            due_ms += station.part_slack_ms
        due = min(deadline, item.t_mono_ns + int(due_ms * 1e6))

        def job() -> None:
            self._run(item, station)

        if not self.executor.submit(self._lane, due, job):
            self.counters.add("dropped")
            log.warning("queue_full", station=name, cell_id=item.cell_id)
            self.arbiter.resolve(
                name, item.cell_id, Decision.fault("overload", "queue_full", model)
            )

    def stop(self, timeout_s: float = 2.0) -> None:
        if self._own_executor:
            self.executor.stop(timeout_s)

    def queue_depth(self) -> int:
        return self.executor.depth(self._lane)

    def is_alive(self) -> bool:
        return self.executor.is_alive()

    def _run(self, frame: Frame, station: Station) -> None:
        name = station.name
        started = time.monotonic_ns()
        deadline = self.arbiter.deadline_of(name, frame.cell_id)
        if deadline is None or started >= deadline:
            # decided, or the deadline thread is about to publish NG timeout
            self.counters.add("expired_before_inference")
            return
        with self._jobs_lock:
            shed = started + self._usual_job_ns() > deadline and self._sheds_in_row < _PROBE_AFTER
            if shed:
                self._sheds_in_row += 1
        if shed:
            self.counters.add("shed")
            log.warning("deadline_unreachable", station=name, cell_id=frame.cell_id)
            detail = "deadline_unreachable"
            self.arbiter.resolve(
                name, frame.cell_id, Decision.fault("overload", detail, station.model)
            )
            return
        cpu0 = time.thread_time()
        try:
            decision = station.inspect(frame)
        except PreprocessError as exc:
            self.counters.add("bad_frame")
            log.warning("bad_frame", station=name, cell_id=frame.cell_id, error=str(exc))
            decision = Decision.fault("bad_frame", str(exc)[:200], station.model)
        except Exception as exc:
            self.counters.add("model_error")
            log.exception("model_error", station=name, cell_id=frame.cell_id, error=str(exc))
            decision = Decision.fault("model_error", type(exc).__name__, station.model)
        cpu = time.thread_time() - cpu0
        with self._jobs_lock:
            self._sheds_in_row = 0
            self._recent_ns.append(time.monotonic_ns() - started)
            self._job_cpu_s += cpu
            self._jobs += 1
        if decision is None:
            self.counters.add("views_encoded")
        else:
            self.counters.add("challenge_inspected" if frame.challenge else "inspected")
            self.arbiter.resolve(name, frame.cell_id, decision, started)
        observer = self.observer
        if observer is not None and not frame.challenge:
            # after the verdict was handed over: an observer (a shadow model) only queues
            try:
                observer(frame, decision, station)
            except Exception as exc:
                self.counters.add("observer_errors")
                log.exception("observer_failed", station=name, error=repr(exc))

    def job_cpu(self) -> tuple[int, float]:
        """(jobs run, CPU seconds their pool threads spent in ``inspect``) so far."""
        with self._jobs_lock:
            return self._jobs, self._job_cpu_s

    def _usual_job_ns(self) -> float:
        """The median time of the station's recent jobs (0 until there are a few); called
        with ``_jobs_lock`` held."""
        if len(self._recent_ns) < _RECENT_JOBS // 3:
            return 0.0
        return float(sorted(self._recent_ns)[len(self._recent_ns) // 2])
