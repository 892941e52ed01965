"""The challenge through the live station, the "vision verified" bit at a PLC, the alarm."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from pymodbus.client import ModbusTcpClient

from linevision.bridges.config import PlcBridgeConfig
from linevision.bridges.plc import run_plc_bridge
from linevision.bridges.plc_link import STATUS_VERIFIED
from linevision.bus.lifecycle import parse_challenge
from linevision.bus.wire import VerdictMessage, parse_message
from linevision.config import HmiConfig
from linevision.hmi.server import HmiServer
from tests.bridges.harness import BridgeThread, free_port
from tests.bridges.plc_sim import ModbusPlc, ThreadedPlc
from tests.daemon.parts import free_port as free_http_port
from tests.helpers import free_tcp_endpoint
from tests.lifecycle.parts import (
    BusLog,
    cli,
    lifecycle_config,
    master_folder,
    running_daemon,
    wait_for,
)

REQUEST = 80
"""The PLC's challenge request register in these tests (outside the result block 6..72)."""


def _recipes(tmp_path: Path) -> Path:
    recipes = tmp_path / "recipes"
    master_folder(recipes / "masters" / "pole_piece")
    for name, model in (("good", "tiny"), ("blind", "blind")):
        (recipes / f"{name}.yaml").write_text(
            f"name: {name}\nstations:\n  pole_piece:\n    model: {model}\n"
            "    challenge: masters/pole_piece\n"
        )
    return recipes


def _plc_bridge(cfg, plc_port: int) -> PlcBridgeConfig:
    return PlcBridgeConfig.model_validate(
        {
            "source": {"verdicts": cfg.bus.publish, "replay": None, "heartbeat_timeout_s": 3.0},
            "report": {"publish": free_tcp_endpoint()},
            "plc": {
                "kind": "modbus",
                "host": "127.0.0.1",
                "port": plc_port,
                "timeout_s": 0.5,
                "map": {"challenge_request": REQUEST},
            },
            "stations": {"pole_piece": 1},
            "heartbeat_s": 0.2,
            "challenge": {"control": cfg.control.endpoint},
        }
    )


def _status(port: int) -> int:
    with ModbusTcpClient("127.0.0.1", port=port) as client:
        return int(client.read_holding_registers(3, count=1).registers[0])


def _heartbeat_station(bus: BusLog) -> dict[str, object]:
    beat = json.loads(bus.topics("heartbeat")[-1])
    return {**beat["stations"]["pole_piece"], "seq": beat["seq"]}


def test_a_model_that_misses_a_master_ng_clears_the_bit_and_a_pass_sets_it(
    tmp_path, models, frames, monkeypatch
):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    recipes = _recipes(tmp_path)
    cfg = lifecycle_config(
        tmp_path,
        frames,
        rate_hz=50,
        recipes={"dir": str(recipes), "active": "good"},
        challenge={"on_start": False, "on_switch": False},
    )
    bus = BusLog(cfg.bus.publish).start()
    plc = ThreadedPlc(ModbusPlc(free_port())).start()
    hmi = HmiServer(HmiConfig(listen=f"127.0.0.1:{free_http_port()}"), cfg.bus.publish, None)
    hmi.start()
    bridge = None
    try:
        with running_daemon(cfg, models) as ops:
            bridge = BridgeThread(lambda stop: run_plc_bridge(_plc_bridge(cfg, plc.plc.port), stop))
            bridge.start()
            wait_for(lambda: bus.topics("heartbeat"), 5, "a heartbeat")
            assert _heartbeat_station(bus)["challenge"] == "pending"
            assert not _status(plc.plc.port) & STATUS_VERIFIED

            # 1. the good model passes: the bit is set
            run = cli("challenge", "run", "--endpoint", cfg.control.endpoint, "--user", "anna")
            assert run.returncode == 0, run.stderr + run.stdout
            assert "pole_piece: PASSED" in run.stdout
            wait_for(lambda: _status(plc.plc.port) & STATUS_VERIFIED, 5, "the verified bit")

            # 2. a recipe whose model misses the bright master NGs: not verified at once
            switch = cli("recipe", "switch", "blind", "--endpoint", cfg.control.endpoint)
            assert switch.returncode == 0, switch.stderr
            wait_for(lambda: not _status(plc.plc.port) & STATUS_VERIFIED, 5, "the bit cleared")

            # 3. the PLC asks for a run: it fails, the alarm is raised, the bit stays clear
            _plc_requests_a_run_that_fails(plc.plc.port, bus, hmi)
            bad = cli("challenge", "run", "--endpoint", cfg.control.endpoint)
            assert bad.returncode == 1
            assert "FAIL ng_3.png" in bad.stdout

            # 4. back to the good model: a passing run sets the bit and clears the alarm
            assert (
                cli("recipe", "switch", "good", "--endpoint", cfg.control.endpoint).returncode == 0
            )
            again = cli("challenge", "run", "--endpoint", cfg.control.endpoint)
            assert again.returncode == 0, again.stdout + again.stderr
            wait_for(lambda: _status(plc.plc.port) & STATUS_VERIFIED, 5, "the bit set again")
            wait_for(
                lambda: any(
                    json.loads(p)["alarm"] == "challenge_failed" and not json.loads(p)["active"]
                    for p in bus.topics("alarm.daemon")
                ),
                5,
                "the alarm cleared",
            )
            counters = _heartbeat_station(bus)
            archive = Path(str(ops.archive.folder)) / "challenge"  # type: ignore[union-attr]
    finally:
        if bridge is not None:
            bridge.stop()
        plc.stop()
        hmi.stop()
        bus.stop()
    records = sorted(archive.glob("*/*.json"))
    assert len(records) == 4
    assert [json.loads(r.read_text())["passed"] for r in records].count(True) == 2
    _check_no_master_reached_the_verdict_bus(bus, counters)


def _plc_requests_a_run_that_fails(port: int, bus: BusLog, hmi: HmiServer) -> None:
    with ModbusTcpClient("127.0.0.1", port=port) as client:
        client.write_register(REQUEST, 1)
    wait_for(lambda: len(bus.topics("challenge.")) == 2, 30, "the PLC's run")
    failed = parse_challenge(b"challenge.pole_piece", bus.topics("challenge.")[-1])
    assert (failed.trigger, failed.passed, failed.user) == ("plc", False, "plc:plc")
    missed = sorted(s.sample for s in failed.samples if not s.passed)
    assert missed == ["ng_3.png", "ng_4.png", "ng_5.png"]
    assert all(s.verdict == "OK" and s.expected == "NG" for s in failed.samples[3:])
    wait_for(lambda: _heartbeat_station(bus)["challenge"] == "failed", 5, "state failed")
    with ModbusTcpClient("127.0.0.1", port=port) as client:
        assert client.read_holding_registers(REQUEST, count=1).registers[0] == 0
    assert not _status(port) & STATUS_VERIFIED
    alarms = [json.loads(p) for p in bus.topics("alarm.daemon")]
    assert any(
        a["alarm"] == "challenge_failed"
        and a["active"]
        and a["detail"]["stations"] == ["pole_piece"]
        for a in alarms
    )
    # the operator page shows it (data only: the page's layout is its own)
    page = _hmi_state(hmi)
    assert page["lifecycle"]["pole_piece"]["challenge"] == "failed"
    assert page["lifecycle"]["pole_piece"]["verified"] is False
    assert "challenge_failed" in {a["code"] for a in page["alarms"]}


def _hmi_state(hmi: HmiServer) -> dict[str, object]:
    """The page's snapshot once it shows the failed challenge (the heartbeat comes each s)."""
    url = f"http://127.0.0.1:{hmi.port}/api/state"
    deadline = time.monotonic() + 5
    while True:
        with urllib.request.urlopen(url, timeout=5) as r:
            snap = json.loads(r.read())
        shown = snap["lifecycle"].get("pole_piece", {}).get("challenge") == "failed"
        if shown or time.monotonic() > deadline:
            return snap
        time.sleep(0.1)


def _check_no_master_reached_the_verdict_bus(bus: BusLog, station: dict[str, object]) -> None:
    """Masters are never verdicts: no seq spent, no yield, nothing for the PLC or rejects."""
    verdicts = [parse_message(b"verdict.pole_piece", p) for p in bus.topics("verdict.")]
    assert all(isinstance(v, VerdictMessage) for v in verdicts)
    assert len(verdicts) > 100
    seqs = [v.seq for v in verdicts]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert min(v.cell_id for v in verdicts) >= 0
    # 4 runs of 6 masters, each decided once; the line's frames are counted apart: the
    # frames counted are the verdicts published (seq) and the few in flight, not the masters
    assert station["challenge_frames"] == station["challenge_inspected"] == 24
    assert 0 <= int(str(station["frames"])) - int(str(station["seq"])) < 10
