"""Routing frames to stations, deadlines, back-pressure and the fail-safe NG.

Every cell that enters gets exactly one verdict:
- a frame is registered with the :class:`CellArbiter` the moment it arrives, with its deadline;
- the station's result resolves it if it comes in time;
- otherwise the arbiter's deadline thread publishes NG ``timeout``; a late result is counted
  and logged, never published as a second verdict;
- a full station queue makes the cell NG ``overload`` at once (the camera thread never blocks);
- a frame fault (bad buffer, lost camera) makes the cell NG with that reason.

Time: a cell's deadline is ``deadline_ms`` after its last frame's capture instant
(``Frame.t_mono_ns``), the instant its verdict's ``latency_ms`` counts from too. Whether a
result is in time and handing it to the publisher are one step under the arbiter's lock, the
lock the deadline thread takes a cell under: a result is either handed over by the deadline,
stamped with that instant (``StageTimes.decided_mono_ns``, what ``latency_ms`` is measured
to), or it is not published at all. So no verdict but NG ``timeout`` is decided after its
deadline, however long the bus thread then takes to send it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from linevision.log import get_logger
from linevision.scheduler.tally import Tally
from linevision.types import Decision, Frame, FrameFault, Image, ModelRef, StageTimes, Verdict

log = get_logger(__name__)

_DECIDED_MEMORY = 50_000


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
    challenge: bool = False
    budget_ns: int = 0
    """The station's ``deadline_ms``: no verdict but NG timeout is decided later than this
    after the cell's last frame (for a cell still short of views, its deadline is later)."""


class CellArbiter:
    """Decides which result becomes a cell's one verdict.

    ``publish`` is called with the arbiter's lock held (see the module's "Time"): it must
    queue the verdict and return, never block or call back into the arbiter.
    """

    def __init__(self, publish: Callable[[Verdict], None]) -> None:
        self._publish = publish
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._decided: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._heap: list[tuple[int, int, tuple[str, int]]] = []
        self._tie = itertools.count()
        self._stopping = False
        self.counters = Tally()
        self._thread = threading.Thread(target=self._deadline_loop, name="deadlines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,)

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
                self.counters.add("view_after_decision")
                return False
            if p is not None or key in self._decided:
                self.counters.add("duplicate_cell")
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
                budget_ns=int(deadline_ms * 1e6),
                challenge=frame.challenge,
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
            self.counters.add("duplicate_view")
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

        A result (a model decision or a fault) that comes after the cell's deadline, before
        the deadline thread got to it, is still late: the cell becomes NG ``timeout``, never
        the late result.
        """
        key = (station, cell_id)
        with self._lock:
            p = self._pending.pop(key, None)
            if p is None:
                self.counters.add("late_result")
            else:
                p.started_mono_ns = started_mono_ns
                self._remember(key)
                late = self._decide(p, decision)
        if p is None:
            log.warning("late_result", station=station, cell_id=cell_id, verdict=decision.verdict)
            return False
        if late:
            log.warning(
                "deadline_missed",
                station=station,
                cell_id=cell_id,
                late_verdict=decision.verdict,
                late_reason=decision.reason,
            )
            return False
        return True

    def _decide(self, p: _Pending, decision: Decision) -> bool:
        """Hand ``decision`` to the publisher if it is in time, else NG timeout (lock held);
        True when it was late."""
        now = time.monotonic_ns()
        if decision.reason != "timeout" and now > self._limit(p):
            self.counters.add("late_result")
            self.counters.add("deadline_missed")
            self._emit(p, Decision.fault("timeout", "deadline", p.model), now)
            return True
        self._emit(p, decision, now)
        return False

    @staticmethod
    def _limit(p: _Pending) -> int:
        """The last instant (monotonic ns) a verdict other than NG timeout may be decided."""
        if p.budget_ns <= 0:
            return p.deadline_mono_ns
        return min(p.deadline_mono_ns, p.t_frame_mono_ns + p.budget_ns)

    def fault(
        self,
        station: str,
        fault: FrameFault,
        model: ModelRef | None,
        recipe: str | None = None,
        deadline_ms: float | None = None,
    ) -> bool:
        """A cell that could not be inspected: NG with the fault's reason, unless decided.

        A cell known only by its fault counts from the fault; reported more than
        ``deadline_ms`` after that (a starved acquisition thread), it is NG ``timeout``."""
        key = (station, fault.cell_id)
        decision = Decision.fault(fault.reason, fault.detail, model)
        with self._lock:
            p = self._pending.pop(key, None)
            if p is None:
                if key in self._decided:
                    self.counters.add("late_result")
                    return False
                p = _Pending(
                    station, fault.cell_id, fault.t_wall_ns, fault.t_mono_ns, 0, model, None, recipe
                )
                self._remember(key)
                now = time.monotonic_ns()
                late = deadline_ms is not None and now - fault.t_mono_ns > deadline_ms * 1e6
                if late:
                    self.counters.add("deadline_missed")
                    detail = f"{fault.reason} reported late: {fault.detail}"
                    decision = Decision.fault("timeout", detail, model)
                self._emit(p, decision, now)
                return not late
            self._remember(key)
            if fault.t_mono_ns > p.t_frame_mono_ns:
                # the fault is the cell's last event: its latency counts from it
                p.t_frame_mono_ns, p.t_frame_ns = fault.t_mono_ns, fault.t_wall_ns
            late = self._decide(p, decision)
        if late:
            log.warning(
                "deadline_missed", station=station, cell_id=fault.cell_id, late_reason=fault.reason
            )
        return not late

    def flush(self, reason: str = "timeout") -> int:
        """Publish every pending cell as NG now (shutdown); returns how many."""
        with self._lock:
            items = list(self._pending.values())
            self._pending.clear()
            now = time.monotonic_ns()
            for p in items:
                self._remember((p.station, p.cell_id))
                self._emit(p, Decision.fault("timeout", f"shutdown:{reason}", p.model), now)
        return len(items)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(2.0)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _remember(self, key: tuple[str, int]) -> None:
        self._decided[key] = None
        if len(self._decided) > _DECIDED_MEMORY:
            self._decided.popitem(last=False)

    def _emit(self, p: _Pending, decision: Decision, decided_mono_ns: int) -> None:
        """Hand the verdict to the publisher (lock held); ``decided_mono_ns`` is now."""
        prefix = "challenge_" if p.challenge else ""
        self.counters.add(f"{prefix}{decision.verdict}:{decision.reason}")
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
                challenge=p.challenge,
                stages=StageTimes(
                    queued_mono_ns=p.queued_mono_ns or p.t_frame_mono_ns,
                    started_mono_ns=p.started_mono_ns,
                    decided_mono_ns=decided_mono_ns,
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
                            self.counters.add("deadline_missed")
                            self._emit(p, Decision.fault("timeout", "deadline", p.model), now)
                            expired.append(p)
                    if expired:
                        break
                    wait = (self._heap[0][0] - now) / 1e9 if self._heap else 0.5
                    self._wake.wait(timeout=min(wait, 0.5))
                if self._stopping and not expired:
                    return
            for p in expired:
                log.warning("deadline_missed", station=p.station, cell_id=p.cell_id)
