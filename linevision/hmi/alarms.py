"""The page's alarms as state: raised past one threshold, cleared past another (hysteresis)
and only after ``clear_after_s`` clear, acknowledged by an operator (recorded: who, when).

Each evaluation hands :meth:`AlarmBoard.update` the conditions it found, one per alarm key
(``code`` and ``subject``: the station, camera or bridge): ``raised`` sets an alarm that is
off, ``cleared`` counts towards clearing one that is on; a key not handed over counts as
cleared. An alarm keeps the time it was raised, how many times it was raised this shift, and
its acknowledgement until it clears; raised again, it needs a new one.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import KW_ONLY, dataclass

from linevision.hmi.runbook import Runbook, entry
from linevision.log import get_logger

log = get_logger(__name__)

OPERATOR = re.compile(r"^[\w .,'()/-]{1,64}$")
"""An operator's name or badge number as the ack form takes it."""
_KEEP_CLEARED = 200
_LEVELS = {"critical": 0, "warning": 1}


MAX_ACK_BYTES = 4096


class AckError(ValueError):
    """An acknowledgement that cannot be taken; ``param`` names the bad field."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(f"{param}: {problem}")
        self.param = param
        self.problem = problem


def parse_ack(content_type: str, body: bytes) -> tuple[str, str]:
    """``(alarm, operator)`` of an acknowledgement's body, or AckError naming the field.

    >>> parse_ack("application/json", b'{"alarm": "low_yield:seal_edge", "operator": " Ana "}')
    ('low_yield:seal_edge', 'Ana')
    >>> try:
    ...     parse_ack("application/json", b'{"alarm": "x", "operator": 7}')
    ... except AckError as exc:
    ...     print(exc.param, "|", exc.problem)
    operator | who acknowledges, a string
    """
    if content_type != "application/json":
        raise AckError("body", "send a JSON object (Content-Type: application/json)")
    if len(body) > MAX_ACK_BYTES:
        raise AckError("body", f"at most {MAX_ACK_BYTES} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        raise AckError("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise AckError("body", 'a JSON object {"alarm": ..., "operator": ...}')
    unknown = sorted(str(k) for k in set(data) - {"alarm", "operator"})
    if unknown:
        raise AckError(unknown[0][:40], "unknown field")
    alarm, operator = data.get("alarm"), data.get("operator")
    if not isinstance(alarm, str) or not alarm:
        raise AckError("alarm", "the key of an active alarm, a string")
    if not isinstance(operator, str):
        raise AckError("operator", "who acknowledges, a string")
    return alarm, operator.strip()


@dataclass(frozen=True, slots=True)
class Condition:
    code: str
    subject: str
    level: str
    text: str
    _: KW_ONLY
    raised: bool
    cleared: bool
    bridge: bool = False
    """A bridge's own alarm: the bridge raises and clears it (it has its own hysteresis), so
    it goes the moment the bridge says so."""

    @property
    def key(self) -> str:
        return f"{self.code}:{self.subject}" if self.subject else self.code


@dataclass(slots=True)
class _Alarm:
    condition: Condition
    active: bool = False
    since_wall: float = 0.0
    count: int = 0
    clear_since: float | None = None
    acked_by: str | None = None
    acked_at: float | None = None


class AlarmBoard:
    """Not locked: HmiState holds its lock around every call."""

    def __init__(self, runbook: Runbook, clear_after_s: float) -> None:
        self.runbook = runbook
        self.clear_after_s = clear_after_s
        self._alarms: dict[str, _Alarm] = {}
        self.acks: deque[dict[str, object]] = deque(maxlen=50)

    def new_shift(self) -> None:
        """Counts are per shift: an alarm on across the change counts once in the new one."""
        for a in self._alarms.values():
            a.count = 1 if a.active else 0

    def update(self, conditions: list[Condition], now: float, wall: float) -> None:
        """``now``: monotonic seconds, ``wall``: epoch seconds."""
        seen = set()
        for c in conditions:
            seen.add(c.key)
            a = self._alarms.get(c.key)
            if a is None:
                if not c.raised:
                    continue
                a = self._alarms[c.key] = _Alarm(c)
            self._step(a, c, now, wall)
        for key, a in self._alarms.items():
            if key not in seen and a.active:
                self._step(a, None, now, wall)
        if len(self._alarms) > _KEEP_CLEARED:
            cleared = [k for k, a in self._alarms.items() if not a.active]
            for key in cleared[: len(self._alarms) - _KEEP_CLEARED]:
                del self._alarms[key]

    def _step(self, a: _Alarm, c: Condition | None, now: float, wall: float) -> None:
        if c is not None:
            a.condition = c if c.raised or a.active else a.condition
        if not a.active:
            if c is not None and c.raised:
                a.active, a.since_wall, a.clear_since = True, wall, None
                a.count += 1
                a.acked_by = a.acked_at = None
                log.warning("alarm_raised", alarm=c.key, level=c.level, text=c.text)
            return
        if c is not None and not c.cleared:
            a.clear_since = None
            return
        if a.clear_since is None:
            a.clear_since = now
        if now - a.clear_since >= self.clear_after_s or a.condition.bridge:
            a.active = False
            log.info("alarm_cleared", alarm=a.condition.key, on_s=round(wall - a.since_wall, 1))

    def acknowledge(self, key: str, operator: str, wall: float) -> dict[str, object]:
        """Record that ``operator`` saw the active alarm ``key``; AckError names a bad field."""
        if not OPERATOR.match(operator):
            raise AckError("operator", "1 to 64 letters, digits, spaces or .,'()/-")
        a = self._alarms.get(key)
        if a is None or not a.active:
            raise AckError("alarm", f"no active alarm {key[:80]!r}")
        if a.acked_by is None:
            a.acked_by, a.acked_at = operator, wall
            record = {"alarm": key, "by": operator, "at": wall, "text": a.condition.text}
            self.acks.appendleft(record)
            log.info("alarm_acknowledged", alarm=key, operator=operator, text=a.condition.text)
        return self._view(a)

    def _view(self, a: _Alarm) -> dict[str, object]:
        c = a.condition
        return {
            "key": c.key,
            "code": c.code,
            "subject": c.subject,
            "level": c.level,
            "text": c.text,
            "since": round(a.since_wall * 1000),
            "count": a.count,
            "acked": None
            if a.acked_by is None
            else {"by": a.acked_by, "at": round((a.acked_at or 0.0) * 1000)},
            "runbook": entry(self.runbook, c.code, bridge=c.bridge),
        }

    def view(self) -> list[dict[str, object]]:
        """Active alarms: unacknowledged first, critical before warning, newest first."""
        active = [a for a in self._alarms.values() if a.active]
        active.sort(key=lambda a: (a.acked_by is not None, _LEVELS.get(a.condition.level, 2),
                                   -a.since_wall))  # fmt: skip
        return [self._view(a) for a in active]
