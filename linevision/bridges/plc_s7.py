"""The PLC handshake over Siemens S7 (python-snap7 asyncio client), in one data block.

The block holds the Modbus map word for word: register ``r`` is the big-endian word at byte
``2 * r`` (``DBW{2r}``), so a PLC program reads ``Ready`` at DBW0, ``Ack`` at DBW2, ...
"""

from __future__ import annotations

import asyncio

from snap7.async_client import AsyncClient
from snap7.error import S7Error

from linevision.bridges.config import S7Target
from linevision.bridges.plc_link import Block, PlcError
from linevision.bridges.plc_modbus import block_registers, runs, status_registers

_ERRORS = (S7Error, OSError, TimeoutError, RuntimeError, ValueError)


def words(values: list[int]) -> bytearray:
    """Registers as S7 words.

    >>> words([1, 0x1234])
    bytearray(b'\\x00\\x01\\x124')
    """
    return bytearray(b"".join((v & 0xFFFF).to_bytes(2, "big") for v in values))


class S7Link:
    def __init__(self, target: S7Target) -> None:
        self.target = target
        self._client: AsyncClient | None = None

    def _where(self) -> str:
        return f"s7://{self.target.host}:{self.target.port}/DB{self.target.db}"

    async def connect(self) -> None:
        t = self.target
        client = AsyncClient()
        try:
            await asyncio.wait_for(client.connect(t.host, t.rack, t.slot, t.port), t.timeout_s)
        except _ERRORS as exc:
            await self._disconnect(client)
            msg = f"cannot connect to {self._where()}: {exc!r}"
            raise PlcError(msg) from exc
        self._client = client

    @staticmethod
    async def _disconnect(client: AsyncClient) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), 1.0)
        except (*_ERRORS, AttributeError):
            pass

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await self._disconnect(client)

    def _live(self) -> AsyncClient:
        if self._client is None:
            msg = f"not connected to {self._where()}"
            raise PlcError(msg)
        return self._client

    async def _write(self, regs: dict[int, int]) -> None:
        client = self._live()
        try:
            for addr, values in runs(regs):
                await asyncio.wait_for(
                    client.db_write(self.target.db, 2 * addr, words(values)),
                    self.target.timeout_s,
                )
        except _ERRORS as exc:
            msg = f"write to {self._where()} failed: {exc!r}"
            raise PlcError(msg) from exc

    async def write_block(self, block: Block) -> None:
        await self._write(block_registers(self.target.map, block))

    async def set_ready(self, ready: bool) -> None:  # noqa: FBT001
        await self._write({self.target.map.ready: int(ready)})

    async def _read_word(self, register: int) -> int:
        client = self._live()
        try:
            data = await asyncio.wait_for(
                client.db_read(self.target.db, 2 * register, 2), self.target.timeout_s
            )
        except _ERRORS as exc:
            msg = f"read from {self._where()} failed: {exc!r}"
            raise PlcError(msg) from exc
        return int.from_bytes(bytes(data[:2]), "big")

    async def read_ack(self) -> bool:
        return await self._read_word(self.target.map.ack) != 0

    async def read_request(self) -> bool:
        register = self.target.map.challenge_request
        return register is not None and await self._read_word(register) != 0

    async def clear_request(self) -> None:
        register = self.target.map.challenge_request
        if register is not None:
            await self._write({register: 0})

    async def write_status(self, heartbeat: int, status: int, lost: int) -> None:
        await self._write(status_registers(self.target.map, heartbeat, status, lost))
