"""Alarms are state, not edges: a subscriber that joins at any moment sees every active alarm.

The reject bridge raises ``io_unreachable`` a few milliseconds after it starts, before a
subscriber that was waiting for it (or reconnecting after a bridge restart) is connected.
"""

from __future__ import annotations

import time

from linevision.bridges.alarms import HEALTH_PERIOD_S
from linevision.bridges.config import RejectBridgeConfig
from linevision.bridges.reject import run_reject_bridge
from tests.bridges.harness import BridgeThread, free_port
from tests.bridges.plc_sim import ThreadedPlc
from tests.bridges.test_reject_bridge import RejectStation
from tests.daemon.test_supervision import Listener
from tests.helpers import free_tcp_endpoint

TOPIC = "alarm.reject"
WITHIN_S = HEALTH_PERIOD_S + 0.5
"""One period, and slack for a loaded machine."""


def _config(io_port: int) -> RejectBridgeConfig:
    return RejectBridgeConfig.model_validate(
        {
            "source": {"verdicts": free_tcp_endpoint(), "replay": None, "heartbeat_timeout_s": 5},
            "report": {"publish": free_tcp_endpoint()},
            "io": {"host": "127.0.0.1", "port": io_port, "timeout_s": 0.2},
            "tracking": {"counter_register": 0, "stations": {"pole_piece": 0}},
            "output": {"coil": 0},
            "backoff": {"min_s": 0.02, "max_s": 0.1},
        }
    )


def _active(listener: Listener, code: str, since: float = 0.0) -> bool | None:
    """The last word ``listener`` heard on ``code`` since ``since``: True, False or None."""
    said = [a.active for a in listener.alarms(since, TOPIC) if a.alarm == code]
    return said[-1] if said else None


def test_a_late_subscriber_sees_the_active_alarm_then_its_clear():
    io_port = free_port()
    cfg = _config(io_port)
    endpoint = cfg.report.publish
    early = Listener(endpoint, ("alarm.",))  # waiting before the bridge binds
    bridge = BridgeThread(lambda stop: run_reject_bridge(cfg, stop)).start()
    t_start = time.monotonic()
    listeners = [early]
    io = None
    try:
        late = Listener(endpoint, ("alarm.",))
        listeners.append(late)
        time.sleep(0.035)
        joined_35ms = Listener(endpoint, ("alarm.",))
        listeners.append(joined_35ms)
        for who in (early, late, joined_35ms):
            assert who.wait(lambda w=who: _active(w, "io_unreachable") is True, WITHIN_S + 0.5)
        time.sleep(max(0.0, t_start + 2.0 - time.monotonic()))
        joined_2s = Listener(endpoint, ("alarm.",))
        listeners.append(joined_2s)
        t_join = time.monotonic()
        assert joined_2s.wait(lambda: _active(joined_2s, "io_unreachable") is True, WITHIN_S)
        assert time.monotonic() - t_join < WITHIN_S
        repeats = [a for a in joined_2s.alarms(0.0, TOPIC) if a.alarm == "io_unreachable"]
        assert all(a.detail.get("repeat") is True for a in repeats)

        station = RejectStation(io_port)
        io = ThreadedPlc(station).start()  # type: ignore[arg-type]
        assert early.wait(lambda: _active(early, "io_unreachable") is False, 5)
        t_clear = time.monotonic()
        after = Listener(endpoint, ("alarm.",))
        listeners.append(after)
        time.sleep(WITHIN_S + HEALTH_PERIOD_S)
        assert _active(early, "io_unreachable", since=t_clear) is None  # no repeat after clear
        assert _active(after, "io_unreachable") is None
        assert bridge.error is None
    finally:
        bridge.stop()
        if io is not None:
            io.stop()
        for who in listeners:
            who.close()
