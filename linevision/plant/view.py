"""What ``linevision plant`` knows of each line, from the messages of the topic tree (pure).

Verdicts are counted once per ``(run_id, seq)`` (the bridge sends again after a lost
connection: duplicates are dropped and counted), and their latency is taken twice: from the
bridge's publish (user property ``t_mqtt_ns``) and from the daemon's (``t_publish_ns``).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from linevision.bridges.mqtt_link import Message
from linevision.bridges.mqtt_wire import (
    AlarmState,
    LineState,
    LostReport,
    MqttHealth,
    MqttVerdict,
    PayloadError,
    YieldReport,
    parse_payload,
    parse_topic,
)

LATENCY_KEEP = 1_000_000
RATE_WINDOW_S = 10.0


@dataclass
class _Run:
    next_seq: int = 1
    """Every seq below this was received."""
    above: set[int] = field(default_factory=set)
    """Received seqs above ``next_seq`` (a gap before them, for now)."""

    def add(self, seq: int) -> bool:
        """False for a duplicate."""
        if seq < self.next_seq or seq in self.above:
            return False
        self.above.add(seq)
        while self.next_seq in self.above:
            self.above.discard(self.next_seq)
            self.next_seq += 1
        return True


@dataclass
class Line:
    site: str
    line: str
    state: LineState | None = None
    alarms: dict[str | None, AlarmState] = field(default_factory=dict)
    yields: dict[str, YieldReport] = field(default_factory=dict)
    finals: dict[str, YieldReport] = field(default_factory=dict)
    health: MqttHealth | None = None
    runs: dict[str, _Run] = field(default_factory=dict)
    verdicts: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    lost: list[LostReport] = field(default_factory=list)
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))

    def rate(self, now: float) -> float:
        while self.arrivals and now - self.arrivals[0] > RATE_WINDOW_S:
            self.arrivals.popleft()
        return len(self.arrivals) / RATE_WINDOW_S


class PlantView:
    def __init__(self, prefix: str = "linevision") -> None:
        self.prefix = prefix
        self.lines: dict[tuple[str, str], Line] = {}
        self.messages = 0
        self.invalid = 0
        self.by_kind: dict[str, int] = {}
        self.from_bridge_ms: deque[float] = deque(maxlen=LATENCY_KEEP)
        self.from_daemon_ms: deque[float] = deque(maxlen=LATENCY_KEEP)
        self.started = time.monotonic()
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    def ingest(self, msg: Message) -> None:
        topic = parse_topic(self.prefix, msg.topic)
        if topic is None:
            self.invalid += 1
            return
        try:
            payload = parse_payload(topic, msg.payload)
        except PayloadError:
            self.invalid += 1
            return
        self.messages += 1
        self.by_kind[topic.kind] = self.by_kind.get(topic.kind, 0) + 1
        self.first_ns = msg.t_recv_ns if self.first_ns is None else self.first_ns
        self.last_ns = msg.t_recv_ns
        line = self.lines.setdefault((topic.site, topic.line), Line(topic.site, topic.line))
        if isinstance(payload, MqttVerdict):
            self._verdict(line, payload, msg)
        elif isinstance(payload, LineState):
            line.state = payload
        elif isinstance(payload, AlarmState):
            line.alarms[payload.station] = payload
        elif isinstance(payload, YieldReport):
            (line.finals if payload.final else line.yields)[payload.station] = payload
        elif isinstance(payload, MqttHealth):
            line.health = payload
        else:
            line.lost.append(payload)

    def _verdict(self, line: Line, v: MqttVerdict, msg: Message) -> None:
        run = line.runs.setdefault(v.run_id, _Run())
        in_order = v.seq == run.next_seq
        if not run.add(v.seq):
            line.duplicates += 1
            return
        line.out_of_order += not in_order and not msg.retain
        line.verdicts += 1
        line.arrivals.append(time.monotonic())
        self.from_daemon_ms.append((msg.t_recv_ns - v.t_publish_ns) / 1e6)
        sent = msg.user.get("t_mqtt_ns")
        if sent is not None and sent.isdigit():
            self.from_bridge_ms.append((msg.t_recv_ns - int(sent)) / 1e6)

    # ---- what it shows ----------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        now = time.monotonic()
        span_s = (
            0.0
            if self.first_ns is None or self.last_ns is None
            else (self.last_ns - self.first_ns) / 1e9
        )
        return {
            "messages": self.messages,
            "invalid": self.invalid,
            "by_kind": dict(sorted(self.by_kind.items())),
            "messages_per_s": None if span_s <= 0 else round(self.messages / span_s, 1),
            "latency_ms": {
                "bridge_to_consumer": _percentiles(self.from_bridge_ms),
                "daemon_to_consumer": _percentiles(self.from_daemon_ms),
            },
            "lines": {
                f"{s}/{n}": self._line(line, now) for (s, n), line in sorted(self.lines.items())
            },
        }

    @staticmethod
    def _line(line: Line, now: float) -> dict[str, object]:
        st = line.state
        gaps = sum(len(r.above) for r in line.runs.values())
        return {
            "status": None if st is None else st.status,
            "reason": None if st is None else st.reason,
            "run_id": None if st is None else st.run_id,
            "recipe": None if st is None else st.recipe,
            "models": {}
            if st is None
            else {
                name: None
                if s.model is None
                else f"{s.model.name} {s.model.version} {s.model.sha256[:12]}"
                for name, s in st.stations.items()
            },
            "verdicts": line.verdicts,
            "duplicates": line.duplicates,
            "runs": {run_id: r.next_seq - 1 for run_id, r in line.runs.items()},
            "pending_gaps": gaps,
            "lost_reported": sum(
                1 if x.last_seq is None else x.last_seq - x.first_seq + 1 for x in line.lost
            ),
            "rate_per_s": round(line.rate(now), 1),
            "yield": {
                name: {
                    "shift_start": y.shift_start,
                    "ok": y.ok,
                    "ng": y.ng,
                    "yield": y.yield_,
                    "ng_by_reason": y.ng_by_reason,
                }
                for name, y in sorted(line.yields.items())
            },
            "alarms": [
                f"{a.source}: {a.alarm}"
                for scope in sorted(line.alarms, key=lambda s: s or "")
                for a in line.alarms[scope].active
            ],
            "backlog": None if line.health is None else line.health.backlog,
        }

    def render(self) -> str:
        """The table ``linevision plant`` prints."""
        snap = self.snapshot()
        lines = snap["lines"]
        assert isinstance(lines, dict)
        head = ("line", "status", "recipe", "verdicts", "dup", "/s", "backlog")
        out = [_row(head) + "  yield (shift): station yield (ok/total)   alarms"]
        for name, v in lines.items():
            ys = "  ".join(_yield_text(st, y) for st, y in v["yield"].items())
            backlog = "-" if v["backlog"] is None else v["backlog"]
            cells = (name, v["status"] or "?", v["recipe"] or "-", v["verdicts"], v["duplicates"])
            out.append(
                _row((*cells, v["rate_per_s"], backlog))
                + f"  {ys:<40} {', '.join(v['alarms']) or '-'}"
            )
        lat = snap["latency_ms"]
        out.append(f"{snap['messages']} messages, {snap['messages_per_s']} /s; latency {lat}")
        return "\n".join(out)


def _row(cells: tuple[object, ...]) -> str:
    widths = (-22, -12, -10, 9, 5, 6, 7)
    return " ".join(
        f"{c!s:<{-w}}" if w < 0 else f"{c!s:>{w}}" for c, w in zip(cells, widths, strict=True)
    )


def _yield_text(station: str, y: dict[str, object]) -> str:
    ok, ng, value = y["ok"], y["ng"], y["yield"]
    assert isinstance(ok, int)
    assert isinstance(ng, int)
    shown = "-" if not isinstance(value, float) else f"{100 * value:.1f}%"
    return f"{station} {shown} ({ok}/{ok + ng})"


def _percentiles(values: deque[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    a = np.asarray(values)
    return {
        "n": len(a),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "max": round(float(a.max()), 2),
    }
