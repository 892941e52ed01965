"""The reject station's pure core: the shift register and the counter's arithmetic. No I/O.

Tracked cell ids live modulo ``2 ** width`` of the line's counter, so a 16- or 32-bit counter
that wraps (65535 -> 0, 2^32-1 -> 0) keeps addressing the same cells as the daemon's
``cell_id`` (taken modulo the same width).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

VerdictValue = Literal["OK", "NG"]
StepKind = Literal["still", "advance", "forward", "backward", "reset"]
Reason = Literal["ng", "no_verdict", "ok", "counter_jump"]
"""``counter_jump``: fired because the cell came by in the window after a counter jump."""


@dataclass(frozen=True, slots=True)
class CounterStep:
    """How the counter moved between two reads.

    ``advance``: 1 to ``max_step`` cells forward (a wrap included); the others are jumps:
    ``forward`` (more than ``max_step``), ``backward``, ``reset`` (to 0).
    """

    kind: StepKind
    delta: int
    """Cells moved, the short way round the counter's modulus (negative: backward)."""
    wrapped: bool


def classify(prev: int, now: int, width: int, max_step: int) -> CounterStep:
    """
    >>> classify(65535, 0, 16, 4)
    CounterStep(kind='advance', delta=1, wrapped=True)
    >>> classify(2**32 - 1, 1, 32, 4)
    CounterStep(kind='advance', delta=2, wrapped=True)
    >>> classify(100, 6717, 32, 4)
    CounterStep(kind='forward', delta=6617, wrapped=False)
    >>> classify(100, 90, 32, 4)
    CounterStep(kind='backward', delta=-10, wrapped=False)
    >>> classify(100, 0, 16, 4)
    CounterStep(kind='reset', delta=-100, wrapped=False)
    >>> classify(7, 7, 16, 4).kind
    'still'
    """
    m = 1 << width
    prev, now = prev % m, now % m
    d = (now - prev) % m
    signed = d - m if d > m // 2 else d
    if d == 0:
        return CounterStep("still", 0, wrapped=False)
    if d <= max_step:
        return CounterStep("advance", d, wrapped=now < prev)
    kind: StepKind = "reset" if now == 0 else "backward" if signed < 0 else "forward"
    return CounterStep(kind, signed, wrapped=False)


@dataclass(frozen=True, slots=True)
class RejectDecision:
    cell_id: int
    fire: bool
    reason: Reason
    verdicts: dict[str, VerdictValue | None]


@dataclass(slots=True)
class Changes:
    """What changed since the last ``take_changes``: for the store (write-behind)."""

    cleared: bool = False
    cells: dict[int, dict[str, VerdictValue] | None] = field(default_factory=dict)
    """Tracked id -> its verdicts now (None: gone)."""


class CellTracker:
    """Shift register: ``record_verdict`` fills it, ``arrive`` empties it, one cell at a time.

    >>> t = CellTracker({"a": 0, "b": 10})
    >>> t.record_verdict("a", 5, "OK"), t.record_verdict("b", -5, "OK")
    (True, True)
    >>> t.arrive(5).fire, t.arrive(6).reason
    (False, 'no_verdict')
    >>> t.record_verdict("a", 6, "NG")  # cell 6 is already past the station: too late
    False
    """

    def __init__(
        self, stations: dict[str, int], memory: int = 100_000, modulus: int = 1 << 32
    ) -> None:
        self.stations = stations
        self.modulus = modulus
        self.memory = min(memory, modulus // 2)
        self.position: int | None = None
        """The tracked id last at the reject station (None: not known yet)."""
        self.shift = 0
        """Counter count minus the daemon's numbering (learned: linevision.bridges.reject_sync)."""
        self.valid_from_ns = 0
        """Verdicts of frames captured before this (wall clock, ns) belong to an old numbering."""
        self.dropped = 0
        self.late = 0
        self.stale = 0
        self.ng_cells = 0
        """Tracked cells holding at least one NG."""
        self._cells: OrderedDict[int, dict[str, VerdictValue]] = OrderedDict()
        self._changes = Changes()

    def key(self, cell_id: int, station: str) -> int:
        return (cell_id + self.stations[station] + self.shift) % self.modulus

    def ahead(self, key: int) -> int | None:
        """Cells between the station and ``key`` (0 or negative: at or past the station)."""
        if self.position is None:
            return None
        d = (key - self.position) % self.modulus
        return d - self.modulus if d > self.modulus // 2 else d

    def record_verdict(
        self, station: str, cell_id: int, verdict: VerdictValue, t_frame_ns: int | None = None
    ) -> bool:
        """Keep a verdict; False if it is of no use (other station, old numbering, too late)."""
        if station not in self.stations:
            return False
        if t_frame_ns is not None and t_frame_ns < self.valid_from_ns:
            self.stale += 1
            return False
        key = self.key(cell_id, station)
        ahead = self.ahead(key)
        if ahead is not None and ahead <= 0:
            self.late += 1
            return False
        got = self._cells.get(key)
        if got is None:
            got = self._cells[key] = {}
        if got.get(station) != "NG":
            if verdict == "NG" and "NG" not in got.values():
                self.ng_cells += 1
            got[station] = verdict
        self._changes.cells[key] = got
        while len(self._cells) > self.memory:
            old, gone = self._cells.popitem(last=False)
            self._forget(old, gone)
            self.dropped += 1
        return True

    def _forget(self, key: int, got: dict[str, VerdictValue]) -> None:
        if "NG" in got.values():
            self.ng_cells -= 1
        self._changes.cells[key] = None

    def arrive(self, cell: int) -> RejectDecision:
        """``cell`` is at the reject station now: its decision; it leaves the register."""
        key = cell % self.modulus
        self.position = key
        got = self._cells.pop(key, None)
        if got is None:
            got = {}
        else:
            self._forget(key, got)
        verdicts: dict[str, VerdictValue | None] = {s: got.get(s) for s in self.stations}
        if any(v == "NG" for v in verdicts.values()):
            return RejectDecision(key, fire=True, reason="ng", verdicts=verdicts)
        if any(v is None for v in verdicts.values()):
            return RejectDecision(key, fire=True, reason="no_verdict", verdicts=verdicts)
        return RejectDecision(key, fire=False, reason="ok", verdicts=verdicts)

    def resync(self, position: int, valid_from_ns: int) -> tuple[int, int]:
        """The counter jumped: forget every cell (they are keyed in the old numbering).

        Returns ``(cells, ng_cells)`` forgotten. Constant work: the register is replaced.
        """
        forgotten = (len(self._cells), self.ng_cells)
        self._cells = OrderedDict()
        self.ng_cells = 0
        self.position = position % self.modulus
        self.valid_from_ns = valid_from_ns
        self._changes = Changes(cleared=True)
        return forgotten

    def restore(self, cells: list[tuple[int, dict[str, VerdictValue]]]) -> None:
        """Load cells saved by the store, oldest first (no change is recorded)."""
        for key, got in cells:
            self._cells[key % self.modulus] = got
            self.ng_cells += "NG" in got.values()

    def snapshot(self) -> Changes:
        """Every cell, as a change set that replaces the whole store; resets the changes."""
        self._changes = Changes()
        return Changes(cleared=True, cells=dict(self._cells))

    def take_changes(self) -> Changes:
        out, self._changes = self._changes, Changes()
        return out

    @property
    def dirty(self) -> bool:
        return self._changes.cleared or bool(self._changes.cells)

    def __len__(self) -> int:
        return len(self._cells)
