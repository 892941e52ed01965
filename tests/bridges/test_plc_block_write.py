"""docs/plc.md: a block (count, run tag, slots) goes to the PLC in one Write Multiple Registers.

The stand-in PLC is a real pymodbus server; its request hook records every request it handled.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from pydantic import ValidationError

from linevision.bridges.config import ModbusMap, PlcBridgeConfig
from linevision.bridges.plc import run_plc_bridge
from tests.bridges.daemon_sim import Daemon
from tests.bridges.harness import BridgeThread, free_port, wait_for
from tests.bridges.plc_sim import ModbusPlc, ThreadedPlc
from tests.bridges.test_plc_modbus_bridge import plc_config
from tests.helpers import free_tcp_endpoint

WRITE_MULTIPLE = 16


def test_each_block_is_one_write_multiple_registers(tmp_path):
    daemon = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db").start()
    plc = ThreadedPlc(ModbusPlc(free_port())).start()
    plc.plc.ack_delay_s = 0.02  # results pile up while the PLC takes its time: full blocks
    cfg = plc_config(daemon, plc.plc.port)
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()
    rec = plc.plc.recorder
    try:
        time.sleep(0.5)
        daemon.stream(1, 64, rate_hz=None)
        wait_for(lambda: len(rec.applied) >= 64, 15, "64 verdicts at the PLC")
    finally:
        result = bridge.stop()
        plc.stop()
        daemon.stop()
    lo, hi = ModbusMap().block_span()
    block_writes = [
        (fc, a, n) for fc, a, n in plc.plc.requests if fc == WRITE_MULTIPLE and lo <= a <= hi
    ]
    slots_per_block = Counter(r["t_ns"] for r in rec.applied)
    print(
        f"\nFIGURE block writes: blocks={result.counters['blocks']} "
        f"block_writes={len(block_writes)} max_slots={max(slots_per_block.values())}"
    )
    assert max(slots_per_block.values()) == cfg.plc.map.slots  # full blocks were written
    assert result.counters["retries"] == 0
    assert len(block_writes) == result.counters["blocks"] == rec.blocks
    assert set(block_writes) == {(WRITE_MULTIPLE, lo, hi - lo + 1)}


def test_a_map_whose_block_is_not_one_write_is_refused():
    base = {"plc": {"kind": "modbus", "host": "127.0.0.1"}, "stations": {"pole_piece": 1}}
    for bad, field in (
        ({"count": 200}, "count, run_tag and the slots"),
        ({"count": 80, "run_tag": 82, "heartbeat": 81}, "plc.map.heartbeat lies inside the block"),
    ):
        with pytest.raises(ValidationError, match=field):
            PlcBridgeConfig.model_validate({**base, "plc": {**base["plc"], "map": bad}})
