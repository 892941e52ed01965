"""Bridge health and alarms for the operator page: one SUB socket per bridge, and the board.

Each bridge publishes ``health.<bridge>`` every second and ``alarm.<bridge>`` when something
happens (docs/protocol.md, "Bridge reports"). A bridge whose last health message is older than
``BRIDGE_STALE_S``, or that said it is stopping, is shown ``down``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from linevision.bridges.alarms import (
    ALARM_PREFIX,
    HEALTH_PREFIX,
    AlarmMessage,
    BridgeHealth,
    RejectReport,
    ReportError,
    parse_report,
)
from linevision.bus.subscriber import open_sub
from linevision.bus.wire import context
from linevision.log import RateLimitedLog, get_logger

log = get_logger(__name__)

BRIDGE_STALE_S = 3.0
EVENT_WINDOW_S = 60.0
_LEVEL = {"error": "critical", "warning": "warning"}


def alarm_text(bridge: str, msg: AlarmMessage) -> str:
    """One line for the alarm list.

    >>> m = AlarmMessage.model_validate({"schema": 1, "source": "plc", "alarm": "plc_unreachable",
    ...     "severity": "error", "active": True, "detail": {"error": "refused"}, "t_ns": 0})
    >>> alarm_text("plc", m)
    'bridge plc: plc_unreachable (error: refused)'
    """
    shown = {k: v for k, v in msg.detail.items() if k != "repeat"}
    extra = ", ".join(f"{k}: {v}" for k, v in list(shown.items())[:3])
    return f"bridge {bridge}: {msg.alarm}" + (f" ({extra[:160]})" if extra else "")


@dataclass
class _Bridge:
    endpoint: str
    health: BridgeHealth | None = None
    at: float | None = None
    active: set[str] = field(default_factory=set)
    latest: dict[str, AlarmMessage] = field(default_factory=dict)
    events: deque[tuple[float, AlarmMessage]] = field(default_factory=lambda: deque(maxlen=100))
    invalid: int = 0


class BridgeBoard:
    """What the page knows of each configured bridge. Not locked: HmiState holds its lock."""

    def __init__(self, endpoints: tuple[str, ...], started: float) -> None:
        self._bridges = {e: _Bridge(e) for e in endpoints}
        self._started = started

    def ingest(self, endpoint: str, msg: AlarmMessage | BridgeHealth, now: float) -> None:
        b = self._bridges.setdefault(endpoint, _Bridge(endpoint))
        if isinstance(msg, BridgeHealth):
            b.health, b.at = msg, now
            b.active = set(msg.active)
            return
        if msg.active:
            b.latest[msg.alarm] = msg
            if not msg.detail.get("repeat"):
                b.events.append((now, msg))
            return
        b.active.discard(msg.alarm)
        b.latest.pop(msg.alarm, None)
        b.events = deque((e for e in b.events if e[1].alarm != msg.alarm), maxlen=100)

    def invalid(self, endpoint: str) -> None:
        self._bridges.setdefault(endpoint, _Bridge(endpoint)).invalid += 1

    def _state(self, b: _Bridge, now: float) -> tuple[str, float | None]:
        age = None if b.at is None else now - b.at
        if b.health is None or age is None:
            waiting = now - self._started <= BRIDGE_STALE_S
            return ("waiting" if waiting else "down"), None
        if age > BRIDGE_STALE_S:
            return "down", age
        return b.health.state, age

    def view(self, now: float) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for endpoint, b in sorted(self._bridges.items()):
            state, age = self._state(b, now)
            h = b.health
            out.append(
                {
                    "endpoint": endpoint,
                    "name": None if h is None else h.bridge,
                    "kind": None if h is None else h.kind,
                    "state": state,
                    "age_s": None if age is None else round(age, 1),
                    "stream_alive": None if h is None else h.stream_alive,
                    "last_seq": None if h is None else h.last_seq,
                    "backlog": None if h is None else h.backlog,
                    "lost": None if h is None else h.lost,
                    "retries": None if h is None else h.retries,
                    "active": sorted(b.active),
                    "invalid": b.invalid,
                }
            )
        return out

    def alarms(self, now: float) -> list[dict[str, str]]:
        """``level``, ``code``, ``text`` and ``subject`` (the bridge's name) of each alarm."""
        out: list[dict[str, str]] = []
        for endpoint, b in sorted(self._bridges.items()):
            name = endpoint if b.health is None else b.health.bridge
            first = len(out)
            state, age = self._state(b, now)
            if state == "down":
                why = (
                    "no health message yet"
                    if age is None
                    else f"no health message for {age:.0f} s"
                    if age > BRIDGE_STALE_S
                    else "stopped"
                )
                text = f"bridge {name}: {why}"
                out.append({"level": "critical", "code": "bridge_down", "text": text})
            else:
                for code in sorted(b.active):
                    msg = b.latest.get(code)
                    text = f"bridge {name}: {code}" if msg is None else alarm_text(name, msg)
                    out.append({"level": "critical", "code": code, "text": text})
            recent: dict[str, AlarmMessage] = {}
            for t, msg in b.events:
                if now - t < EVENT_WINDOW_S and msg.alarm not in b.active:
                    recent[msg.alarm] = msg
            for code, msg in sorted(recent.items()):
                level = _LEVEL.get(msg.severity)
                if level is not None:
                    out.append({"level": level, "code": code, "text": alarm_text(name, msg)})
            for alarm in out[first:]:
                alarm["subject"] = name
        return out


Sink = Callable[[str, AlarmMessage | BridgeHealth], None]


class ReportFeed:
    """Subscribes to ``health.`` and ``alarm.`` of each bridge; valid messages go to ``sink``."""

    def __init__(
        self, endpoints: tuple[str, ...], sink: Sink, on_invalid: Callable[[str], None]
    ) -> None:
        self.endpoints = endpoints
        self.invalid = 0
        self._bad_input = RateLimitedLog(log)
        self._sink = sink
        self._on_invalid = on_invalid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hmi-bridges", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,) if self._thread.ident is not None else ()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        poller = zmq.Poller()
        socks: dict[zmq.Socket[bytes], str] = {}
        try:
            for endpoint in self.endpoints:
                sock = open_sub(context(), endpoint, (HEALTH_PREFIX, ALARM_PREFIX))
                socks[sock] = endpoint
                poller.register(sock, zmq.POLLIN)
                log.info("hmi_bridge_subscribed", endpoint=endpoint)
            while not self._stop.is_set():
                for sock, _ in poller.poll(200):
                    self._drain(sock, socks[sock])
        finally:
            for sock in socks:
                sock.close(0)

    def _drain(self, sock: zmq.Socket[bytes], endpoint: str) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._one(endpoint, frames)
            except Exception as exc:
                self.invalid += 1
                self._bad_input.exception("hmi_report_failed", endpoint=endpoint, error=repr(exc))

    def _one(self, endpoint: str, frames: list[bytes]) -> None:
        msg: AlarmMessage | BridgeHealth | RejectReport | None = None
        error = f"expected 2 frames, got {len(frames)}"
        if len(frames) == 2:
            try:
                msg = parse_report(frames[0], frames[1])
            except ReportError as exc:
                error = str(exc)
        if isinstance(msg, AlarmMessage | BridgeHealth):
            self._sink(endpoint, msg)
            return
        if msg is not None:
            error = "not a health or alarm message"
        self.invalid += 1
        self._on_invalid(endpoint)
        self._bad_input.warning("hmi_invalid_report", endpoint=endpoint, error=error[:300])
