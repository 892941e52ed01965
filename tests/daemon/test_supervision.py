"""Thread supervision: no long-lived thread of the daemon dies in silence.

Each supervised thread in turn gets one exception in a method its loop calls (a fault no real
part can produce on demand, so it is injected). Then, seen from outside: an independent SUB
subscriber gets the ``thread_dead`` alarm and a heartbeat whose ``threads`` entry says it is
dead, the ``linevision_thread_alive`` metric drops to 0, and systemd's watchdog pings stop.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from prometheus_client import generate_latest

from linevision.bridges.alarms import AlarmMessage
from linevision.bus.publisher import VerdictPublisher
from linevision.bus.wire import DAEMON_ALARM_TOPIC, HEARTBEAT_TOPIC, HeartbeatMessage
from linevision.daemon.operations import Operations, _embedded_hmi
from linevision.daemon.service import Service
from linevision.daemon.supervisor import Supervisor
from linevision.hmi.server import HmiServer
from linevision.types import Decision, Verdict, now_ns
from tests.daemon.parts import ops_config
from tests.daemon.test_notify import NotifySocket
from tests.helpers import free_tcp_endpoint

HEARTBEAT_S = 0.2
WATCHDOG_USEC = 200_000  # pings every 0.1 s


class InjectedError(RuntimeError):
    """The one exception a test puts into a thread's loop."""


class Listener:
    """An independent subscriber (its own ZeroMQ context): every message with its time."""

    def __init__(self, endpoint: str, topics: tuple[str, ...] = ("alarm.", HEARTBEAT_TOPIC)):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self.sock.connect(endpoint)
        self.messages: list[tuple[float, str, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(50):
                topic, payload = self.sock.recv_multipart()
                self.messages.append((time.monotonic(), topic.decode(), payload))

    def alarms(self, since: float = 0.0, topic: str = DAEMON_ALARM_TOPIC) -> list[AlarmMessage]:
        return [
            AlarmMessage.model_validate_json(p)
            for t, name, p in list(self.messages)
            if name == topic and t >= since
        ]

    def heartbeats(self) -> list[HeartbeatMessage]:
        return [
            HeartbeatMessage.model_validate(json.loads(p))
            for _, topic, p in list(self.messages)
            if topic == HEARTBEAT_TOPIC
        ]

    def wait(self, what: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if what():
                return True
            time.sleep(0.02)
        return what()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.ctx.term()


@dataclass
class Daemon:
    ops: Operations
    svc: Service
    hmi: HmiServer
    ns: NotifySocket
    listener: Listener


@pytest.fixture
def daemon(tmp_path: Path, models: Path, frames: Path, monkeypatch) -> Iterator[Daemon]:
    ns = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(ns.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    bus = free_tcp_endpoint()
    cfg = ops_config(
        tmp_path,
        frames,
        bus={"publish": bus, "heartbeat_s": HEARTBEAT_S, "replay": free_tcp_endpoint()},
        journal={"path": str(tmp_path / "journal.db")},
        hmi={"listen": "127.0.0.1:0"},
    )
    ops = Operations(cfg, models, stall_s=5.0)
    svc = ops.make_service()
    listener = Listener(bus)
    stop = threading.Event()
    hmi = None
    try:
        ops.start()
        svc.start()
        hmi = _embedded_hmi(ops)
        assert hmi is not None
        assert ops.ready(stop, camera_timeout_s=10)
        yield Daemon(ops, svc, hmi, ns, listener)
    finally:
        ops.stopping()
        svc.stop()
        ops.close()
        if hmi is not None:
            hmi.stop()
        listener.close()
        ns.close()


def inject_once(monkeypatch, obj: object, attr: str) -> threading.Event:
    """``obj.attr`` raises :class:`InjectedError` on its first call, then works again."""
    real = getattr(obj, attr)
    once = threading.Lock()
    fired = threading.Event()

    def fault(*args: object, **kwargs: object) -> object:
        if once.acquire(blocking=False):
            fired.set()
            msg = f"injected into {type(obj).__name__}.{attr}"
            raise InjectedError(msg)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, attr, fault)
    return fired


def _target(d: Daemon, thread: str) -> tuple[object, str]:
    """Where to put the fault so that it reaches ``thread``'s loop."""
    svc, ops = d.svc, d.ops
    assert svc.delivery.replay is not None
    assert ops.control is not None
    assert ops.archive is not None
    assert ops.metrics is not None
    server = ops.metrics._server
    targets: dict[str, tuple[object, str]] = {
        "bus-publisher": (svc.publisher, "_send_verdict"),
        "deadlines": (svc.arbiter._wake, "wait"),
        "infer": (svc.executor, "_next"),
        "camera-cam0": (svc.cameras["cam0"]._stop, "is_set"),
        "replay": (svc.delivery.replay._stop, "is_set"),
        "control": (ops.control._stop, "is_set"),
        "archive-writer": (ops.archive, "_fill"),
        "metrics-http": (server, "service_actions"),
        "hmi-feed": (d.hmi.feed._stop, "is_set"),
    }
    return targets[thread]


SUPERVISED = (
    "bus-publisher",
    "deadlines",
    "infer",
    "camera-cam0",
    "replay",
    "control",
    "archive-writer",
    "metrics-http",
    "hmi-feed",
)


def _thread_metric(d: Daemon) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in generate_latest(d.ops.metrics.registry).decode().splitlines():  # type: ignore[union-attr]
        if line.startswith("linevision_thread_alive{"):
            name = line.split('thread="', 1)[1].split('"', 1)[0]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


@pytest.mark.parametrize("thread", SUPERVISED)
def test_a_dead_thread_raises_an_alarm_and_stops_the_watchdog(daemon, monkeypatch, thread):
    d = daemon
    t_ready = d.ns.wait_for("READY=1", 2)
    assert t_ready is not None
    # every supervised thread is listed alive, on the bus and in the metrics
    assert d.listener.wait(lambda: bool(d.listener.heartbeats()), 5)
    names = set(d.listener.heartbeats()[-1].threads)
    expected = {
        "bus-publisher",
        "deadlines",
        "infer-0",
        "camera-cam0",
        "replay",
        "control",
        "archive-writer",
        "metrics-http",
        "hmi-feed",
        "hmi-http",
    }
    assert expected <= names, names
    assert all(e["alive"] for e in d.listener.heartbeats()[-1].threads.values())
    assert set(_thread_metric(d).values()) == {1.0}
    assert d.ns.wait_for("WATCHDOG=1", 2) is not None
    assert d.listener.alarms() == []

    obj, attr = _target(d, thread)
    fired = inject_once(monkeypatch, obj, attr)
    assert fired.wait(5), f"the fault never reached {thread}"
    t_fault = time.monotonic()

    # the alarm reaches an independent subscriber
    def dead_alarm() -> AlarmMessage | None:
        for a in d.listener.alarms():
            if a.alarm == "thread_dead" and a.active:
                return a
        return None

    assert d.listener.wait(lambda: dead_alarm() is not None, 3), d.listener.messages[-5:]
    alarm = dead_alarm()
    assert alarm is not None
    assert alarm.source == "daemon"
    assert alarm.severity == "error"
    dead = alarm.detail["threads"]
    assert isinstance(dead, list)
    assert len(dead) == 1
    assert str(dead[0]).startswith(thread)
    name = str(dead[0])
    assert "InjectedError" in str(alarm.detail["errors"])

    # its heartbeat entry and its metric change
    def entry_dead() -> bool:
        return any(hb.threads.get(name, {}).get("alive") is False for hb in d.listener.heartbeats())

    assert d.listener.wait(entry_dead, 3)
    assert _thread_metric(d)[name] == 0.0
    assert d.svc.supervisor.problems() == [
        f"thread {name}: dead (InjectedError('injected into {type(obj).__name__}.{attr}'))"
    ]

    # the watchdog is withheld: systemd restarts the daemon
    t_withheld = d.ns.wait_for_prefix("STATUS=pipeline stalled", 3)
    assert t_withheld - t_fault < 1.0
    assert any(f"thread {name}: dead" in m for _, m in d.ns.messages if "stalled" in m)
    time.sleep(0.6)
    assert d.ns.count("WATCHDOG=1", t_withheld + 0.05) == 0

    if thread == "bus-publisher":
        # verdicts handed to a dead bus thread are counted, not piled up in its queue
        assert d.listener.wait(lambda: d.svc.publisher.unsent > 0, 2)
        assert d.svc.publisher._queue.qsize() == 0
    else:
        # alarms are state: the dead thread is announced again every period
        t0 = time.monotonic()
        assert d.listener.wait(
            lambda: any(a.detail.get("repeat") for a in d.listener.alarms(since=t0)),
            3 * HEARTBEAT_S,
        )


def test_a_thread_that_returns_is_dead_too(daemon):
    """No exception at all: a loop that just ends while the daemon runs."""
    d = daemon
    assert d.ops.control is not None
    d.ops.control._stop.set()  # the control loop returns as if asked to stop
    assert d.listener.wait(
        lambda: any(
            a.alarm == "thread_dead" and a.detail["errors"] == {"control": "thread ended"}
            for a in d.listener.alarms()
        ),
        3,
    )
    assert d.ns.wait_for_prefix("STATUS=pipeline stalled", 3) < float("inf")


def test_orderly_stop_is_not_a_death(tmp_path, models, frames):
    cfg = ops_config(tmp_path, frames, bus={"publish": free_tcp_endpoint(), "heartbeat_s": 0.1})
    ops = Operations(cfg, models)
    svc = ops.make_service()
    listener = Listener(cfg.bus.publish)
    try:
        ops.start()
        svc.start()
        time.sleep(0.5)
    finally:
        ops.stopping()
        svc.stop()
        ops.close()
    time.sleep(0.3)
    listener.close()
    assert listener.heartbeats()
    assert listener.alarms() == []
    assert svc.supervisor.problems() == []


class _FillingCamera:
    """A camera whose snapshot lets ``start()`` add the next camera meanwhile (the race)."""

    def __init__(self, cameras: dict[str, object], next_id: str) -> None:
        self._cameras = cameras
        self._next_id = next_id

    def snapshot(self) -> dict[str, object]:
        self._cameras.setdefault(self._next_id, _FillingCamera(self._cameras, self._next_id + "x"))
        return {"state": "running"}


def test_heartbeat_state_survives_cameras_filled_meanwhile(tmp_path, frames):
    cfg = ops_config(tmp_path, frames)
    svc = Service(cfg)
    svc.cameras["cam0"] = _FillingCamera(svc.cameras, "cam1")  # type: ignore[assignment]
    stations, cameras = svc.state()
    assert stations == {}
    assert cameras == {"cam0": {"state": "running"}}
    assert set(svc.cameras) == {"cam0", "cam1"}


def test_bus_thread_survives_a_failing_state_callback():
    """The first heartbeat's state callback raises: verdicts and heartbeats still go out."""
    calls = 0

    def state() -> tuple[dict[str, dict[str, object]], dict[str, dict[str, object]]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            msg = "dictionary changed size during iteration"
            raise RuntimeError(msg)
        return {"pole_piece": {"queue": 0}}, {}

    endpoint = free_tcp_endpoint()
    pub = VerdictPublisher(endpoint, heartbeat_s=0.05, state=state)
    listener = Listener(endpoint, ("verdict.", HEARTBEAT_TOPIC))
    try:
        pub.start()
        assert listener.wait(lambda: len(listener.heartbeats()) >= 3, 5)
        for cell in range(1, 6):
            mono, wall = now_ns()
            pub.publish(
                Verdict("pole_piece", cell, Decision("OK", None, "Normal", 0.9), wall, mono)
            )
        assert listener.wait(
            lambda: sum(1 for _, t, _ in list(listener.messages) if t.startswith("verdict.")) == 5,
            5,
        )
        assert pub.is_alive()
        assert pub.state_errors == 1
        assert listener.heartbeats()[-1].stations == {"pole_piece": {"queue": 0}}
    finally:
        pub.stop()
        listener.close()


def test_daemon_alarms_are_state_for_late_subscribers():
    """An alarm raised just after the bus binds reaches subscribers that join 35 ms and 2 s
    later, within one period; once cleared, a new subscriber hears nothing of it."""
    period = 0.3
    endpoint = free_tcp_endpoint()
    pub = VerdictPublisher(endpoint, heartbeat_s=period)
    sup = Supervisor(pub.send_raw, period_s=period, poll_s=0.02)
    early = Listener(endpoint, ("alarm.",))
    listeners = [early]
    try:
        pub.start()
        sup.start()
        sup.raise_alarm("thread_dead", threads=["replay"])
        time.sleep(0.035)
        joined_35ms = Listener(endpoint, ("alarm.",))
        listeners.append(joined_35ms)
        t_join = time.monotonic()
        assert joined_35ms.wait(lambda: bool(joined_35ms.alarms()), period + 0.5)
        assert time.monotonic() - t_join < period + 0.5
        time.sleep(2.0)
        joined_2s = Listener(endpoint, ("alarm.",))
        listeners.append(joined_2s)
        assert joined_2s.wait(lambda: bool(joined_2s.alarms()), period + 0.5)
        [seen] = {(a.alarm, a.active, str(a.detail["threads"])) for a in joined_2s.alarms()}
        assert seen == ("thread_dead", True, "['replay']")
        assert early.wait(lambda: len(early.alarms()) >= 3, 1)

        sup.clear_alarm("thread_dead")
        assert early.wait(lambda: early.alarms()[-1].active is False, 1)
        t_clear = time.monotonic()
        after = Listener(endpoint, ("alarm.",))
        listeners.append(after)
        time.sleep(3 * period)
        assert after.alarms() == []
        assert early.alarms(since=t_clear + 0.05) == []
    finally:
        sup.stop()
        pub.stop()
        for who in listeners:
            who.close()
