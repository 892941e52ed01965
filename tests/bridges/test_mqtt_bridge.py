"""The MQTT bridge's topic tree against a real Mosquitto: verdicts, retained line state,
yields, alarms, live-only health; what a late subscriber finds; the daemon's loss."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from linevision.bridges.alarms import BridgeHealth, Reporter
from linevision.bridges.mqtt import run_mqtt_bridge
from linevision.bridges.mqtt_config import MqttBridgeConfig
from linevision.bridges.mqtt_wire import parse_payload, parse_topic
from tests.bridges.daemon_sim import Daemon, is_ng
from tests.bridges.harness import BridgeThread, collect_reports, wait_for
from tests.bridges.mosquitto import Mosquitto, Subscriber, dedupe
from tests.helpers import free_tcp_endpoint


@pytest.fixture
def plant(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    daemon = Daemon(
        free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db", heartbeat_s=0.2
    ).start()
    yield tmp_path, broker, daemon
    daemon.stop()
    broker.stop()


def bridge_config(tmp_path: Path, daemon: Daemon, port: int, **over: Any) -> MqttBridgeConfig:
    assert daemon.replay is not None
    data: dict[str, Any] = {
        "site": "plant1",
        "line": "line3",
        "source": {
            "verdicts": daemon.publisher.endpoint,
            "replay": daemon.replay.endpoint,
            "heartbeat_timeout_s": 1.0,
        },
        "report": {"publish": free_tcp_endpoint()},
        "broker": {"host": "127.0.0.1", "port": port},
        "store": {"path": str(tmp_path / "outbox.db")},
        "yield": {"period_s": 0.5},
        "health_period_s": 0.5,
        **over,
    }
    return MqttBridgeConfig.model_validate(data)


def test_the_topic_tree_and_its_payloads(plant):
    tmp_path, broker, daemon = plant
    sub = Subscriber(broker.port).start()
    cfg = bridge_config(tmp_path, daemon, broker.port)
    health: list[BridgeHealth] = []
    reader = BridgeThread(
        lambda stop: collect_reports(cfg.report.publish, health, stop, BridgeHealth)
    )
    reader.start()
    bridge = BridgeThread(lambda stop: run_mqtt_bridge(cfg, stop)).start()
    try:
        wait_for(lambda: sub.of("state"), 15, "the birth")
        daemon.stream(1, 140, rate_hz=300)
        wait_for(lambda: len(sub.verdicts()) >= 140, 20, "140 verdicts")
        wait_for(
            lambda: any(m.payload["total"] == 140 for m in sub.of("yield")), 10, "the yield of 140"
        )
        wait_for(lambda: any(m.payload["active"] for m in sub.of("alarm")), 10, "low_yield")
        wait_for(lambda: sub.of("health"), 10, "the MQTT health")
    finally:
        bridge.stop()
        reader.stop()
        sub.stop()
    for m in sub.messages:  # every message is valid against the tree's models
        topic = parse_topic("linevision", m.topic)
        assert topic is not None, m.topic
        parse_payload(topic, json.dumps(m.payload).encode())
    verdicts = sub.verdicts()
    first = verdicts[0]
    assert first.topic == "linevision/plant1/line3/pole_piece/verdict"
    assert first.qos == 1
    assert (first.payload["site"], first.payload["line"]) == ("plant1", "line3")
    assert first.user["run_id"] == daemon.run_id
    assert first.user["seq"] == str(first.payload["seq"])
    assert {k for k in first.payload if k not in ("site", "line")} >= {"run_id", "seq", "cell_id"}
    assert dedupe(verdicts)["runs"] == {daemon.run_id: list(range(1, 141))}
    births = [m for m in sub.of("state") if m.payload["status"] == "running"]
    assert births[-1].payload["run_id"] == daemon.run_id
    assert births[-1].payload["stations"]["pole_piece"]["model"] == {
        "name": "pole_piece",
        "version": "1",
        "sha256": "ab" * 32,
    }
    stopped = sub.of("state")[-1].payload
    assert (stopped["status"], stopped["reason"]) == ("offline", "bridge_stopped")
    y = next(m for m in sub.of("yield") if m.payload["total"] == 140).payload
    ng = sum(is_ng(c) for c in range(1, 141))
    assert (y["ok"], y["ng"], y["ng_by_reason"]) == (140 - ng, ng, {"defect": ng})
    assert y["final"] is False
    station_alarms = [m for m in sub.of("alarm") if m.topic.endswith("/pole_piece/alarm")]
    assert "low_yield" in {a["alarm"] for m in station_alarms for a in m.payload["active"]}
    live = sub.of("health")[-1]
    assert live.expiry_s is not None
    assert live.expiry_s <= 2
    assert live.qos == 0
    assert health[-1].kind == "mqtt"
    assert health[-1].state == "down"
    assert any(h.state == "connected" and h.last_seq == 140 for h in health)


def test_a_late_subscriber_finds_state_yield_and_alarms_retained(plant):
    tmp_path, broker, daemon = plant
    cfg = bridge_config(tmp_path, daemon, broker.port)
    bridge = BridgeThread(lambda stop: run_mqtt_bridge(cfg, stop)).start()
    try:
        early = Subscriber(broker.port, client_id="early").start()
        daemon.stream(1, 70, rate_hz=300)
        wait_for(lambda: any(m.payload["total"] == 70 for m in early.of("yield")), 15, "yield")
        early.stop()
        late = Subscriber(broker.port, client_id="late").start()
        wait_for(lambda: late.of("state") and late.of("yield") and late.of("alarm"), 10, "retained")
    finally:
        bridge.stop()
    late.stop()
    kinds = Counter(m.topic.rsplit("/", 1)[1] for m in late.messages if m.retain)
    assert kinds["state"] >= 1
    assert kinds["yield"] >= 1
    assert kinds["alarm"] >= 2  # the line's and the station's
    assert all(not m.topic.endswith("/verdict") for m in late.messages if m.retain)


def test_the_daemon_lost_is_the_line_state_and_a_line_alarm(plant):
    tmp_path, broker, daemon = plant
    sub = Subscriber(broker.port).start()
    cfg = bridge_config(tmp_path, daemon, broker.port)
    bridge = BridgeThread(lambda stop: run_mqtt_bridge(cfg, stop)).start()
    try:
        daemon.stream(1, 10, rate_hz=100)
        wait_for(lambda: len(sub.verdicts()) >= 10, 15, "10 verdicts")
        daemon.publisher.stop()  # the daemon goes silent
        wait_for(
            lambda: any(m.payload["status"] == "daemon_down" for m in sub.of("state")),
            10,
            "daemon_down",
        )
        wait_for(
            lambda: any(
                a["alarm"] == "daemon_down"
                for m in [x for x in sub.of("alarm") if x.payload["station"] is None]
                for a in m.payload["active"]
            ),
            10,
            "the line alarm",
        )
    finally:
        bridge.stop()
        sub.stop()
    down = next(m for m in sub.of("state") if m.payload["status"] == "daemon_down").payload
    assert down["run_id"] == daemon.run_id


def test_a_bridge_stopped_with_the_broker_down_keeps_its_backlog(plant):
    tmp_path, broker, daemon = plant
    sub = Subscriber(broker.port).start()
    cfg = bridge_config(tmp_path, daemon, broker.port)
    bridge = BridgeThread(lambda stop: run_mqtt_bridge(cfg, stop)).start()
    wait_for(lambda: sub.of("state"), 15, "the birth")
    broker.stop()
    daemon.stream(1, 200, rate_hz=400)
    time.sleep(1.0)
    first = bridge.stop()
    assert first.counters["read"] == 200
    assert first.backlog == 200
    broker.start()
    bridge = BridgeThread(lambda stop: run_mqtt_bridge(cfg, stop)).start()
    try:
        wait_for(lambda: len({m.payload["seq"] for m in sub.verdicts()}) >= 200, 20, "the backlog")
    finally:
        second = bridge.stop()
        sub.stop()
    assert sorted({m.payload["seq"] for m in sub.verdicts()}) == list(range(1, 201))
    assert second.counters["read"] == 0  # nothing read twice from the daemon
    assert second.backlog == 0


def test_other_bridges_alarms_join_the_line_alarm_state(plant):
    tmp_path, broker, daemon = plant
    sub = Subscriber(broker.port).start()
    plc_reports = free_tcp_endpoint()
    cfg = bridge_config(tmp_path, daemon, broker.port, alarms_from=[plc_reports])
    plc = Reporter(plc_reports, "plc")

    def line_alarms() -> set[str]:
        states = [m for m in sub.of("alarm") if m.payload["station"] is None]
        return (
            {f"{a['source']}:{a['alarm']}" for a in states[-1].payload["active"]}
            if states
            else set()
        )

    def health(active: list[str], state: str = "retrying") -> BridgeHealth:
        return BridgeHealth.model_validate(
            {
                "schema": 1, "bridge": "plc", "kind": "plc", "state": state,
                "stream_alive": True, "run_id": None, "last_seq": None, "backlog": 0,
                "lost": 0, "retries": 1, "active": active, "counters": {},
                "interval_s": 1.0, "t_ns": time.time_ns(),
            }
        )  # fmt: skip

    bridge = BridgeThread(lambda stop: run_mqtt_bridge(cfg, stop)).start()
    try:
        wait_for(lambda: sub.of("state"), 15, "the birth")
        deadline = time.monotonic() + 15
        while "plc:plc_unreachable" not in line_alarms():
            assert time.monotonic() < deadline, line_alarms()
            plc.raise_once("plc_unreachable", error="connection refused")
            plc.repeat()
            plc.health(health(["plc_unreachable"]))
            time.sleep(0.2)
        plc.clear("plc_unreachable")
        deadline = time.monotonic() + 15
        while "plc:plc_unreachable" in line_alarms():
            assert time.monotonic() < deadline, line_alarms()
            plc.health(health([], "connected"))
            time.sleep(0.2)
        # the PLC bridge goes silent: bridge_down after 3 s
        wait_for(lambda: "plc:bridge_down" in line_alarms(), 15, "bridge_down")
    finally:
        bridge.stop()
        plc.close()
        sub.stop()
