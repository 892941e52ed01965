"""Routing frames to stations, deadlines, back-pressure and the fail-safe NG.

Every cell that enters gets exactly one verdict:
- a frame is registered with the :class:`CellArbiter` the moment it arrives, with its deadline;
- the station's result resolves it if it comes in time;
- otherwise the arbiter's deadline thread publishes NG ``timeout``; a late result is counted
  and logged, never published as a second verdict;
- a full station queue makes the cell NG ``overload`` at once (the camera thread never blocks);
- a frame fault (bad buffer, lost camera) makes the cell NG with that reason.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from linevision.executor import EdfExecutor
from linevision.inference.classifier import PreprocessError
from linevision.log import get_logger
from linevision.types import Decision, Frame, FrameFault, Image, ModelRef, StageTimes, Verdict

log = get_logger(__name__)

_DECIDED_MEMORY = 50_000
_RECENT_JOBS = 15
"""Job times a station's 'usual job time' is the median of."""
_PROBE_AFTER = 8
"""After this many cells shed in a row, the next job runs anyway: its time is measured
afresh, so one slow job cannot make a station shed everything from then on."""


@dataclass(slots=True)
class _Pending:
    station: str
    cell_id: int
    t_frame_ns: int
    t_frame_mono_ns: int
    deadline_mono_ns: int
    model: ModelRef | None
    image: Image | None = None
    recipe: str | None = None
    queued_mono_ns: int = 0
    started_mono_ns: int | None = None
    views_expected: int = 1
    views_seen: set[str] | None = None


class CellArbiter:
    """Decides which result becomes a cell's one verdict."""

    def __init__(self, publish: Callable[[Verdict], None]) -> None:
        self._publish = publish
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._decided: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._heap: list[tuple[int, int, tuple[str, int]]] = []
        self._tie = itertools.count()
        self._stopping = False
        self.counters: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._deadline_loop, name="deadlines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def expect(  # noqa: PLR0913  (the cell's identity and its timing rules, all needed here)
        self,
        frame: Frame,
        station: str,
        deadline_ms: float,
        model: ModelRef | None,
        recipe: str | None = None,
        *,
        views: int = 1,
        assembly_ms: float = 0.0,
    ) -> bool:
        """Register a cell's frame; False if it must not be inspected (duplicate, decided).

        A cell of ``views`` frames (one per camera) is registered by its first frame with a
        deadline of ``assembly_ms + deadline_ms``; when its last view arrives the deadline
        becomes ``deadline_ms`` after that frame, which is also the frame latency is
        measured from. A second frame from the same camera for a cell is a duplicate.
        """
        key = (station, frame.cell_id)
        with self._lock:
            p = self._pending.get(key)
            if views > 1 and p is not None and p.views_seen is not None:
                return self._add_view(p, frame, deadline_ms)
            if views > 1 and p is None and key in self._decided:
                # the rest of a cell already decided (faulted, shed or timed out)
                self.counters["view_after_decision"] += 1
                return False
            if p is not None or key in self._decided:
                self.counters["duplicate_cell"] += 1
                log.warning("duplicate_cell", station=station, cell_id=frame.cell_id)
                return False
            window = deadline_ms + (assembly_ms if views > 1 else 0.0)
            deadline = frame.t_mono_ns + int(window * 1e6)
            self._pending[key] = _Pending(
                station,
                frame.cell_id,
                frame.t_wall_ns,
                frame.t_mono_ns,
                deadline,
                model,
                frame.image,
                recipe,
                time.monotonic_ns(),
                views_expected=views,
                views_seen={frame.view_key} if views > 1 else None,
            )
            heapq.heappush(self._heap, (deadline, next(self._tie), key))
            self._wake.notify()
        return True

    def _add_view(self, p: _Pending, frame: Frame, deadline_ms: float) -> bool:
        """Another view of a multi-view cell (lock held)."""
        assert p.views_seen is not None
        if frame.view_key in p.views_seen:
            self.counters["duplicate_view"] += 1
            log.warning("duplicate_view", station=p.station, cell_id=p.cell_id, view=frame.view_key)
            return False
        p.views_seen.add(frame.view_key)
        if frame.t_mono_ns > p.t_frame_mono_ns:
            p.t_frame_mono_ns, p.t_frame_ns = frame.t_mono_ns, frame.t_wall_ns
        if len(p.views_seen) == p.views_expected:
            p.deadline_mono_ns = p.t_frame_mono_ns + int(deadline_ms * 1e6)
            heapq.heappush(
                self._heap, (p.deadline_mono_ns, next(self._tie), (p.station, p.cell_id))
            )
            self._wake.notify()
        return True

    def is_pending(self, station: str, cell_id: int) -> bool:
        with self._lock:
            return (station, cell_id) in self._pending

    def deadline_of(self, station: str, cell_id: int) -> int | None:
        """The cell's current deadline (monotonic ns), None once it is decided."""
        with self._lock:
            p = self._pending.get((station, cell_id))
            return None if p is None else p.deadline_mono_ns

    def resolve(
        self,
        station: str,
        cell_id: int,
        decision: Decision,
        started_mono_ns: int | None = None,
    ) -> bool:
        """The station's result for a registered cell; False (and counted) when late.

        A model decision that arrives after the cell's deadline, before the deadline thread
        got to it, is still late: the cell becomes NG ``timeout``, never the late result.
        """
        now = time.monotonic_ns()
        with self._lock:
            p = self._pending.pop((station, cell_id), None)
            if p is None:
                self.counters["late_result"] += 1
            else:
                p.started_mono_ns = started_mono_ns
                self._remember((station, cell_id))
        if p is None:
            log.warning("late_result", station=station, cell_id=cell_id, verdict=decision.verdict)
            return False
        if decision.reason in (None, "defect") and now > p.deadline_mono_ns:
            self.counters["late_result"] += 1
            self.counters["deadline_missed"] += 1
            log.warning(
                "deadline_missed", station=station, cell_id=cell_id, late_verdict=decision.verdict
            )
            self._emit(p, Decision.fault("timeout", "deadline", p.model))
            return False
        self._emit(p, decision)
        return True

    def fault(
        self,
        station: str,
        fault: FrameFault,
        model: ModelRef | None,
        recipe: str | None = None,
    ) -> bool:
        """A cell that could not be inspected: NG with the fault's reason, unless decided."""
        key = (station, fault.cell_id)
        with self._lock:
            p = self._pending.pop(key, None)
            if p is None:
                if key in self._decided:
                    self.counters["late_result"] += 1
                    return False
                p = _Pending(
                    station, fault.cell_id, fault.t_wall_ns, fault.t_mono_ns, 0, model, None, recipe
                )
            self._remember(key)
        self._emit(p, Decision.fault(fault.reason, fault.detail, model))
        return True

    def flush(self, reason: str = "timeout") -> int:
        """Publish every pending cell as NG now (shutdown); returns how many."""
        with self._lock:
            items = list(self._pending.values())
            self._pending.clear()
            for p in items:
                self._remember((p.station, p.cell_id))
        for p in items:
            self._emit(p, Decision.fault("timeout", f"shutdown:{reason}", p.model))
        return len(items)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def _remember(self, key: tuple[str, int]) -> None:
        self._decided[key] = None
        if len(self._decided) > _DECIDED_MEMORY:
            self._decided.popitem(last=False)

    def _emit(self, p: _Pending, decision: Decision) -> None:
        self.counters[f"{decision.verdict}:{decision.reason}"] += 1
        self._publish(
            Verdict(
                station=p.station,
                cell_id=p.cell_id,
                decision=decision,
                t_frame_ns=p.t_frame_ns,
                t_frame_mono_ns=p.t_frame_mono_ns,
                image=p.image if decision.image is None else decision.image,
                image_scale=1.0 if decision.image is None else decision.image_scale,
                recipe=p.recipe,
                stages=StageTimes(
                    queued_mono_ns=p.queued_mono_ns or p.t_frame_mono_ns,
                    started_mono_ns=p.started_mono_ns,
                    decided_mono_ns=time.monotonic_ns(),
                ),
            )
        )

    def _deadline_loop(self) -> None:
        while True:
            expired: list[_Pending] = []
            with self._lock:
                while not self._stopping:
                    now = time.monotonic_ns()
                    while self._heap and self._heap[0][0] <= now:
                        due, _, key = heapq.heappop(self._heap)
                        p = self._pending.get(key)
                        if p is not None and p.deadline_mono_ns == due:
                            del self._pending[key]
                            self._remember(key)
                            expired.append(p)
                    if expired:
                        break
                    wait = (self._heap[0][0] - now) / 1e9 if self._heap else 0.5
                    self._wake.wait(timeout=min(wait, 0.5))
                if self._stopping and not expired:
                    return
            for p in expired:
                self.counters["deadline_missed"] += 1
                log.warning("deadline_missed", station=p.station, cell_id=p.cell_id)
                self._emit(p, Decision.fault("timeout", "deadline", p.model))


class Station(Protocol):
    """Frames of a cell -> its Decision.

    ``views`` frames (one per camera) make a cell; ``inspect`` is called for each as it
    arrives and returns None until the cell is complete.
    """

    name: str
    kind: str
    views: int
    assembly_ms: float

    def inspect(self, frame: Frame) -> Decision | None: ...


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

    def __init__(  # noqa: PLR0913, PLR0917  (the station, its deadline rules, its pool)
        self,
        station: Station,
        arbiter: CellArbiter,
        deadline_ms: float,
        queue_size: int,
        model: ModelRef | None,
        executor: EdfExecutor | None = None,
    ) -> None:
        self.station = station
        self.arbiter = arbiter
        self.deadline_ms = deadline_ms
        self.model = model
        self.recipe: str | None = None
        self._switch_lock = threading.Lock()
        self._own_executor = executor is None
        self.executor = (
            executor if executor is not None else EdfExecutor(1, f"station-{station.name}")
        )
        parallel = bool(getattr(station, "parallel", False))
        capacity = max(queue_size, 2 * station.views)
        self._lane = self.executor.lane(
            station.name, capacity, self.executor.workers if parallel else 1
        )
        self.counters: Counter[str] = Counter()
        self._recent_ns: deque[int] = deque(maxlen=_RECENT_JOBS)
        self._sheds_in_row = 0

    @property
    def last_loop_mono(self) -> float:
        return self.executor.last_beat()

    def start(self) -> None:
        self.executor.start()

    def switch(self, station: Station, model: ModelRef | None, recipe: str | None) -> None:
        """Use ``station`` for every cell registered from now on.

        Cells already queued keep the station (and recipe) they were registered with.
        """
        with self._switch_lock:
            self.station, self.model, self.recipe = station, model, recipe

    def submit(self, item: Frame | FrameFault) -> None:
        """Called from acquisition threads; never blocks."""
        with self._switch_lock:
            station, model, recipe = self.station, self.model, self.recipe
        name = station.name
        if isinstance(item, FrameFault):
            self.counters[f"fault_{item.reason}"] += 1
            self.arbiter.fault(name, item, model, recipe)
            return
        self.counters["frames"] += 1
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
            due_ms += float(getattr(station, "part_slack_ms", 0.0))
        due = min(deadline, item.t_mono_ns + int(due_ms * 1e6))

        def job() -> None:
            self._run(item, station)

        if not self.executor.submit(self._lane, due, job):
            self.counters["dropped"] += 1
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
            self.counters["expired_before_inference"] += 1
            return
        if started + self._usual_job_ns() > deadline and self._sheds_in_row < _PROBE_AFTER:
            self._sheds_in_row += 1
            self.counters["shed"] += 1
            log.warning("deadline_unreachable", station=name, cell_id=frame.cell_id)
            detail = "deadline_unreachable"
            self.arbiter.resolve(
                name, frame.cell_id, Decision.fault("overload", detail, self._model_of(station))
            )
            return
        try:
            decision = station.inspect(frame)
        except PreprocessError as exc:
            self.counters["bad_frame"] += 1
            log.warning("bad_frame", station=name, cell_id=frame.cell_id, error=str(exc))
            decision = Decision.fault("bad_frame", str(exc)[:200], self._model_of(station))
        except Exception as exc:
            self.counters["model_error"] += 1
            log.exception("model_error", station=name, cell_id=frame.cell_id, error=str(exc))
            decision = Decision.fault("model_error", type(exc).__name__, self._model_of(station))
        self._sheds_in_row = 0
        self._recent_ns.append(time.monotonic_ns() - started)
        if decision is None:
            self.counters["views_encoded"] += 1
            return
        self.counters["inspected"] += 1
        self.arbiter.resolve(name, frame.cell_id, decision, started)

    def _usual_job_ns(self) -> float:
        """The median time of the station's recent jobs (0 until there are a few)."""
        if len(self._recent_ns) < _RECENT_JOBS // 3:
            return 0.0
        return float(sorted(self._recent_ns)[len(self._recent_ns) // 2])

    def _model_of(self, station: Station) -> ModelRef | None:
        session = getattr(station, "session", None)
        ref = getattr(session, "ref", None)
        return ref if isinstance(ref, ModelRef) else self.model
