"""What the operator page shows, kept from the bus: per station, per shift, latency, alarms.

:class:`HmiState` is fed from the subscriber thread (cheap per message) and read as a JSON
snapshot at most ``push_hz`` times a second, whatever the verdict rate.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from linevision.bridges.alarms import AlarmMessage, BridgeHealth
from linevision.bus import HeartbeatMessage, VerdictMessage
from linevision.hmi.bridges import BridgeBoard

RECENT_ROWS = 12
LATENCY_WINDOW = 2000
CHART_SECONDS = 120
ALARM_WINDOW_S = 60.0
RESTART_ALARM_S = 300.0
HEARTBEAT_LOST_S = 3.5
MIN_CELLS_FOR_YIELD = 50


def shift_start(t: datetime, starts: tuple[str, ...]) -> datetime:
    """The start of the shift ``t`` (local, naive) falls in.

    >>> shift_start(datetime(2026, 5, 1, 3, 0), ("06:00", "14:00", "22:00"))
    datetime.datetime(2026, 4, 30, 22, 0)
    >>> shift_start(datetime(2026, 5, 1, 14, 0), ("06:00", "14:00", "22:00"))
    datetime.datetime(2026, 5, 1, 14, 0)
    """
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    minutes = sorted(int(s[:2]) * 60 + int(s[3:]) for s in starts) or [0]
    candidates = [day + timedelta(minutes=m) for m in minutes]
    candidates = [c - timedelta(days=1) for c in candidates] + candidates
    return max(c for c in candidates if c <= t)


@dataclass
class _Station:
    recent: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=RECENT_ROWS))
    last_ng: dict[str, object] | None = None
    shift: Counter[str] = field(default_factory=Counter)
    run: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    model: dict[str, object] | None = None
    recipe: str | None = None


class HmiState:
    def __init__(
        self,
        shifts: tuple[str, ...] = ("06:00", "14:00", "22:00"),
        budget_ms: float = 30.0,
        min_yield: float = 0.95,
        bridges: tuple[str, ...] = (),
    ) -> None:
        self.shifts = shifts
        self.budget_ms = budget_ms
        self.min_yield = min_yield
        self._lock = threading.Lock()
        self._stations: dict[str, _Station] = {}
        self._shift: datetime | None = None
        self._latency: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._second: int | None = None
        self._second_values: list[float] = []
        self._chart: deque[tuple[int, float, float]] = deque(maxlen=CHART_SECONDS)
        self._faults: deque[tuple[float, str, str]] = deque(maxlen=500)
        self._gaps: deque[tuple[float, int]] = deque(maxlen=100)
        self._run_id: str | None = None
        self._restarted_at: float | None = None
        self._last_seq = 0
        self._heartbeat: HeartbeatMessage | None = None
        self._heartbeat_at: float | None = None
        self._started = time.monotonic()
        self._bridges = BridgeBoard(bridges, self._started)
        self.verdicts = 0
        self.version = 0

    def ingest(self, msg: VerdictMessage | HeartbeatMessage) -> None:
        now = time.monotonic()
        with self._lock:
            self.version += 1
            if isinstance(msg, HeartbeatMessage):
                self._heartbeat, self._heartbeat_at = msg, now
                self._track_run(msg.run_id, now)
                return
            self._verdict(msg, now)

    def ingest_report(self, endpoint: str, msg: AlarmMessage | BridgeHealth) -> None:
        """A validated health or alarm message from the bridge at ``endpoint``."""
        with self._lock:
            self.version += 1
            self._bridges.ingest(endpoint, msg, time.monotonic())

    def report_invalid(self, endpoint: str) -> None:
        with self._lock:
            self.version += 1
            self._bridges.invalid(endpoint)

    def _track_run(self, run_id: str, now: float) -> None:
        if self._run_id is not None and run_id != self._run_id:
            self._restarted_at = now
            self._last_seq = 0
            for st in self._stations.values():
                st.run.clear()
        self._run_id = run_id

    def _verdict(self, m: VerdictMessage, now: float) -> None:
        self.verdicts += 1
        self._track_run(m.run_id, now)
        if self._last_seq and m.seq > self._last_seq + 1:
            self._gaps.append((now, m.seq - self._last_seq - 1))
        self._last_seq = max(self._last_seq, m.seq)
        local = datetime.fromtimestamp(m.t_frame_ns / 1e9)  # noqa: DTZ006  (shifts are local time)
        start = shift_start(local, self.shifts)
        if self._shift is None or start > self._shift:
            self._shift = start
            for st in self._stations.values():
                st.shift.clear()
                st.reasons.clear()
        st = self._stations.setdefault(m.station, _Station())
        row: dict[str, object] = {
            "seq": m.seq,
            "run_id": m.run_id,
            "cell_id": m.cell_id,
            "verdict": m.verdict,
            "reason": m.reason,
            "label": m.label,
            "score": None if m.score is None else round(m.score, 3),
            "latency_ms": m.latency_ms,
            "recipe": m.recipe,
            "t_frame_ns": m.t_frame_ns,
        }
        st.recent.appendleft(row)
        st.run[m.verdict] += 1
        if start == self._shift:
            st.shift[m.verdict] += 1
        if m.verdict == "NG":
            st.reasons[m.reason or "defect"] += 1
            st.last_ng = {**row, "defects": [d.model_dump() for d in m.defects]}
            if m.reason not in (None, "defect"):
                self._faults.append((now, m.station, m.reason))
        if m.model is not None:
            st.model = {"name": m.model.name, "version": m.model.version, "sha256": m.model.sha256}
        st.recipe = m.recipe
        self._latency.append(m.latency_ms)
        second = int(now)
        if self._second != second:
            self._close_second()
            self._second = second
        self._second_values.append(m.latency_ms)

    def _close_second(self) -> None:
        if self._second is not None and self._second_values:
            a = np.asarray(self._second_values)
            self._chart.append(
                (self._second, float(np.percentile(a, 50)), float(np.percentile(a, 99)))
            )
        self._second_values = []

    def snapshot(self) -> dict[str, object]:
        now = time.monotonic()
        with self._lock:
            lat = np.asarray(self._latency) if self._latency else None
            stations = {name: self._station_view(name, st) for name, st in self._stations.items()}
            chart = [
                {"t": round(s - now, 1), "p50": round(p50, 2), "p99": round(p99, 2)}
                for s, p50, p99 in self._chart
            ]
            hb = self._heartbeat
            hb_age = None if self._heartbeat_at is None else now - self._heartbeat_at
            snap: dict[str, object] = {
                "version": self.version,
                "run_id": self._run_id,
                "last_seq": self._last_seq,
                "verdicts_seen": self.verdicts,
                "shift_start": None if self._shift is None else self._shift.isoformat(),
                "budget_ms": self.budget_ms,
                "latency": {
                    "p50": None if lat is None else round(float(np.percentile(lat, 50)), 2),
                    "p99": None if lat is None else round(float(np.percentile(lat, 99)), 2),
                    "max": None if lat is None else round(float(lat.max()), 2),
                    "window": 0 if lat is None else len(lat),
                    "chart": chart,
                },
                "stations": stations,
                "health": {
                    "heartbeat_age_s": None if hb_age is None else round(hb_age, 1),
                    "cameras": {} if hb is None else hb.cameras,
                    "station_counters": {} if hb is None else hb.stations,
                    "bridges": self._bridges.view(now),
                },
            }
            snap["alarms"] = self._alarms(now, hb, hb_age) + self._bridges.alarms(now)
        return snap

    def snapshot_json(self) -> str:
        return json.dumps(self.snapshot(), separators=(",", ":"), default=str)

    def _station_view(self, name: str, st: _Station) -> dict[str, object]:
        def yield_of(c: Counter[str]) -> float | None:
            total = c["OK"] + c["NG"]
            return None if total == 0 else round(c["OK"] / total, 4)

        return {
            "name": name,
            "recent": list(st.recent),
            "last_ng": st.last_ng,
            "shift": {"ok": st.shift["OK"], "ng": st.shift["NG"], "yield": yield_of(st.shift)},
            "run": {"ok": st.run["OK"], "ng": st.run["NG"], "yield": yield_of(st.run)},
            "reasons": dict(st.reasons.most_common()),
            "model": st.model,
            "recipe": st.recipe,
        }

    def _alarms(
        self, now: float, hb: HeartbeatMessage | None, hb_age: float | None
    ) -> list[dict[str, str]]:
        alarms: list[dict[str, str]] = []

        def add(level: str, code: str, text: str) -> None:
            alarms.append({"level": level, "code": code, "text": text})

        if hb_age is None and now - self._started > HEARTBEAT_LOST_S:
            add("critical", "daemon_down", "no heartbeat from the daemon")
        elif hb_age is not None and hb_age > HEARTBEAT_LOST_S:
            add("critical", "daemon_down", f"no heartbeat for {hb_age:.0f} s")
        for cam, info in ({} if hb is None else hb.cameras).items():
            state = info.get("state", "unknown")
            if state != "running":
                add("critical", "camera_down", f"camera {cam} is {state}")
        recent = list(self._latency)[-200:]
        if recent and float(np.percentile(np.asarray(recent), 99)) > self.budget_ms:
            add("warning", "latency_budget", f"p99 latency over the {self.budget_ms:g} ms budget")
        if self._restarted_at is not None and now - self._restarted_at < RESTART_ALARM_S:
            add("warning", "restart", "the daemon restarted (new run id)")
        alarms.extend(self._flow_alarms(now))
        return alarms

    def _flow_alarms(self, now: float) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        faults = Counter(
            (station, reason) for t, station, reason in self._faults if now - t < ALARM_WINDOW_S
        )
        for (station, reason), n in sorted(faults.items()):
            text = f"{station}: {n} NG {reason} in the last minute"
            out.append({"level": "critical", "code": f"fault_{reason}", "text": text})
        missed = sum(n for t, n in self._gaps if now - t < ALARM_WINDOW_S)
        if missed:
            text = f"{missed} verdicts missed on the bus in the last minute"
            out.append({"level": "warning", "code": "verdict_gap", "text": text})
        for name, st in self._stations.items():
            total = st.shift["OK"] + st.shift["NG"]
            if total >= MIN_CELLS_FOR_YIELD and st.shift["OK"] / total < self.min_yield:
                text = f"{name}: shift yield {100.0 * st.shift['OK'] / total:.1f} %"
                out.append({"level": "warning", "code": "low_yield", "text": text})
        return out
