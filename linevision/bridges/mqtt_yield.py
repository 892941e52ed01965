"""Each station's OK/NG by reason for the shift, counted once per verdict (pure, no I/O).

A verdict counts in the shift its cell was captured in (``t_frame_ns``, local time, the same
starts as the operator page). The current shift moves on with the verdicts and with the
clock (a line idle at the change of shift still starts the new one). When it moves on, the
shift that ended is *finalised*: a ``final`` yield report goes through the outbox, so the
plant gets each shift's closing figures once, whatever was down at the time. A verdict
counted in a shift already finalised (a backlog read after the change) makes another final,
``revision`` + 1, at the next period.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from linevision.types import shift_start

Key = tuple[str, str, str]
"""(shift start, station, ``OK`` or ``NG:<reason>``)."""


def local_shift(t_ns: int, starts: tuple[str, ...]) -> str:
    local = datetime.fromtimestamp(t_ns / 1e9)  # noqa: DTZ006  (shifts are local time)
    return shift_start(local, starts).isoformat()


def count_key(verdict: str, reason: str | None) -> str:
    return "OK" if verdict == "OK" else f"NG:{reason or 'defect'}"


class ShiftTally:
    def __init__(
        self,
        starts: tuple[str, ...],
        restored: dict[Key, int] | None = None,
        current: str | None = None,
        revisions: dict[str, int] | None = None,
    ) -> None:
        self.starts = starts
        self.counts: dict[str, dict[str, Counter[str]]] = {}
        for (shift, station, key), n in (restored or {}).items():
            self.counts.setdefault(shift, {}).setdefault(station, Counter())[key] += n
        self.current = current
        self.revisions: dict[str, int] = dict(revisions or {})
        """Shift -> the revision of its last final (absent: not finalised)."""
        self.dirty: set[str] = set()
        """Finalised shifts that have counted verdicts since."""

    def add(
        self, station: str, verdict: str, reason: str | None, t_frame_ns: int
    ) -> tuple[Key, list[str]]:
        """Count one verdict; returns its tally key and the shifts to finalise now."""
        shift = local_shift(t_frame_ns, self.starts)
        ended = self._move_to(shift)
        key = count_key(verdict, reason)
        self.counts.setdefault(shift, {}).setdefault(station, Counter())[key] += 1
        if shift in self.revisions:
            self.dirty.add(shift)
        return (shift, station, key), ended

    def tick(self, now_ns: int) -> list[str]:
        """The clock's turn: the shifts to finalise (ended ones, and corrections)."""
        ended = self._move_to(local_shift(now_ns, self.starts))
        dirty, self.dirty = sorted(self.dirty - set(ended)), set()
        return ended + dirty

    def _move_to(self, shift: str) -> list[str]:
        if self.current is None:
            self.current = shift
            return []
        if shift <= self.current:
            return []
        ended = self.current
        self.current = shift
        return [ended] if ended in self.counts else []

    def finalised(self, shift: str) -> int:
        """Record that a final of ``shift`` is going out; returns its revision."""
        rev = self.revisions[shift] + 1 if shift in self.revisions else 0
        self.revisions[shift] = rev
        self.dirty.discard(shift)
        return rev

    def stations(self, shift: str) -> dict[str, Counter[str]]:
        return self.counts.get(shift, {})

    def keep(self) -> set[str]:
        """The shifts worth keeping: the current one and the one before it."""
        ordered = sorted(self.counts)
        keep = set(ordered[-2:])
        if self.current is not None:
            keep.add(self.current)
        for old in [s for s in self.counts if s not in keep]:
            del self.counts[old]
            self.revisions.pop(old, None)
            self.dirty.discard(old)
        return keep


def figures(counts: Counter[str]) -> dict[str, object]:
    """OK, NG, total, yield and NG by reason from one station's shift counts.

    >>> figures(Counter({"OK": 8, "NG:defect": 1, "NG:timeout": 1}))["yield"]
    0.8
    """
    ok = counts["OK"]
    by_reason = {k[3:]: n for k, n in sorted(counts.items()) if k.startswith("NG:") and n}
    ng = sum(by_reason.values())
    total = ok + ng
    return {
        "ok": ok,
        "ng": ng,
        "total": total,
        "yield": None if total == 0 else round(ok / total, 6),
        "ng_by_reason": by_reason,
    }
