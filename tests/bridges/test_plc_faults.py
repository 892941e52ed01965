"""Kill -9 and restart the bridge, the daemon and the PLC mid-stream; a 10,000-verdict burst.

Accounting: every journaled verdict (the daemon commits before it sends) must be applied by
the PLC exactly once. A cell the killed daemon never journaled has no verdict anywhere; the
PLC rejects it by rule (docs/plc.md: no result by the reject point is NG).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from linevision.bridges.plc import run_plc_bridge
from tests.bridges.daemon_sim import Daemon
from tests.bridges.harness import (
    BridgeThread,
    Proc,
    account,
    free_port,
    journal_rows,
    read_records,
    wait_for,
    write_yaml,
)
from tests.bridges.plc_sim import ModbusPlc, ThreadedPlc
from tests.bridges.test_plc_modbus_bridge import plc_config
from tests.helpers import free_tcp_endpoint


def _bridge_yaml(tmp_path, publish, replay, port, **over):
    data = {
        "source": {"verdicts": publish, "replay": replay, "heartbeat_timeout_s": 1.0},
        "report": {"publish": free_tcp_endpoint()},
        "plc": {"kind": "modbus", "host": "127.0.0.1", "port": port, "timeout_s": 0.5},
        "stations": {"pole_piece": 1},
        "backoff": {"min_s": 0.02, "max_s": 0.2},
        "state_file": str(tmp_path / "bridge_state.json"),
        **over,
    }
    return write_yaml(tmp_path / "bridge.yaml", data)


def _bridge_proc(tmp_path, cfg_path):
    args = ["-m", "linevision", "bridge", "plc", "--config", str(cfg_path)]
    return Proc(args, tmp_path / "bridge.log").start(wait_ready=False)


def _report(name, acct, **extra):
    items = " ".join(f"{k}={v}" for k, v in {**acct, **extra}.items())
    print(f"\nFIGURE fault {name}: {items}")


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_bridge_killed_and_restarted_mid_stream(tmp_path):
    daemon = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db").start()
    plc = ThreadedPlc(ModbusPlc(free_port())).start()
    cfg = _bridge_yaml(tmp_path, daemon.publisher.endpoint, daemon.replay.endpoint, plc.plc.port)
    bridge = _bridge_proc(tmp_path, cfg)
    rec = plc.plc.recorder
    try:
        # joined: it has seen the daemon's heartbeat (a loaded machine starts it slowly)
        joined = lambda: "stream_joined" in _text(tmp_path / "bridge.log")  # noqa: E731
        wait_for(joined, 30, "the bridge joining the stream")
        daemon.stream(1, 300, rate_hz=300)
        wait_for(lambda: len(rec.applied) >= 100, 10, "the first 100 at the PLC")
        bridge.kill()
        daemon.stream(301, 300, rate_hz=300)
        bridge = _bridge_proc(tmp_path, cfg)
        daemon.wait_sent(600)
        wait_for(lambda: len(rec.applied) >= 600, 30, "600 verdicts at the PLC")
        time.sleep(0.3)
    finally:
        bridge.terminate()
        plc.stop()
        daemon.stop()
    acct = account(journal_rows(tmp_path / "journal.db"), rec.applied)
    _report("bridge-kill", acct, resent_deduped_by_plc=rec.resent)
    assert acct == {
        "published": 600,
        "applied": 600,
        "lost": 0,
        "applied_twice": 0,
        "unknown": 0,
        "wrong_cell": 0,
    }
    assert [r["cell_id"] for r in rec.applied] == list(range(1, 601))


def test_daemon_killed_and_restarted_mid_stream(tmp_path):
    publish, replay, journal = free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db"

    def daemon_proc(first: int, count: int) -> Proc:
        args = ["-m", "tests.bridges.daemon_sim", "--publish", publish, "--replay", replay]
        args += ["--journal", str(journal), "--first-cell", str(first), "--count", str(count)]
        args += ["--rate", "300"]
        return Proc(args, tmp_path / "daemon.log").start()

    plc = ThreadedPlc(ModbusPlc(free_port())).start()
    rec = plc.plc.recorder
    daemon = daemon_proc(1, 600)
    cfg = plc_config_for(publish, replay, plc.plc.port)
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()
    try:
        wait_for(lambda: len(rec.applied) >= 150, 10, "150 verdicts before the kill")
        daemon.kill()
        time.sleep(0.3)
        daemon = daemon_proc(1001, 300)
        wait_for(lambda: any(r["cell_id"] == 1300 for r in rec.applied), 30, "cell 1300")
        time.sleep(0.3)
    finally:
        result = bridge.stop()
        daemon.terminate()
        plc.stop()
    rows = journal_rows(journal)
    acct = account(rows, rec.applied)
    never_journaled = 600 - sum(1 for r in rows if r[3] <= 600)
    _report(
        "daemon-kill",
        acct,
        never_inspected_cells_rejected_by_plc_rule=never_journaled,
        restarts_seen=result.stream_counters["restarts"],
    )
    assert acct["lost"] == 0
    assert acct["applied_twice"] == 0
    assert acct["unknown"] == 0
    assert acct["wrong_cell"] == 0
    assert acct["applied"] == acct["published"]
    assert len({r[0] for r in rows}) == 2
    assert result.stream_counters["restarts"] == 1
    cells = [r["cell_id"] for r in rec.applied]
    assert cells == sorted(cells)


def plc_config_for(publish, replay, port):
    class _D:
        class publisher:  # noqa: N801
            endpoint = publish

        class replay:  # noqa: N801
            endpoint = None

    _D.replay.endpoint = replay
    return plc_config(_D, port)  # type: ignore[arg-type]


def test_plc_killed_and_restarted_mid_stream(tmp_path):
    daemon = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db").start()
    port, record = free_port(), tmp_path / "plc.jsonl"
    args = ["-m", "tests.bridges.plc_sim", "modbus", "--port", str(port), "--record", str(record)]
    plc = Proc(args, tmp_path / "plc.log").start()
    cfg = plc_config(daemon, port)
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()
    try:
        time.sleep(0.5)
        daemon.stream(1, 300, rate_hz=300)
        wait_for(lambda: len(read_records(record)) >= 100, 10, "100 verdicts before the kill")
        plc.kill()
        daemon.stream(301, 300, rate_hz=300)
        time.sleep(0.5)
        plc = Proc(args, tmp_path / "plc.log").start()
        daemon.wait_sent(600)
        wait_for(lambda: len(read_records(record)) >= 600, 30, "600 verdicts at the PLC")
        time.sleep(0.3)
    finally:
        result = bridge.stop()
        plc.terminate()
        daemon.stop()
    applied = read_records(record)
    acct = account(journal_rows(tmp_path / "journal.db"), applied)
    _report("plc-kill", acct, connect_failures=result.counters["plc_unreachable"])
    assert acct == {
        "published": 600,
        "applied": 600,
        "lost": 0,
        "applied_twice": 0,
        "unknown": 0,
        "wrong_cell": 0,
    }
    assert [r["cell_id"] for r in applied] == list(range(1, 601))
    assert result.counters["plc_unreachable"] >= 1


@pytest.mark.parametrize("count", [10_000])
def test_burst_at_full_speed_loses_nothing(tmp_path, count):
    daemon = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db").start()
    port, record = free_port(), tmp_path / "plc.jsonl"
    args = ["-m", "tests.bridges.plc_sim", "modbus", "--port", str(port), "--record", str(record)]
    plc = Proc(args, tmp_path / "plc.log").start()
    cfg = _bridge_yaml(tmp_path, daemon.publisher.endpoint, daemon.replay.endpoint, port)
    bridge = _bridge_proc(tmp_path, cfg)
    try:
        joined = lambda: "stream_joined" in _text(tmp_path / "bridge.log")  # noqa: E731
        wait_for(joined, 30, "the bridge joining the stream")
        t0 = time.monotonic()
        daemon.stream(1, count, rate_hz=None)
        daemon.wait_sent(count, timeout_s=30)
        t_pub = time.monotonic() - t0
        wait_for(lambda: len(read_records(record)) >= count, 60, f"{count} at the PLC", 0.1)
        t_all = time.monotonic() - t0
    finally:
        bridge.terminate()
        plc.terminate()
        daemon.stop()
    applied = read_records(record)
    acct = account(journal_rows(tmp_path / "journal.db"), applied)
    _report(
        "burst",
        acct,
        publish_s=round(t_pub, 2),
        delivered_s=round(t_all, 2),
        publish_rate=int(count / t_pub),
        plc_rate=int(count / t_all),
    )
    assert acct == {
        "published": count,
        "applied": count,
        "lost": 0,
        "applied_twice": 0,
        "unknown": 0,
        "wrong_cell": 0,
    }
