"""The PLC handshake over Modbus TCP holding registers (pymodbus asyncio client)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from linevision.bridges.config import SLOT_FIELDS, ModbusMap, ModbusTarget
from linevision.bridges.plc_link import U32, Block, PlcError


def u32(value: int) -> list[int]:
    """High word first.

    >>> u32(0x12345678)
    [4660, 22136]
    """
    v = value & U32
    return [v >> 16, v & 0xFFFF]


def runs(values: dict[int, int]) -> list[tuple[int, list[int]]]:
    """Register writes merged into contiguous runs.

    >>> runs({5: 1, 3: 7, 4: 8, 9: 2})
    [(3, [7, 8, 1]), (9, [2])]
    """
    out: list[tuple[int, list[int]]] = []
    for addr in sorted(values):
        if out and out[-1][0] + len(out[-1][1]) == addr:
            out[-1][1].append(values[addr])
        else:
            out.append((addr, [values[addr]]))
    return out


def block_registers(m: ModbusMap, block: Block) -> dict[int, int]:
    """Every register of the block's span (``ModbusMap.block_span``): count, run tag, the
    slots, and 0 in spare words and unused slots, so the span is one contiguous write.

    >>> from linevision.bridges.plc_link import Slot
    >>> b = Block("r", 7, (Slot(seq=1, cell_id=2, station=3, verdict=1, reason=0),), ())
    >>> regs = block_registers(ModbusMap(slots=2), b)
    >>> runs(regs) == [(6, [1, 0, 7, 0, 1, 0, 2, 3, 1, 0, 0] + [0] * 8)]
    True
    """
    lo, hi = m.block_span()
    regs: dict[int, int] = dict.fromkeys(range(lo, hi + 1), 0)
    regs[m.count] = len(block.slots)
    regs.update(zip((m.run_tag, m.run_tag + 1), u32(block.tag), strict=True))
    for i, s in enumerate(block.slots):
        base = m.slot_base + i * m.slot_stride
        regs.update(zip((base, base + 1), u32(s.seq), strict=True))
        cell = base + SLOT_FIELDS["cell_id"]
        regs.update(zip((cell, cell + 1), u32(s.cell_id), strict=True))
        regs[base + SLOT_FIELDS["station"]] = s.station
        regs[base + SLOT_FIELDS["verdict"]] = s.verdict
        regs[base + SLOT_FIELDS["reason"]] = s.reason
    return regs


def status_registers(m: ModbusMap, heartbeat: int, status: int, lost: int) -> dict[int, int]:
    regs = {m.heartbeat: heartbeat & 0xFFFF, m.status: status & 0xFFFF}
    regs.update(zip((m.lost, m.lost + 1), u32(lost), strict=True))
    return regs


class ModbusLink:
    def __init__(self, target: ModbusTarget) -> None:
        self.target = target
        self._client: AsyncModbusTcpClient | None = None

    def _where(self) -> str:
        return f"modbus://{self.target.host}:{self.target.port}"

    async def connect(self) -> None:
        client = AsyncModbusTcpClient(
            self.target.host,
            port=self.target.port,
            timeout=self.target.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
        try:
            ok = await client.connect()
        except (ModbusException, OSError, TimeoutError) as exc:
            client.close()
            msg = f"cannot connect to {self._where()}: {exc}"
            raise PlcError(msg) from exc
        if not ok:
            client.close()
            msg = f"cannot connect to {self._where()}"
            raise PlcError(msg)
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _live(self) -> AsyncModbusTcpClient:
        if self._client is None or not self._client.connected:
            msg = f"not connected to {self._where()}"
            raise PlcError(msg)
        return self._client

    def _check(self, response: Any, what: str) -> Any:
        if response.isError():
            msg = f"{self._where()} refused {what}: {response}"
            raise PlcError(msg, "plc_refused")
        return response

    async def _write(self, writes: Iterable[tuple[int, list[int]]]) -> None:
        client = self._live()
        dev = self.target.device_id
        try:
            for addr, values in writes:
                rr = await client.write_registers(addr, values, device_id=dev)
                self._check(rr, f"write of {len(values)} registers at {addr}")
        except (ModbusException, OSError, TimeoutError) as exc:
            msg = f"write to {self._where()} failed: {exc}"
            raise PlcError(msg) from exc

    async def write_block(self, block: Block) -> None:
        """One Write Multiple Registers (function 16) for the whole block."""
        (write,) = runs(block_registers(self.target.map, block))
        await self._write([write])

    async def set_ready(self, ready: bool) -> None:  # noqa: FBT001
        await self._write([(self.target.map.ready, [int(ready)])])

    async def _read(self, address: int, what: str) -> int:
        client = self._live()
        try:
            rr = await client.read_holding_registers(
                address, count=1, device_id=self.target.device_id
            )
        except (ModbusException, OSError, TimeoutError) as exc:
            msg = f"read from {self._where()} failed: {exc}"
            raise PlcError(msg) from exc
        return int(self._check(rr, f"read of {what}").registers[0])

    async def read_ack(self) -> bool:
        return bool(await self._read(self.target.map.ack, "ack"))

    async def read_request(self) -> bool:
        address = self.target.map.challenge_request
        return address is not None and bool(await self._read(address, "challenge_request"))

    async def clear_request(self) -> None:
        address = self.target.map.challenge_request
        if address is not None:
            await self._write([(address, [0])])

    async def write_status(self, heartbeat: int, status: int, lost: int) -> None:
        await self._write(runs(status_registers(self.target.map, heartbeat, status, lost)))
