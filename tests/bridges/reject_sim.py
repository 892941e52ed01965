"""A reject station's I/O on a real pymodbus server, and the line's counter that tests move.

Holding registers: the counter at 0 (32-bit: 0-1, high word first; 16-bit: 0), the rejected
cell's id at 10-11, a line-stop register at 30. Coils: the reject output at 0, a line-stop
coil at 2. Every switch-on of the reject coil is recorded with the cell id written before it
and the time it arrived (``time.monotonic``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from pymodbus.client import ModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

CELL_REGISTER = 10
STOP_REGISTER = 30
REJECT_COIL = 0
STOP_COIL = 2


class RejectLine:
    def __init__(self, port: int) -> None:
        self.port = port
        self.fired: list[int] = []
        self.fire_t: dict[int, float] = {}
        """Cell id -> when its reject coil was last switched on."""
        self.stops: list[tuple[str, int]] = []
        self._cell = -1
        self._lock = threading.Lock()
        self.server: ModbusTcpServer | None = None

    async def _action(  # noqa: PLR0913, PLR0917  (pymodbus's action signature)
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        regs: list[int],
        values: Any,
    ) -> None:
        if values is None:
            return
        if fc == 16 and address == CELL_REGISTER:
            self._cell = (values[0] << 16) | values[1]
        elif fc == 5 and address == REJECT_COIL and values[0]:
            with self._lock:
                self.fired.append(self._cell)
                self.fire_t[self._cell] = time.monotonic()
        elif fc == 5 and address == STOP_COIL and values[0]:
            self.stops.append(("coil", address))
        elif fc == 6 and address == STOP_REGISTER:
            self.stops.append(("register", int(values[0])))

    def fired_set(self) -> set[int]:
        with self._lock:
            return set(self.fired)

    async def serve(self, started: threading.Event | None = None) -> None:
        dev = SimDevice(
            id=0,
            simdata=(
                [SimData(address=0, count=8, values=0, datatype=DataType.BITS)],
                [SimData(address=0, count=8, values=0, datatype=DataType.BITS)],
                [SimData(address=0, count=40, values=0, datatype=DataType.REGISTERS)],
                [SimData(address=0, count=40, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._action,
        )
        self.server = ModbusTcpServer(dev, address=("127.0.0.1", self.port))
        task = asyncio.create_task(self.server.serve_forever())
        await asyncio.sleep(0.05)
        if started is not None:
            started.set()
        await task

    async def shutdown(self) -> None:
        if self.server is not None:
            await self.server.shutdown()


class Counter:
    """The PLC's cell counter as the line writes it (16 or 32 bits)."""

    def __init__(self, port: int, width: int) -> None:
        self.width = width
        self.client = ModbusTcpClient("127.0.0.1", port=port)
        assert self.client.connect()

    def set(self, value: int) -> float:
        """Write the counter; returns ``time.monotonic()`` once the write is acknowledged."""
        value %= 1 << self.width
        regs = [value >> 16, value & 0xFFFF] if self.width == 32 else [value]
        rr = self.client.write_registers(0, regs, device_id=1)
        assert not rr.isError()
        return time.monotonic()

    def close(self) -> None:
        self.client.close()
