"""Which count of the line's counter is the daemon's ``cell_id``: learned from capture times.

The daemon numbers cells by its cameras' trigger counts; the line's counter is the same
trigger count as the PLC keeps it. After the PLC's counter resets, is preset or jumps, the
cameras keep counting: the two numberings differ by a ``shift`` nobody tells the bridge.
The bridge learns it from the verdicts themselves: a frame captured at wall time ``t`` shows
the cell the counter stepped to at ``t`` (the capture is the trigger is the count step), so

    candidate shift = counter_at(t + period / 2) - (cell_id + offset + phase)   (mod 2^width)

where ``counter_at`` is the counter's value in force at a wall time, ``period`` the line's
cell period (median of recent single steps; the half period moves the lookup away from the
count step the capture coincides with), ``offset`` the station's configured offset and
``phase`` its configured capture lag behind the count step (``tracking.phases``, normally 0).

Evidence is only what the bridge saw: ``counter_at`` answers only for a time between two of
its reads that showed the same value, never across a step it did not see happen (a starved
bridge, a late read), and only for a value the counter stepped to within a period before the
capture (a counter standing still matches no capture); it never guesses. A shift is learned
when ``LEARN`` of the last ``WINDOW`` candidates agree; in normal operation ``DISAGREE`` of
the last ``WINDOW`` that differ from the shift are a silent numbering change. A few wrong
candidates (a trigger sent late under load, a clock hiccup) neither teach a shift nor raise
a mismatch. No I/O; bounded work per call.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from dataclasses import dataclass
from statistics import median_low

from linevision.bridges.reject_track import CellTracker, VerdictValue

WINDOW = 8
"""Candidates the learning and the check look back over."""
LEARN = 6
"""Equal candidates among the last ``WINDOW`` that settle a shift."""
DISAGREE = 4
"""Candidates among the last ``WINDOW`` that differ from the shift: a numbering change."""
HISTORY = 4096
"""Counter changes remembered (at 20 cells/s: 3.4 minutes)."""
PERIODS = 64
"""Single-step intervals the cell period is the median of."""
MIN_PERIODS = 3
PENDING = 4096
"""Verdicts waiting for the counter's history to cover their capture time."""
EVAL_PER_CALL = 256
BUFFERED = 4096
"""Verdicts kept while learning (older ones are dropped: their cells fire)."""


class CounterHistory:
    """The counter's values as the bridge's reads saw them; the cell period.

    Each value is known from the first read that showed it to the last one: ``at`` answers
    only inside such a span. Between the last read of one value and the first read of the
    next, the step happened at a time nobody saw (``None``), however long that gap was.

    >>> h = CounterHistory()
    >>> for i, v in enumerate([10, 10, 11, 11, 12, 13]):  # reads at 1_000, 1_010, ... 1_050
    ...     h.read(1_000 + 10 * i, v, single_step=i in (2, 4, 5))
    >>> h.at(999), h.at(1_000), h.at(1_010), h.at(1_015), h.at(1_020), h.at(1_030)
    (None, 10, 10, None, 11, 11)
    >>> h.at(1_050), h.at(1_051), h.period_ns
    (13, None, 20)
    """

    def __init__(self, size: int = HISTORY) -> None:
        self.size = size
        self._first: list[int] = []
        """When each value was first read."""
        self._last: list[int] = []
        """When each value was last read."""
        self._values: list[int] = []
        self._periods: deque[int] = deque(maxlen=PERIODS)
        self._period: int | None = None
        self.last_read_ns: int | None = None

    def read(self, t_ns: int, value: int, *, single_step: bool) -> None:
        """A read at ``t_ns`` returned ``value``; ``single_step``: one count on from the last."""
        last = self.last_read_ns
        t_ns = t_ns if last is None else max(t_ns, last)
        self.last_read_ns = t_ns
        if self._values and self._values[-1] == value:
            self._last[-1] = t_ns
            return
        if single_step and self._first:
            self._periods.append(t_ns - self._first[-1])
            self._period = None
        self._first.append(t_ns)
        self._last.append(t_ns)
        self._values.append(value)
        if len(self._first) > 2 * self.size:  # amortised: trim half at a time
            del self._first[: self.size]
            del self._last[: self.size]
            del self._values[: self.size]

    def at(self, t_ns: int, stepped_after: int | None = None) -> int | None:
        """The value in force at ``t_ns`` if reads on both sides showed it, else None; with
        ``stepped_after``, only a value first read after that time."""
        i = bisect.bisect_right(self._first, t_ns) - 1
        if i < 0 or t_ns > self._last[i]:
            return None
        if stepped_after is not None and self._first[i] < stepped_after:
            return None
        return self._values[i]

    def covered(self, t_ns: int) -> bool:
        """Has the bridge read the counter at or after ``t_ns``?"""
        return self.last_read_ns is not None and t_ns <= self.last_read_ns

    @property
    def period_ns(self) -> int | None:
        if self._period is None and len(self._periods) >= MIN_PERIODS:
            self._period = median_low(self._periods)
        return self._period


@dataclass(frozen=True, slots=True)
class Learned:
    shift: int
    previous: int


@dataclass(frozen=True, slots=True)
class Mismatch:
    shift: int
    seen: int
    """The last disagreeing candidate."""


class NumberingSync:
    """The numbering shift, learned after a jump and verified in normal operation.

    >>> s = NumberingSync(1 << 16)
    >>> s.start_learning(since_ns=0)
    >>> [s.candidate("a", c, 0, c + 5) for c in range(1, 7)]  # counter = cell_id + 5
    [None, None, None, None, None, Learned(shift=5, previous=0)]
    >>> s.learning, s.shift
    (False, 5)
    """

    def __init__(self, modulus: int, phases: dict[str, int] | None = None) -> None:
        self.modulus = modulus
        self.shift = 0
        self.learning = False
        self.since_ns = 0
        """While learning: verdicts of frames captured before this are not evidence."""
        self.phases = dict(phases or {})
        """Station -> counts its capture lags the count step (``tracking.phases``)."""
        self.pending: deque[tuple[int, str, int]] = deque(maxlen=PENDING)
        """(t_frame_ns, station, cell_id + offset) waiting for the history to cover them."""
        self._seen: deque[int] = deque(maxlen=WINDOW)
        """The last candidates (learning) or their differences from the shift (checking)."""
        self.buffer: deque[tuple[str, int, VerdictValue, int]] = deque(maxlen=BUFFERED)
        """Verdicts captured while learning, keyed once the shift is known."""

    def start_learning(self, since_ns: int) -> None:
        self.learning = True
        self.since_ns = since_ns
        self._seen.clear()
        self.buffer.clear()
        self.pending = deque((p for p in self.pending if p[0] >= since_ns), maxlen=PENDING)

    def observe(self, t_frame_ns: int, station: str, base: int) -> None:
        """A verdict captured at ``t_frame_ns``, of tracked id ``base`` before the shift."""
        if not self.learning or t_frame_ns >= self.since_ns:
            self.pending.append((t_frame_ns, station, base))

    def hold(self, station: str, cell_id: int, verdict: VerdictValue, t_frame_ns: int) -> None:
        self.buffer.append((station, cell_id, verdict, t_frame_ns))

    def release(self, tracker: CellTracker) -> int:
        """Key the held verdicts with the learned shift; how many were kept (not late)."""
        tracker.shift = self.shift
        kept = sum(tracker.record_verdict(*held) for held in self.buffer)
        self.buffer.clear()
        return kept

    def evaluate(self, history: CounterHistory) -> Learned | Mismatch | None:
        """Check the pending verdicts the history covers now (at most ``EVAL_PER_CALL``)."""
        period = history.period_ns
        if period is None:
            return None
        out: Learned | Mismatch | None = None
        for _ in range(EVAL_PER_CALL):
            if not self.pending:
                break
            t_frame, station, base = self.pending[0]
            t = t_frame + period // 2
            if not history.covered(t):
                break
            self.pending.popleft()
            # the count step this capture coincides with: seen, and at most a period before
            # it (a counter standing still, a stopped line, matches no capture)
            counter = history.at(t, stepped_after=t_frame - period)
            if counter is None:
                continue  # no evidence either way
            got = self.candidate(station, base, t_frame, counter)
            if got is not None:
                out = got
                if isinstance(got, Mismatch):
                    break  # the caller starts learning: what is left waits for that
        return out

    def candidate(
        self, station: str, base: int, t_frame_ns: int, counter: int
    ) -> Learned | Mismatch | None:
        """The counter read ``counter`` half a period after the frame of ``base``."""
        c = (counter - base - self.phases.get(station, 0)) % self.modulus
        if not self.learning:
            return self._verify(c)
        if t_frame_ns < self.since_ns:
            return None
        self._seen.append(c)
        best, n = Counter(self._seen).most_common(1)[0]
        if n < LEARN:
            return None
        previous, self.shift, self.learning = self.shift, best, False
        self._seen.clear()
        return Learned(best, previous)

    def _verify(self, c: int) -> Mismatch | None:
        self._seen.append(c)
        wrong = [x for x in self._seen if x != self.shift]
        if len(wrong) < DISAGREE:
            return None
        self._seen.clear()
        return Mismatch(self.shift, wrong[-1])
