"""The PLC bridge against a pymodbus TCP server standing in for the PLC."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from pymodbus.client import ModbusTcpClient

from linevision.bridges.alarms import AlarmMessage
from linevision.bridges.config import PlcBridgeConfig
from linevision.bridges.plc import run_plc_bridge
from linevision.bridges.plc_link import REASON_CODES, STATUS_STREAM_ALIVE, run_tag
from tests.bridges.daemon_sim import Daemon, is_ng
from tests.bridges.harness import (
    BridgeThread,
    account,
    collect_reports,
    free_port,
    journal_rows,
    percentile,
    wait_for,
)
from tests.bridges.plc_sim import ModbusPlc, ThreadedPlc
from tests.helpers import free_tcp_endpoint


def plc_config(daemon: Daemon, port: int, **over) -> PlcBridgeConfig:
    data = {
        "source": {
            "verdicts": daemon.publisher.endpoint,
            "replay": daemon.replay.endpoint if daemon.replay else None,
            "heartbeat_timeout_s": 1.0,
            "recover_timeout_s": 2.0,
        },
        "report": {"publish": free_tcp_endpoint()},
        "plc": {"kind": "modbus", "host": "127.0.0.1", "port": port, "timeout_s": 0.5},
        "stations": {"pole_piece": 1},
        "backoff": {"min_s": 0.02, "max_s": 0.2},
        "heartbeat_s": 0.2,
        **over,
    }
    return PlcBridgeConfig.model_validate(data)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db").start()
    yield d
    d.stop()


@pytest.fixture
def plc():
    t = ThreadedPlc(ModbusPlc(free_port())).start()
    yield t
    t.stop()


def publish_times(journal) -> dict[tuple[int, int], int]:
    db = sqlite3.connect(str(journal))
    try:
        rows = db.execute("SELECT run_id, seq, payload FROM verdicts").fetchall()
    finally:
        db.close()
    return {(run_tag(r), s): json.loads(p)["t_publish_ns"] for r, s, p in rows}


def test_every_verdict_reaches_the_registers_once_in_order(daemon, plc, tmp_path):
    cfg = plc_config(daemon, plc.plc.port, state_file=str(tmp_path / "state.json"))
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()
    try:
        time.sleep(0.5)
        daemon.stream(1, 300, rate_hz=200)
        daemon.wait_sent(300)
        rec = plc.plc.recorder
        wait_for(lambda: len(rec.applied) >= 300, 15, "300 verdicts at the PLC")
        with ModbusTcpClient("127.0.0.1", port=plc.plc.port) as client:

            def idle() -> bool:
                return client.read_holding_registers(0, count=2, device_id=1).registers == [0, 0]

            # the last handshake ends after the PLC applied it: Ready cleared, then Ack cleared
            wait_for(idle, 5, "the last handshake to finish")
            regs = client.read_holding_registers(0, count=40, device_id=1).registers
        time.sleep(0.3)
    finally:
        result = bridge.stop()
    acct = account(journal_rows(daemon.journal.path), rec.applied)
    assert acct == {
        "published": 300,
        "applied": 300,
        "lost": 0,
        "applied_twice": 0,
        "unknown": 0,
        "wrong_cell": 0,
    }
    assert [r["cell_id"] for r in rec.applied] == list(range(1, 301))
    for r in rec.applied:
        assert r["verdict"] == (2 if is_ng(r["cell_id"]) else 1)
        assert r["reason"] == (REASON_CODES["defect"] if is_ng(r["cell_id"]) else 0)
        assert r["station"] == 1
    # read back: last block in the registers, handshake idle, status shows a live stream
    ready, ack, _hb, status, lost_hi, lost_lo, count, tag_hi, tag_lo = regs[:9]
    assert (ready, ack) == (0, 0)
    assert status & STATUS_STREAM_ALIVE
    assert (lost_hi, lost_lo) == (0, 0)
    assert (tag_hi << 16) | tag_lo == run_tag(daemon.run_id)
    last_slot = 9 + (count - 1) * 8
    assert (regs[last_slot] << 16) | regs[last_slot + 1] == 300
    assert (regs[last_slot + 2] << 16) | regs[last_slot + 3] == 300
    assert result.position.seq == 300
    assert json.loads((tmp_path / "state.json").read_text())["seq"] == 300
    t_pub = publish_times(daemon.journal.path)
    lat = [(r["t_ns"] - t_pub[(r["tag"], r["seq"])]) / 1e6 for r in rec.applied]
    print(
        f"\nFIGURE modbus publish->PLC register latency ms p50={percentile(lat, 50):.2f} "
        f"p99={percentile(lat, 99):.2f} max={max(lat):.2f} n={len(lat)} rate=200/s"
    )
    assert percentile(lat, 50) < 50


def test_slow_plc_is_retried_and_alarmed_without_loss_or_double_apply(daemon, plc):
    cfg = plc_config(daemon, plc.plc.port, handshake={"ack_timeout_ms": 60, "poll_ms": 2})
    alarms: list[AlarmMessage] = []
    plc.plc.ack_delay_s = 0.15
    reader = BridgeThread(
        lambda stop: collect_reports(cfg.report.publish, alarms, stop, AlarmMessage)
    ).start()
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()
    try:
        time.sleep(0.5)
        daemon.stream(1, 40, rate_hz=100)
        daemon.wait_sent(40)
        time.sleep(1.0)
        assert any(a.alarm == "plc_ack_timeout" and a.active for a in alarms)
        plc.plc.ack_delay_s = 0.0
        rec = plc.plc.recorder
        wait_for(lambda: len(rec.applied) >= 40, 15, "40 verdicts at the PLC")
        time.sleep(0.3)
    finally:
        result = bridge.stop()
        reader.stop()
    acct = account(journal_rows(daemon.journal.path), rec.applied)
    assert acct["lost"] == 0
    assert acct["applied_twice"] == 0
    assert acct["applied"] == 40
    assert [r["cell_id"] for r in rec.applied] == list(range(1, 41))
    assert result.counters["plc_ack_timeout"] >= 1
    assert any(a.alarm == "plc_ack_timeout" and not a.active for a in alarms)
    print(f"\nFIGURE slow-PLC resent blocks deduped by PLC: {rec.resent}, applied twice: 0")


def test_unreachable_plc_backs_off_alarms_then_delivers_everything(daemon, tmp_path):
    port = free_port()
    cfg = plc_config(daemon, port)
    alarms: list[AlarmMessage] = []
    reader = BridgeThread(
        lambda stop: collect_reports(cfg.report.publish, alarms, stop, AlarmMessage)
    ).start()
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()
    plc = None
    try:
        time.sleep(0.5)
        daemon.stream(1, 50, rate_hz=200)
        daemon.wait_sent(50)
        wait_for(lambda: any(a.alarm == "plc_unreachable" for a in alarms), 5, "alarm")
        time.sleep(0.5)
        plc = ThreadedPlc(ModbusPlc(port)).start()
        rec = plc.plc.recorder
        wait_for(lambda: len(rec.applied) >= 50, 15, "50 verdicts at the PLC")
        wait_for(
            lambda: any(a.alarm == "plc_unreachable" and not a.active for a in alarms), 5, "clear"
        )
    finally:
        result = bridge.stop()
        reader.stop()
        if plc is not None:
            plc.stop()
    assert [r["cell_id"] for r in rec.applied] == list(range(1, 51))
    assert result.counters["plc_unreachable"] >= 2
