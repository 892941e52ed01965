"""What the operator page shows, kept from the bus: per station, per shift, latency, alarms.

:class:`HmiState` is fed from the subscriber thread (cheap per message) and read as a JSON
snapshot at most ``push_hz`` times a second, whatever the verdict rate. Its alarms are
evaluated on each snapshot and by the feed's loop (:meth:`HmiState.tick`) whether or not a
page is open, so an alarm's "since" is when it happened, not when someone looked.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime

from linevision.bridges.alarms import AlarmMessage, BridgeHealth
from linevision.bus.wire import HeartbeatMessage, VerdictMessage
from linevision.config import Config, HmiConfig
from linevision.hmi import runbook
from linevision.hmi.alarms import AlarmBoard, Condition
from linevision.hmi.bridges import BridgeBoard
from linevision.hmi.figures import LatencyWindow, ShiftFigures, label_keys
from linevision.hmi.lifecycle import LifecycleBoard
from linevision.types import shift_start

RECENT_ROWS = 12
RESTART_ALARM_S = 300.0
HEARTBEAT_LOST_S = 3.5
IDLE_MIN_S = 5.0
"""A station with no verdict for this long (or ten of its cell periods, if longer) is idle."""


@dataclass(frozen=True)
class StationMeta:
    """What the configuration says of a station (the page draws its tile before any verdict)."""

    kind: str | None = None
    cameras: tuple[str, ...] = ()
    rate_hz: float | None = None
    lines: int | None = None
    mm_per_line: float | None = None


def stations_of(cfg: Config) -> dict[str, StationMeta]:
    """Each configured station's kind, cameras, cell rate and (line scan) lines per frame."""
    out = {}
    for sc in cfg.stations:
        cam = cfg.camera(sc.cameras[0])
        ls = cam.line_scan
        software = cam.trigger.mode == "software"
        lines = None if ls is None or cam.roi is None else ls.strips_per_cell * cam.roi.height
        out[sc.name] = StationMeta(
            kind=sc.type,
            cameras=sc.cameras,
            rate_hz=cam.trigger.rate_hz if software else None,
            lines=lines,
            mm_per_line=None if ls is None else ls.mm_per_line,
        )
    return out


@dataclass
class _Station:
    meta: StationMeta
    window_cells: int
    recent: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=RECENT_ROWS))
    last_at: float | None = None
    last_ng: dict[str, object] | None = None
    run: Counter[str] = field(default_factory=Counter)
    shift: ShiftFigures | None = None
    window: deque[bool] = field(default_factory=deque)
    window_ok: int = 0
    model: dict[str, object] | None = None
    recipe: str | None = None

    def slide(self, ok: bool) -> None:  # noqa: FBT001  (one verdict, OK or not)
        """The last ``window_cells`` verdicts, for the yield alarm."""
        self.window.append(ok)
        self.window_ok += ok
        if len(self.window) > self.window_cells:
            self.window_ok -= self.window.popleft()


def _yield(ok: int, ng: int) -> float | None:
    return None if ok + ng == 0 else round(ok / (ok + ng), 4)


class HmiState:
    def __init__(
        self,
        cfg: HmiConfig | None = None,
        stations: dict[str, StationMeta] | None = None,
        book: runbook.Runbook | None = None,
    ) -> None:
        self.cfg = cfg = cfg if cfg is not None else HmiConfig()
        self.shifts = cfg.shifts
        self.budget_ms = cfg.latency_budget_ms
        self._lock = threading.Lock()
        self._stations: dict[str, _Station] = {}
        for name, meta in (stations or {}).items():
            self._station(name, meta)
        self._shift: datetime | None = None
        self._latency = LatencyWindow()
        self._faults: deque[tuple[float, str, str]] = deque(maxlen=5000)
        self._gaps: deque[tuple[float, int]] = deque(maxlen=100)
        self._run_id: str | None = None
        self._restarted_at: float | None = None
        self._last_seq = 0
        self._heartbeat: HeartbeatMessage | None = None
        self._heartbeat_at: float | None = None
        self._started = time.monotonic()
        self._started_wall = time.time()
        self._bridges = BridgeBoard(cfg.bridges, self._started)
        self.alarms = AlarmBoard(runbook.load() if book is None else book, cfg.alarms.clear_after_s)
        self._lifecycle = LifecycleBoard()
        self.verdicts = 0
        self.version = 0

    def _station(self, name: str, meta: StationMeta | None = None) -> _Station:
        st = self._stations.get(name)
        if st is None:
            st = _Station(meta or StationMeta(), self.cfg.alarms.yield_cells)
            self._stations[name] = st
        return st

    def ingest(self, msg: VerdictMessage | HeartbeatMessage) -> None:
        now = time.monotonic()
        with self._lock:
            self.version += 1
            if isinstance(msg, HeartbeatMessage):
                self._heartbeat, self._heartbeat_at = msg, now
                self._lifecycle.ingest(msg.stations, now)
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
            self.alarms.new_shift()
        st = self._station(m.station)
        if st.shift is None or st.shift.start < self._shift:
            st.shift = ShiftFigures(self._shift)
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
        st.last_at = now
        st.run[m.verdict] += 1
        st.slide(m.verdict == "OK")
        if start == self._shift:
            kinds = label_keys(m.reason, m.label, [d.kind for d in m.defects])
            st.shift.add(local, m.verdict, m.reason, kinds)
        if m.verdict == "NG":
            st.last_ng = {**row, "defects": [d.model_dump() for d in m.defects]}
            if m.reason not in (None, "defect"):
                self._faults.append((now, m.station, m.reason))
        if m.model is not None:
            st.model = {"name": m.model.name, "version": m.model.version, "sha256": m.model.sha256}
        st.recipe = m.recipe
        self._latency.add(int(now), m.station, m.latency_ms)

    def tick(self) -> None:
        """Evaluate the alarms now (the feed's loop calls this a few times a second)."""
        with self._lock:
            self._evaluate(time.monotonic())

    def _evaluate(self, now: float) -> None:
        hb_age = None if self._heartbeat_at is None else now - self._heartbeat_at
        self.alarms.update(self._conditions(now, hb_age), now, time.time())

    def snapshot(self) -> dict[str, object]:
        now = time.monotonic()
        with self._lock:
            self._evaluate(now)
            hb = self._heartbeat
            hb_age = None if self._heartbeat_at is None else now - self._heartbeat_at
            latency = self._latency.view(int(now))
            alarms = self.alarms.view()
            stations = {
                name: self._station_view(name, st, now) for name, st in self._stations.items()
            }
            for name, view in stations.items():
                view["latency"] = latency["stations"].get(name)  # type: ignore[attr-defined]
                view["state"] = self._station_state(name, self._stations[name], now, alarms)
            recipes = {st.recipe for st in self._stations.values() if st.recipe}
            return {
                "version": self.version,
                "server_ms": round(time.time() * 1000),
                "started_ms": round(self._started_wall * 1000),
                "run_id": self._run_id,
                "last_seq": self._last_seq,
                "verdicts_seen": self.verdicts,
                "shift_start": None if self._shift is None else self._shift.isoformat(),
                "budget_ms": self.budget_ms,
                "min_yield": self.cfg.min_yield,
                "recipes": sorted(set(recipes)),
                "latency": latency,
                "stations": stations,
                "lifecycle": self._lifecycle.view(now),
                "health": {
                    "heartbeat_age_s": None if hb_age is None else round(hb_age, 1),
                    "cameras": {} if hb is None else hb.cameras,
                    "station_counters": {} if hb is None else hb.stations,
                    "threads": {} if hb is None else hb.threads,
                    "bridges": self._bridges.view(now),
                },
                "alarms": alarms,
                "acks": list(self.alarms.acks)[:10],
            }

    def snapshot_json(self) -> str:
        return json.dumps(self.snapshot(), separators=(",", ":"), default=str)

    def acknowledge(self, key: str, operator: str) -> dict[str, object]:
        """An operator acknowledges the active alarm ``key`` (AckError names a bad field)."""
        with self._lock:
            self.version += 1
            return self.alarms.acknowledge(key, operator, time.time())

    def _station_view(self, name: str, st: _Station, now: float) -> dict[str, object]:
        n = len(st.window)
        meta = st.meta
        return {
            "name": name,
            "kind": meta.kind,
            "cameras": list(meta.cameras),
            "lines": meta.lines,
            "mm_per_line": meta.mm_per_line,
            "last": st.recent[0] if st.recent else None,
            "age_s": None if st.last_at is None else round(now - st.last_at, 1),
            "recent": list(st.recent),
            "last_ng": st.last_ng,
            "shift": None if st.shift is None else st.shift.view(),
            "run": {
                "ok": st.run["OK"],
                "ng": st.run["NG"],
                "yield": _yield(st.run["OK"], st.run["NG"]),
            },
            "window": {"n": n, "yield": None if n == 0 else round(st.window_ok / n, 4)},
            "model": st.model,
            "recipe": st.recipe,
        }

    def _station_state(
        self, name: str, st: _Station, now: float, alarms: list[dict[str, object]]
    ) -> dict[str, str]:
        cams = {} if self._heartbeat is None else self._heartbeat.cameras
        for cam in st.meta.cameras:
            state = str(cams.get(cam, {}).get("state", "running" if not cams else "unknown"))
            if state != "running":
                return {"code": "camera", "text": f"camera {cam} {state}"}
        faults = [a for a in alarms if a["subject"] == name and str(a["code"]).startswith("fault_")]
        if faults:
            return {"code": "faults", "text": str(faults[0]["code"]).removeprefix("fault_")}
        if st.last_at is None:
            return {"code": "waiting", "text": "no verdict yet"}
        idle = max(IDLE_MIN_S, 10.0 / st.meta.rate_hz if st.meta.rate_hz else 0.0)
        if now - st.last_at > idle:
            return {"code": "idle", "text": f"no verdict for {now - st.last_at:.0f} s"}
        return {"code": "running", "text": "running"}

    def _conditions(self, now: float, hb_age: float | None) -> list[Condition]:
        a = self.cfg.alarms
        hb = self._heartbeat
        out: list[Condition] = []

        def add(
            key: tuple[str, str], level: str, text: str, *, raised: bool, cleared: bool
        ) -> None:
            out.append(Condition(key[0], key[1], level, text, raised=raised, cleared=cleared))

        down = hb_age is None and now - self._started > HEARTBEAT_LOST_S
        text = "no heartbeat from the daemon"
        if hb_age is not None and hb_age > HEARTBEAT_LOST_S:
            down, text = True, f"no heartbeat for {hb_age:.0f} s"
        add(("daemon_down", ""), "critical", text, raised=down, cleared=not down)
        for cam, info in ({} if hb is None else hb.cameras).items():
            state = str(info.get("state", "unknown"))
            bad = state != "running"
            text = f"camera {cam} is {state}"
            add(("camera_down", cam), "critical", text, raised=bad, cleared=not bad)
        threads = {} if hb is None else hb.threads
        dead = sorted(n for n, e in threads.items() if e.get("alive") is False)
        text = f"daemon thread dead: {', '.join(dead)} (systemd restarts the daemon)"
        add(("thread_dead", ""), "critical", text, raised=bool(dead), cleared=not dead)
        p99 = self._latency.p99(int(now), a.latency_window_s)
        if p99 is not None:
            over, clear = p99 > self.budget_ms, p99 < (a.latency_clear_ms or 0.8 * self.budget_ms)
            text = (
                f"p99 latency {p99:.1f} ms over the last {a.latency_window_s:g} s, "
                f"budget {self.budget_ms:g} ms"
            )
            add(("latency_budget", ""), "warning", text, raised=over, cleared=clear)
        restarted = self._restarted_at is not None and now - self._restarted_at < RESTART_ALARM_S
        text = "the daemon restarted (new run id)"
        add(("restart", ""), "warning", text, raised=restarted, cleared=not restarted)
        faults = Counter((s, r) for t, s, r in self._faults if now - t < a.fault_window_s)
        for (station, reason), n in sorted(faults.items()):
            text = f"{station}: {n} NG {reason} in the last {a.fault_window_s:g} s"
            key = (f"fault_{reason}", station)
            add(key, "critical", text, raised=n >= a.fault_count, cleared=False)
        missed = sum(n for t, n in self._gaps if now - t < a.fault_window_s)
        if missed:
            text = f"{missed} verdicts missed on the bus in the last {a.fault_window_s:g} s"
            add(("verdict_gap", ""), "warning", text, raised=True, cleared=False)
        for name, st in self._stations.items():
            n = len(st.window)
            if n < a.yield_min_cells:
                continue
            y = st.window_ok / n
            text = (
                f"{name}: yield {100 * y:.1f} % over the last {n} cells "
                f"(alarm under {100 * self.cfg.min_yield:g} %, clears at {100 * a.yield_clear:g} %)"
            )
            low, back = y < self.cfg.min_yield, y >= a.yield_clear
            add(("low_yield", name), "warning", text, raised=low, cleared=back)
        for c in self._lifecycle.alarms():  # a failed or overdue challenge, a drift
            station = c["text"].split(":", 1)[0]
            add((c["code"], station), c["level"], c["text"], raised=True, cleared=False)
        out.extend(
            Condition(
                b["code"],
                b["subject"],
                b["level"],
                b["text"],
                raised=True,
                cleared=False,
                bridge=True,
            )
            for b in self._bridges.alarms(now)
        )
        return out
