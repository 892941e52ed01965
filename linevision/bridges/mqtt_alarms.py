"""The line's and each station's active alarms, as the MQTT bridge publishes them (pure).

Line: the daemon's (a dead thread, a camera not running, from its heartbeat), this bridge's
(``daemon_down``, ``verdicts_lost`` for a minute), and the other bridges' (their health's
active codes, ``bridge_down`` when their health stops; their one-off events for a minute).
Station: NG verdicts of a fault reason in the last minute (``fault_<reason>``) and a shift
yield under ``min_yield`` (``low_yield``), the operator page's rules.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from linevision.bridges.alarms import AlarmMessage, BridgeHealth
from linevision.bus.wire import HeartbeatMessage

WINDOW_NS = 60 * 1_000_000_000
"""One-off events and fault verdicts stay on the board this long."""
REPORT_STALE_NS = 3 * 1_000_000_000
MIN_CELLS_FOR_YIELD = 50

Condition = tuple[str, str, str, dict[str, object]]
"""(source, alarm, severity, detail)."""


@dataclass
class _Bridge:
    name: str
    health: BridgeHealth | None = None
    health_ns: int = 0
    alarms: dict[str, AlarmMessage] = field(default_factory=dict)


class AlarmBoard:
    def __init__(self, bridge: str, min_yield: float, now_ns: int) -> None:
        self.bridge = bridge
        self.min_yield = min_yield
        self._started_ns = now_ns
        self._heartbeat: HeartbeatMessage | None = None
        self.daemon_alive: bool | None = None
        self._events: deque[tuple[int, str, str, dict[str, object]]] = deque(maxlen=1000)
        self._faults: dict[str, deque[tuple[int, str]]] = {}
        self._bridges: dict[str, _Bridge] = {}
        self._since: dict[tuple[str | None, str, str], int] = {}

    # ---- what comes in ----------------------------------------------------------------

    def heartbeat(self, hb: HeartbeatMessage) -> None:
        self._heartbeat = hb

    def event(self, source: str, alarm: str, detail: dict[str, object], now_ns: int) -> None:
        """A one-off (``verdicts_lost``): on the board for a minute."""
        self._events.append((now_ns, source, alarm, detail))

    def verdict(self, station: str, verdict: str, reason: str | None, now_ns: int) -> None:
        if verdict == "NG" and reason not in (None, "defect"):
            self._faults.setdefault(station, deque(maxlen=10_000)).append((now_ns, str(reason)))

    def report(self, endpoint: str, msg: AlarmMessage | BridgeHealth, now_ns: int) -> None:
        b = self._bridges.setdefault(endpoint, _Bridge(endpoint))
        if isinstance(msg, BridgeHealth):
            b.name, b.health, b.health_ns = msg.bridge, msg, now_ns
            return
        b.name = msg.source
        if not msg.active:
            b.alarms.pop(msg.alarm, None)
            return
        if (
            b.health is not None
            and msg.alarm not in b.health.active
            and not msg.detail.get("repeat")
        ):
            self.event(msg.source, msg.alarm, msg.detail, now_ns)
        b.alarms[msg.alarm] = msg

    def watch(self, endpoint: str) -> None:
        self._bridges.setdefault(endpoint, _Bridge(endpoint))

    # ---- what goes out ----------------------------------------------------------------

    def line(self, now_ns: int) -> list[Condition]:
        out: list[Condition] = []
        if self.daemon_alive is False:
            out.append((self.bridge, "daemon_down", "error", {}))
        hb = self._heartbeat
        if hb is not None and self.daemon_alive is not False:
            dead = sorted(n for n, e in hb.threads.items() if e.get("alive") is False)
            if dead:
                out.append(("daemon", "thread_dead", "error", {"threads": dead}))
            down = {
                c: str(i.get("state")) for c, i in hb.cameras.items() if i.get("state") != "running"
            }
            if down:
                out.append(("daemon", "camera_down", "error", {"cameras": down}))
        out.extend(self._bridge_conditions(now_ns))
        seen: set[tuple[str, str]] = set()
        for t, source, alarm, detail in reversed(self._events):
            if now_ns - t < WINDOW_NS and (source, alarm) not in seen:
                seen.add((source, alarm))
                out.append((source, alarm, "warning", detail))
        return out

    def _bridge_conditions(self, now_ns: int) -> list[Condition]:
        out: list[Condition] = []
        for endpoint, b in sorted(self._bridges.items()):
            if b.health is None:
                if now_ns - self._started_ns > REPORT_STALE_NS:
                    out.append((b.name, "bridge_down", "error", {"endpoint": endpoint}))
                continue
            age = now_ns - b.health_ns
            if age > REPORT_STALE_NS or b.health.state == "down":
                detail = {"endpoint": endpoint, "silent_s": round(age / 1e9, 1)}
                out.append((b.name, "bridge_down", "error", detail))
                continue
            for code in b.health.active:
                msg = b.alarms.get(code)
                detail = (
                    {} if msg is None else {k: v for k, v in msg.detail.items() if k != "repeat"}
                )
                severity = "error" if msg is None else msg.severity
                out.append((b.name, code, severity, detail))
        return out

    def station(self, name: str, shift: Counter[str], now_ns: int) -> list[Condition]:
        out: list[Condition] = []
        faults = self._faults.get(name)
        while faults and now_ns - faults[0][0] >= WINDOW_NS:
            faults.popleft()
        for reason, n in sorted(Counter(r for _, r in faults or ()).items()):
            out.append((name, f"fault_{reason}", "error", {"count": n, "window_s": 60}))
        ok = shift["OK"]
        total = ok + sum(n for k, n in shift.items() if k.startswith("NG:"))
        if total >= MIN_CELLS_FOR_YIELD and ok / total < self.min_yield:
            detail: dict[str, object] = {"yield": round(ok / total, 4), "total": total}
            out.append((name, "low_yield", "warning", detail))
        return out

    def stamp(
        self, scope: str | None, conditions: list[Condition], now_ns: int
    ) -> list[dict[str, object]]:
        """The payload's ``active`` list: each condition with the time it was first seen."""
        keys = set()
        out: list[dict[str, object]] = []
        for source, alarm, severity, detail in conditions:
            key = (scope, source, alarm)
            keys.add(key)
            since = self._since.setdefault(key, now_ns)
            out.append(
                {
                    "source": source,
                    "alarm": alarm,
                    "severity": severity,
                    "detail": detail,
                    "since_ns": since,
                }
            )
        for key in [k for k in self._since if k[0] == scope and k not in keys]:
            del self._since[key]
        return out
