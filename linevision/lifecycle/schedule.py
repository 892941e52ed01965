"""When a challenge is due and when a passed one stops counting (pure functions).

Times of day are local (a shift starts at 06:00 on the wall clock of the plant), given as
naive ``datetime`` values.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def minutes(hhmm: str) -> int:
    """``"06:30"`` -> 390.

    >>> minutes("22:05")
    1325
    """
    return int(hhmm[:2]) * 60 + int(hhmm[3:])


def last_slot(now: datetime, at: tuple[str, ...]) -> datetime | None:
    """The latest of the daily times ``at`` that is not after ``now`` (None: no times).

    >>> last_slot(datetime(2026, 5, 1, 3, 0), ("06:00", "14:00", "22:00"))
    datetime.datetime(2026, 4, 30, 22, 0)
    >>> last_slot(datetime(2026, 5, 1, 14, 0), ("06:00", "14:00", "22:00"))
    datetime.datetime(2026, 5, 1, 14, 0)
    >>> last_slot(datetime(2026, 5, 1, 14, 0), ()) is None
    True
    """
    if not at:
        return None
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    slots = [day + timedelta(minutes=minutes(t) + d * 24 * 60) for t in at for d in (-1, 0)]
    return max(s for s in slots if s <= now)


def slot_crossed(before: datetime, now: datetime, at: tuple[str, ...]) -> bool:
    """True when one of the times ``at`` lies in ``(before, now]``: a run is due.

    >>> slot_crossed(datetime(2026, 5, 1, 5, 59, 59), datetime(2026, 5, 1, 6, 0, 1), ("06:00",))
    True
    >>> slot_crossed(datetime(2026, 5, 1, 6, 0, 1), datetime(2026, 5, 1, 6, 0, 2), ("06:00",))
    False
    """
    slot = last_slot(now, at)
    return slot is not None and before < slot <= now


def overdue(
    passed_at: datetime,
    now: datetime,
    at: tuple[str, ...],
    grace: timedelta,
    max_age: timedelta | None,
) -> bool:
    """A pass at ``passed_at`` no longer counts at ``now``.

    It is overdue once a time of ``at`` has come since it, and ``grace`` after that time, or
    once it is older than ``max_age``.

    >>> t = datetime(2026, 5, 1, 6, 5)
    >>> overdue(t, datetime(2026, 5, 1, 13, 0), ("06:00", "14:00"), timedelta(minutes=15), None)
    False
    >>> overdue(t, datetime(2026, 5, 1, 14, 10), ("06:00", "14:00"), timedelta(minutes=15), None)
    False
    >>> overdue(t, datetime(2026, 5, 1, 14, 16), ("06:00", "14:00"), timedelta(minutes=15), None)
    True
    >>> overdue(t, datetime(2026, 5, 1, 9, 0), (), timedelta(0), timedelta(hours=2))
    True
    """
    if max_age is not None and now - passed_at > max_age:
        return True
    slot = last_slot(now, at)
    return slot is not None and passed_at < slot and now >= slot + grace
