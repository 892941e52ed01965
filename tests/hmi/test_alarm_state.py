"""The page's alarm list when alarms are state: repeats never duplicate, a dead thread shows."""

from __future__ import annotations

import time

from linevision.bridges.alarms import AlarmMessage, BridgeHealth
from linevision.bus.wire import HeartbeatMessage
from linevision.config import HmiConfig
from linevision.hmi.state import HmiState

BRIDGE = "tcp://127.0.0.1:1"


def _alarm(code: str, *, active: bool = True, repeat: bool = False) -> AlarmMessage:
    detail: dict[str, object] = {"error": "refused", **({"repeat": True} if repeat else {})}
    return AlarmMessage.model_validate(
        {
            "schema": 1,
            "source": "reject",
            "alarm": code,
            "severity": "error" if active else "info",
            "active": active,
            "detail": detail,
            "t_ns": time.time_ns(),
        }
    )


def _health(active: list[str]) -> BridgeHealth:
    return BridgeHealth.model_validate(
        {
            "schema": 1,
            "bridge": "reject",
            "kind": "reject",
            "state": "retrying",
            "stream_alive": True,
            "run_id": None,
            "last_seq": None,
            "backlog": 0,
            "lost": 0,
            "retries": 1,
            "active": active,
            "counters": {},
            "interval_s": 1.0,
            "t_ns": time.time_ns(),
        }
    )


def _codes(state: HmiState) -> list[str]:
    alarms = state.snapshot()["alarms"]
    assert isinstance(alarms, list)
    return [a["code"] for a in alarms]


def test_repeated_active_alarms_show_once_and_go_on_clear():
    state = HmiState(HmiConfig(bridges=(BRIDGE,)), book={})
    state.ingest_report(BRIDGE, _alarm("io_unreachable"))
    for _ in range(5):
        state.ingest_report(BRIDGE, _alarm("io_unreachable", repeat=True))
        state.ingest_report(BRIDGE, _health(["io_unreachable"]))
    state.ingest_report(BRIDGE, _alarm("io_unreachable"))  # an edge sent twice
    assert _codes(state).count("io_unreachable") == 1
    state.ingest_report(BRIDGE, _alarm("io_unreachable", active=False))
    state.ingest_report(BRIDGE, _health([]))
    assert "io_unreachable" not in _codes(state)


def test_a_repeat_seen_first_by_a_late_page_shows_once():
    state = HmiState(HmiConfig(bridges=(BRIDGE,)), book={})
    state.ingest_report(BRIDGE, _alarm("io_unreachable", repeat=True))
    state.ingest_report(BRIDGE, _health(["io_unreachable"]))
    state.ingest_report(BRIDGE, _alarm("io_unreachable", repeat=True))
    assert _codes(state).count("io_unreachable") == 1


def test_a_dead_daemon_thread_in_the_heartbeat_is_a_critical_alarm():
    state = HmiState(book={})

    def beat(threads: dict[str, dict[str, object]]) -> None:
        state.ingest(
            HeartbeatMessage.model_validate(
                {
                    "schema": 1,
                    "run_id": "a" * 32,
                    "seq": 0,
                    "t_ns": time.time_ns(),
                    "stations": {},
                    "cameras": {},
                    "threads": threads,
                }
            )
        )

    beat({"replay": {"alive": True}, "control": {"alive": True}})
    assert "thread_dead" not in _codes(state)
    for _ in range(3):
        beat({"replay": {"alive": False, "error": "OverflowError()"}, "control": {"alive": True}})
    alarms = state.snapshot()["alarms"]
    assert isinstance(alarms, list)
    [dead] = [a for a in alarms if a["code"] == "thread_dead"]
    assert dead["level"] == "critical"
    assert "replay" in dead["text"]
    assert "control" not in dead["text"]
