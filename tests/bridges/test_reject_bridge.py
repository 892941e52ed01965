"""The reject-actuator bridge: a Modbus server stands in for the reject station's I/O."""

from __future__ import annotations

import asyncio
import time

from pymodbus.client import ModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from linevision.bridges.alarms import RejectReport, Reporter
from linevision.bridges.config import RejectBridgeConfig
from linevision.bridges.reject import CellTracker, RejectBridge, run_reject_bridge
from linevision.bridges.reject_modbus import ModbusRejectIo
from tests.bridges.daemon_sim import Daemon, is_ng, verdict
from tests.bridges.harness import BridgeThread, collect_reports, free_port, wait_for
from tests.bridges.plc_sim import ThreadedPlc
from tests.helpers import free_tcp_endpoint

CELL_REGISTER = 10
DECISION_REGISTER = 12


class RejectStation:
    """Counter in holding registers 0-1 (32-bit), reject coil 0, cell id in 10-11."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.fired: list[int] = []
        self.coil_writes: list[bool] = []
        self.decisions: list[tuple[int, int]] = []
        """(counter value, 1 pass / 2 reject) as the bridge wrote them, in order."""
        self._cell = -1
        self.server: ModbusTcpServer | None = None

    async def _action(self, fc, start, address, count, regs, values):  # noqa: PLR0913, PLR0917  (pymodbus's action signature)
        if fc == 16 and address == CELL_REGISTER and values is not None:
            self._cell = (values[0] << 16) | values[1]
        if fc == 16 and address == DECISION_REGISTER and values is not None:
            assert len(values) == 3  # one write per decision
            self.decisions.append(((values[0] << 16) | values[1], values[2]))
        if fc == 5 and values is not None:
            self.coil_writes.append(bool(values[0]))
            if values[0]:
                self.fired.append(self._cell)

    async def serve(self, started):
        dev = SimDevice(
            id=0,
            simdata=(
                [SimData(address=0, count=4, values=0, datatype=DataType.BITS)],
                [SimData(address=0, count=4, values=0, datatype=DataType.BITS)],
                [SimData(address=0, count=20, values=0, datatype=DataType.REGISTERS)],
                [SimData(address=0, count=20, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._action,
        )
        self.server = ModbusTcpServer(dev, address=("127.0.0.1", self.port))
        task = asyncio.create_task(self.server.serve_forever())
        await asyncio.sleep(0.05)
        started.set()
        await task

    async def shutdown(self):
        if self.server is not None:
            await self.server.shutdown()


def test_tracker_rejects_ng_and_cells_without_a_verdict():
    t = CellTracker({"pole_piece": 0, "seal_edge": -100}, memory=1000)
    t.record_verdict("pole_piece", 1, "OK")
    t.record_verdict("seal_edge", 101, "OK")
    t.record_verdict("pole_piece", 2, "OK")
    t.record_verdict("seal_edge", 102, "NG")
    t.record_verdict("pole_piece", 3, "OK")
    t.record_verdict("pole_piece", 4, "NG")
    t.record_verdict("pole_piece", 4, "OK")  # a second verdict never turns NG into OK
    t.record_verdict("other", 5, "NG")  # stations not tracked are ignored
    d = {c: t.arrive(c) for c in range(1, 6)}
    assert (d[1].fire, d[1].reason) == (False, "ok")
    assert (d[2].fire, d[2].reason) == (True, "ng")
    assert (d[3].fire, d[3].reason, d[3].verdicts) == (
        True,
        "no_verdict",
        {"pole_piece": "OK", "seal_edge": None},
    )
    assert (d[4].fire, d[4].reason) == (True, "ng")
    assert (d[5].fire, d[5].reason) == (True, "no_verdict")
    assert len(t) == 0


def test_tracker_memory_is_bounded():
    t = CellTracker({"a": 0}, memory=100)
    for c in range(1000):
        t.record_verdict("a", c, "OK")
    assert len(t) == 100
    assert t.dropped == 900
    assert t.arrive(0).reason == "no_verdict"
    assert t.arrive(999).reason == "ok"


def test_reject_station_fires_for_ng_and_missing_verdicts_and_reports(tmp_path):
    daemon = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db").start()
    station = RejectStation(free_port())
    io = ThreadedPlc(station).start()  # type: ignore[arg-type]
    distance = 5
    cfg = RejectBridgeConfig.model_validate(
        {
            "name": "reject1",
            "source": {"verdicts": daemon.publisher.endpoint, "replay": daemon.replay.endpoint},
            "report": {"publish": free_tcp_endpoint()},
            "io": {"host": "127.0.0.1", "port": station.port},
            "tracking": {
                "counter_register": 0,
                "distance": distance,
                "poll_ms": 1,
                "stations": {"pole_piece": 0},
            },
            "output": {
                "coil": 0,
                "pulse_ms": 3,
                "cell_register": CELL_REGISTER,
                "decision_register": DECISION_REGISTER,
            },
            "backoff": {"min_s": 0.02, "max_s": 0.2},
            "state_file": str(tmp_path / "reject.db"),
        }
    )
    reports: list[RejectReport] = []
    reader = BridgeThread(
        lambda stop: collect_reports(cfg.report.publish, reports, stop, RejectReport)
    ).start()
    line = ModbusTcpClient("127.0.0.1", port=station.port)
    assert line.connect()
    line.write_registers(0, [0, distance], device_id=1)  # cell 0 at the reject station
    bridge = BridgeThread(lambda stop: run_reject_bridge(cfg, stop)).start()
    missing = {17, 18, 40}
    cells = range(1, 61)
    try:
        time.sleep(0.6)
        for c in cells:
            if c not in missing:
                daemon.publisher.publish(verdict(c))
        daemon.wait_sent(len(cells) - len(missing))
        time.sleep(0.2)
        for c in cells:  # the line moves one pitch every 15 ms
            line.write_registers(0, [0, c + distance], device_id=1)
            time.sleep(0.015)
        wait_for(lambda: {r.cell_id for r in reports} >= set(cells), 5, "a report per cell")
        time.sleep(0.05)
    finally:
        result = bridge.stop()
        reader.stop()
        line.close()
        io.stop()
        daemon.stop()
    expected = {0} | {c for c in cells if is_ng(c)} | missing
    assert sorted(station.fired) == sorted(expected)
    assert station.coil_writes[-1] is False  # the output is off at the end
    by_cell = {r.cell_id: r for r in reports}
    assert set(by_cell) - {0} == set(cells)  # cell 0's report may precede the subscription
    for c in cells:
        r = by_cell[c]
        if c in missing:
            assert (r.action, r.reason, r.fired) == ("reject", "no_verdict", True)
        elif is_ng(c):
            assert (r.action, r.reason, r.fired) == ("reject", "ng", True)
        else:
            assert (r.action, r.reason, r.fired) == ("pass", "ok", False)
    assert result.counters["fired"] == len(expected)
    assert result.counters["missed"] == 0
    # the handshake: every decided cell, pass or reject, by the counter value at the station
    decided = dict(station.decisions)
    for c in cells:
        assert decided[c + distance] == (2 if c in expected else 1), c
    print(
        f"\nFIGURE reject: cells={len(cells)} fired={len(station.fired)} "
        f"(ng={sum(is_ng(c) for c in cells if c not in missing)}, no_verdict={len(missing) + 1})"
    )


def test_an_unreachable_reject_io_is_retried_past_a_thousand_failures():
    # a refused port stands in for reject I/O that is down for a long time (with a tiny
    # back-off): the bridge must go on retrying, not die when the delay's exponent is large
    cfg = RejectBridgeConfig.model_validate(
        {
            "name": "reject1",
            "source": {"verdicts": free_tcp_endpoint()},
            "report": {"publish": free_tcp_endpoint()},
            "io": {"host": "127.0.0.1", "port": free_port(), "timeout_s": 0.5},
            "tracking": {"counter_register": 0, "distance": 5, "stations": {"pole_piece": 0}},
            "output": {"coil": 0},
            "backoff": {"min_s": 0.000_001, "max_s": 0.000_001},
        }
    )
    failures = 1100

    async def main() -> RejectBridge:
        reporter = Reporter(cfg.report.publish, cfg.name)
        bridge = RejectBridge(cfg, ModbusRejectIo(cfg), reporter)
        stop = asyncio.Event()
        task = asyncio.create_task(bridge.run(stop))
        try:
            deadline = time.monotonic() + 60
            while bridge.counters["io_errors"] < failures and not task.done():
                assert time.monotonic() < deadline, bridge.counters
                await asyncio.sleep(0.01)
            stop.set()
            await task  # raises what ended the loop early
        finally:
            reporter.close()
        return bridge

    bridge = asyncio.run(main())
    assert bridge.counters["io_errors"] >= failures
