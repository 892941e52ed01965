"""``health.<bridge>`` once a second on each bridge's report socket, validated by its model."""

from __future__ import annotations

import json

import pytest

from linevision.bridges.alarms import BridgeHealth, ReportError, parse_report
from linevision.bridges.config import RejectBridgeConfig
from linevision.bridges.plc import run_plc_bridge
from linevision.bridges.reject import run_reject_bridge
from tests.bridges.daemon_sim import Daemon
from tests.bridges.harness import BridgeThread, collect_reports, free_port, wait_for
from tests.bridges.plc_sim import ModbusPlc, ThreadedPlc
from tests.bridges.test_plc_modbus_bridge import plc_config
from tests.helpers import free_tcp_endpoint


def _collector(endpoint: str, out: list[BridgeHealth]) -> BridgeThread:
    return BridgeThread(lambda stop: collect_reports(endpoint, out, stop, BridgeHealth)).start()


def test_plc_bridge_health_follows_delivery_and_says_down_on_stop(tmp_path):
    daemon = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "j.db").start()
    plc = ThreadedPlc(ModbusPlc(free_port())).start()
    cfg = plc_config(daemon, plc.plc.port)
    got: list[BridgeHealth] = []
    reader = _collector(cfg.report.publish, got)
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()
    try:
        wait_for(lambda: any(h.state == "connected" for h in got), 5, "a connected health")
        daemon.stream(1, 20, rate_hz=None)
        wait_for(lambda: got[-1].last_seq == 20, 5, "health with last_seq 20")
        result = bridge.stop()
        wait_for(lambda: got[-1].state == "down", 3, "the last health message")
    finally:
        bridge.stop()
        reader.stop()
        plc.stop()
        daemon.stop()
    last = got[-1]
    assert (last.bridge, last.kind, last.run_id) == ("plc", "plc", daemon.run_id)
    assert (last.backlog, last.lost, last.stream_alive) == (0, 0, True)
    assert last.counters["delivered"] == 20 == result.counters["delivered"]
    assert last.interval_s == 1.0


def test_reject_bridge_health_while_its_io_is_unreachable(tmp_path):
    cfg = RejectBridgeConfig.model_validate(
        {
            "source": {"verdicts": free_tcp_endpoint(), "replay": None, "heartbeat_timeout_s": 0.3},
            "report": {"publish": free_tcp_endpoint()},
            "io": {"host": "127.0.0.1", "port": free_port(), "timeout_s": 0.2},
            "tracking": {"counter_register": 0, "stations": {"pole_piece": 0}},
            "output": {"coil": 0},
            "backoff": {"min_s": 0.02, "max_s": 0.1},
            "state_file": str(tmp_path / "reject.db"),
        }
    )
    got: list[BridgeHealth] = []
    reader = _collector(cfg.report.publish, got)
    bridge = BridgeThread(lambda stop: run_reject_bridge(cfg, stop)).start()
    try:
        wait_for(
            lambda: bool(got) and got[-1].stream_alive is False and got[-1].retries > 0,
            5,
            "a health message after failed connects",
        )
        h = got[-1]
        bridge.stop()
        wait_for(lambda: got[-1].state == "down", 3, "the last health message")
    finally:
        bridge.stop()
        reader.stop()
    assert (h.bridge, h.kind, h.state) == ("reject", "reject", "retrying")
    assert h.active == ["daemon_down", "io_unreachable"]
    assert h.last_seq is None


def test_health_messages_are_validated():
    body = {
        "schema": 1,
        "bridge": "plc",
        "kind": "plc",
        "state": "connected",
        "stream_alive": True,
        "run_id": "a" * 32,
        "last_seq": 7,
        "backlog": 0,
        "lost": 0,
        "retries": 0,
        "active": [],
        "counters": {"delivered": 7},
        "interval_s": 1.0,
        "t_ns": 1,
    }
    ok = parse_report(b"health.plc", json.dumps(body).encode())
    assert isinstance(ok, BridgeHealth)
    assert ok.last_seq == 7
    bad = [
        (b"health.reject", body),
        (b"health.plc", {**body, "state": "fine"}),
        (b"health.plc", {**body, "backlog": -1}),
        (b"health.plc", {**body, "extra": 1}),
        (b"health.plc", {**body, "schema": 2}),
    ]
    for topic, payload in bad:
        with pytest.raises(ReportError):
            parse_report(topic, json.dumps(payload).encode())
    with pytest.raises(ReportError):
        parse_report(b"health.plc", b"\xff")
