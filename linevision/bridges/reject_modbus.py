"""Reject-station I/O over Modbus TCP: a counter register in; a decision and a coil pulse out.

A plant with other I/O implements :class:`linevision.bridges.reject.RejectIo` (connect,
close, read_counter, fire, decide) and passes it to ``run_reject_bridge``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from linevision.bridges.config import RejectBridgeConfig
from linevision.bridges.plc_link import PlcError
from linevision.bridges.plc_modbus import u32
from linevision.log import get_logger

log = get_logger(__name__)

_ERRORS = (ModbusException, OSError, TimeoutError)
DECISION_PASS = 1
DECISION_REJECT = 2
"""The third register of a decision (``output.decision_register``)."""


class ModbusRejectIo:
    def __init__(self, cfg: RejectBridgeConfig) -> None:
        self.cfg = cfg
        self._client: AsyncModbusTcpClient | None = None
        self._off_at = 0.0
        self._off_task: asyncio.Task[None] | None = None

    def _where(self) -> str:
        return f"modbus://{self.cfg.io.host}:{self.cfg.io.port}"

    async def connect(self) -> None:
        io = self.cfg.io
        client = AsyncModbusTcpClient(
            io.host, port=io.port, timeout=io.timeout_s, retries=0, reconnect_delay=0
        )
        try:
            ok = await client.connect()
        except _ERRORS as exc:
            client.close()
            msg = f"cannot connect to {self._where()}: {exc}"
            raise PlcError(msg, "io_unreachable") from exc
        if not ok:
            client.close()
            msg = f"cannot connect to {self._where()}"
            raise PlcError(msg, "io_unreachable")
        self._client = client

    async def close(self) -> None:
        if self._off_task is not None:
            self._off_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._off_task
            self._off_task = None
        if self._client is not None:
            with contextlib.suppress(*_ERRORS, PlcError):
                await self._coil(value=False)
            self._client.close()
            self._client = None

    def _live(self) -> AsyncModbusTcpClient:
        if self._client is None or not self._client.connected:
            msg = f"not connected to {self._where()}"
            raise PlcError(msg, "io_unreachable")
        return self._client

    def _check(self, rr: Any, what: str) -> Any:
        if rr.isError():
            msg = f"{self._where()} refused {what}: {rr}"
            raise PlcError(msg, "io_refused")
        return rr

    async def read_counter(self) -> int:
        t = self.cfg.tracking
        client = self._live()
        count = 2 if t.width == 32 else 1
        dev = self.cfg.io.device_id
        try:
            if t.table == "holding":
                rr = await client.read_holding_registers(
                    t.counter_register, count=count, device_id=dev
                )
            else:
                rr = await client.read_input_registers(
                    t.counter_register, count=count, device_id=dev
                )
        except _ERRORS as exc:
            msg = f"read from {self._where()} failed: {exc}"
            raise PlcError(msg, "io_unreachable") from exc
        regs = self._check(rr, "counter read").registers
        return int(regs[0]) if count == 1 else (int(regs[0]) << 16) | int(regs[1])

    async def _coil(self, *, value: bool) -> None:
        client = self._live()
        out = self.cfg.output
        try:
            rr = await client.write_coil(out.coil, value, device_id=self.cfg.io.device_id)
        except _ERRORS as exc:
            msg = f"coil write to {self._where()} failed: {exc}"
            raise PlcError(msg, "io_unreachable") from exc
        self._check(rr, "coil write")

    async def fire(self, cell_id: int) -> None:
        out = self.cfg.output
        client = self._live()
        if out.cell_register is not None:
            try:
                rr = await client.write_registers(
                    out.cell_register, u32(cell_id), device_id=self.cfg.io.device_id
                )
            except _ERRORS as exc:
                msg = f"cell id write to {self._where()} failed: {exc}"
                raise PlcError(msg, "io_unreachable") from exc
            self._check(rr, "cell id write")
        await self._coil(value=True)
        loop = asyncio.get_running_loop()
        self._off_at = loop.time() + out.pulse_ms / 1000.0
        if self._off_task is None or self._off_task.done():
            self._off_task = asyncio.create_task(self._switch_off())

    async def decide(self, counter: int, *, reject: bool) -> None:
        out = self.cfg.output
        if out.decision_register is None:
            return
        client = self._live()
        regs = [*u32(counter), DECISION_REJECT if reject else DECISION_PASS]
        try:
            rr = await client.write_registers(
                out.decision_register, regs, device_id=self.cfg.io.device_id
            )
        except _ERRORS as exc:
            msg = f"decision write to {self._where()} failed: {exc}"
            raise PlcError(msg, "io_unreachable") from exc
        self._check(rr, "decision write")

    async def stop_line(self) -> None:
        stop = self.cfg.on_jump.stop
        if stop is None:
            msg = "no on_jump.stop output is configured"
            raise PlcError(msg, "io_refused")
        client = self._live()
        dev = self.cfg.io.device_id
        try:
            if stop.coil is not None:
                rr = await client.write_coil(stop.coil, value=True, device_id=dev)
            else:
                assert stop.holding_register is not None  # the config sets exactly one of the two
                rr = await client.write_register(stop.holding_register, stop.value, device_id=dev)
        except _ERRORS as exc:
            msg = f"line stop write to {self._where()} failed: {exc}"
            raise PlcError(msg, "io_unreachable") from exc
        self._check(rr, "line stop write")

    async def _switch_off(self) -> None:
        loop = asyncio.get_running_loop()
        while (left := self._off_at - loop.time()) > 0:  # noqa: ASYNC110  (a new pulse moves the end)
            await asyncio.sleep(left)
        try:
            await self._coil(value=False)
        except PlcError:
            log.exception("reject_output_stuck_on", coil=self.cfg.output.coil)
