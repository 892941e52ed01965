"""The PLC bridge against an asyncua server standing in for the PLC."""

from __future__ import annotations

import time

import pytest

from linevision.bridges.config import PlcBridgeConfig
from linevision.bridges.plc import run_plc_bridge
from linevision.bridges.plc_link import STATUS_STREAM_ALIVE, run_tag
from tests.bridges.daemon_sim import Daemon, is_ng
from tests.bridges.harness import (
    BridgeThread,
    account,
    free_port,
    journal_rows,
    percentile,
    wait_for,
)
from tests.bridges.plc_sim import OpcUaPlc, ThreadedPlc
from tests.bridges.test_plc_modbus_bridge import publish_times
from tests.helpers import free_tcp_endpoint


def opcua_config(daemon: Daemon, url: str, **over) -> PlcBridgeConfig:
    data = {
        "source": {
            "verdicts": daemon.publisher.endpoint,
            "replay": daemon.replay.endpoint if daemon.replay else None,
            "heartbeat_timeout_s": 1.0,
        },
        "report": {"publish": free_tcp_endpoint()},
        "plc": {"kind": "opcua", "url": url, "timeout_s": 1.0},
        "stations": {"pole_piece": 7},
        "backoff": {"min_s": 0.05, "max_s": 0.3},
        "heartbeat_s": 0.2,
        **over,
    }
    return PlcBridgeConfig.model_validate(data)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db").start()
    yield d
    d.stop()


def test_opcua_nodes_receive_every_verdict_once_and_survive_a_server_restart(daemon):
    port = free_port()
    plc = ThreadedPlc(OpcUaPlc(port)).start()
    cfg = opcua_config(daemon, plc.plc.url)
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()
    applied = []
    try:
        time.sleep(0.8)
        daemon.stream(1, 200, rate_hz=200)
        daemon.wait_sent(200)
        rec = plc.plc.recorder
        wait_for(lambda: len(rec.applied) >= 200, 20, "200 verdicts at the OPC UA server")
        # the last handshake ends after the PLC applied it: Ready cleared, then Ack cleared
        wait_for(
            lambda: (
                plc.call(plc.plc.read("Ready")) is False and plc.call(plc.plc.read("Ack")) is False
            ),
            5,
            "the last handshake to finish",
        )
        nodes = {k: plc.call(plc.plc.read(k)) for k in ("Ready", "Ack", "Status", "RunTag")}
        nodes["Seq"] = plc.call(plc.plc.read("Seq"))
        nodes["Count"] = plc.call(plc.plc.read("Count"))
        t_pub = publish_times(daemon.journal.path)
        lat = [(r["t_ns"] - t_pub[(r["tag"], r["seq"])]) / 1e6 for r in rec.applied]
        # the PLC goes away mid-stream; the bridge must carry on once it is back
        daemon.stream(201, 100, rate_hz=200)
        plc.stop()
        applied += rec.applied
        time.sleep(0.5)
        plc = ThreadedPlc(OpcUaPlc(port)).start()
        plc.plc.recorder.last = rec.last
        rec2 = plc.plc.recorder
        daemon.wait_sent(300)
        wait_for(
            lambda: rec2.applied and rec2.applied[-1]["seq"] >= 300, 30, "the rest after restart"
        )
        applied += rec2.applied
    finally:
        bridge.stop()
        plc.stop()
    assert nodes["Ready"] is False
    assert nodes["Ack"] is False
    assert nodes["Status"] & STATUS_STREAM_ALIVE
    assert nodes["RunTag"] == run_tag(daemon.run_id)
    assert nodes["Seq"][nodes["Count"] - 1] == 200
    acct = account(journal_rows(daemon.journal.path), applied)
    assert acct["lost"] == 0
    assert acct["applied_twice"] == 0
    assert acct["unknown"] == 0
    assert acct["published"] == 300
    assert acct["wrong_cell"] == 0
    assert [r["cell_id"] for r in applied] == list(range(1, 301))
    assert all(
        r["station"] == 7 and r["verdict"] == (2 if is_ng(r["cell_id"]) else 1) for r in applied
    )
    print(
        f"\nFIGURE opcua publish->PLC node latency ms p50={percentile(lat, 50):.2f} "
        f"p99={percentile(lat, 99):.2f} max={max(lat):.2f} n={len(lat)} rate=200/s"
    )
    print(f"FIGURE opcua server restart: lost={acct['lost']} applied_twice={acct['applied_twice']}")
