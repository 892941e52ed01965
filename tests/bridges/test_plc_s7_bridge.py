"""The PLC bridge against python-snap7's S7 server standing in for a Siemens PLC."""

from __future__ import annotations

import time

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
from tests.bridges.plc_sim import S7Plc
from tests.bridges.test_plc_modbus_bridge import publish_times
from tests.helpers import free_tcp_endpoint


def test_s7_data_block_receives_every_verdict_once(tmp_path):
    daemon = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db").start()
    plc = S7Plc(free_port()).start()
    cfg = PlcBridgeConfig.model_validate(
        {
            "source": {"verdicts": daemon.publisher.endpoint, "replay": daemon.replay.endpoint},
            "report": {"publish": free_tcp_endpoint()},
            "plc": {"kind": "s7", "host": "127.0.0.1", "port": plc.port, "db": plc.db},
            "stations": {"pole_piece": 3},
            "heartbeat_s": 0.2,
        }
    )
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()
    rec = plc.recorder
    try:
        time.sleep(0.5)
        daemon.stream(1, 200, rate_hz=200)
        daemon.wait_sent(200)
        wait_for(lambda: len(rec.applied) >= 200, 15, "200 verdicts in the data block")
        wait_for(lambda: (plc.word(0), plc.word(1)) == (0, 0), 5, "the last handshake to finish")
        words = {name: plc.word(r) for name, r in (("ready", 0), ("ack", 1), ("status", 3))}
        tag = (plc.word(7) << 16) | plc.word(8)
    finally:
        bridge.stop()
        plc.stop()
        daemon.stop()
    acct = account(journal_rows(tmp_path / "journal.db"), rec.applied)
    assert acct["lost"] == 0
    assert acct["applied_twice"] == 0
    assert acct["applied"] == 200
    assert acct["wrong_cell"] == 0
    assert [r["cell_id"] for r in rec.applied] == list(range(1, 201))
    assert all(r["verdict"] == (2 if is_ng(r["cell_id"]) else 1) for r in rec.applied)
    assert all(r["station"] == 3 for r in rec.applied)
    assert (words["ready"], words["ack"]) == (0, 0)
    assert words["status"] & STATUS_STREAM_ALIVE
    assert tag == run_tag(daemon.run_id)
    t_pub = publish_times(tmp_path / "journal.db")
    lat = [(r["t_ns"] - t_pub[(r["tag"], r["seq"])]) / 1e6 for r in rec.applied]
    print(
        f"\nFIGURE s7 publish->PLC data block latency ms p50={percentile(lat, 50):.2f} "
        f"p99={percentile(lat, 99):.2f} n={len(lat)} rate=200/s (PLC scan 1 ms)"
    )
