"""PLC stand-ins on 127.0.0.1: a pymodbus TCP server and an asyncua server.

Each implements the PLC side of docs/plc.md exactly as a PLC programmer would: on a rising
Ready it takes the block, applies every slot whose ``(run tag, seq)`` is newer than the last
applied one, records it (JSON lines, flushed before the ack, so a killed PLC keeps what it
applied, like retentive memory), then sets Ack; on Ready cleared it clears Ack.

Run in a thread (``ThreadedPlc``) or as a process: ``python -m tests.bridges.plc_sim
modbus|opcua --port P --record FILE`` (killed with SIGKILL by the fault tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from pathlib import Path

from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from linevision.bridges.config import SLOT_FIELDS, ModbusMap

REGISTERS = 200
OPCUA_NS = "urn:linevision:plc"


class Recorder:
    """What the PLC applied, in order; dedupes by (tag, seq) like the PLC program must."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.applied: list[dict[str, int]] = []
        self.resent = 0
        self.blocks = 0
        self.last: tuple[int, int] = (0, 0)
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    self.applied.append(rec)
                    self.last = (rec["tag"], rec["seq"])
        self._file = path.open("a") if path is not None else None

    def take(self, tag: int, slots: list[dict[str, int]]) -> None:
        t_ns = time.time_ns()
        self.blocks += 1
        for s in slots:
            if self.last[0] == tag and s["seq"] <= self.last[1]:
                self.resent += 1
                continue
            rec = {"tag": tag, **s, "t_ns": t_ns}
            self.applied.append(rec)
            self.last = (tag, s["seq"])
            if self._file is not None:
                self._file.write(json.dumps(rec) + "\n")
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _u32(hi: int, lo: int) -> int:
    return (hi << 16) | lo


class ModbusPlc:
    def __init__(self, port: int, record: Path | None = None, m: ModbusMap | None = None) -> None:
        self.port = port
        self.map = m or ModbusMap()
        self.recorder = Recorder(record)
        self.ack_delay_s = 0.0
        self.respond = True
        self.regs: list[int] = []
        self.requests: list[tuple[int, int, int]] = []
        """``(function code, address, count)`` of every request the server handled."""
        self.server: ModbusTcpServer | None = None

    async def _action(  # noqa: PLR0913, PLR0917  (pymodbus's action signature)
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        regs: list[int],
        values: list[int] | list[bool] | None,
    ) -> None:
        self.requests.append((fc, address, count))
        self.regs = regs
        if values is None or fc not in (6, 16):
            return
        ready = self.map.ready
        if not address <= ready < address + len(values):
            return
        v = int(values[ready - address])
        if v == 1 and regs[ready - start] == 0 and self.respond:
            asyncio.get_running_loop().call_later(self.ack_delay_s, self._take, regs, start)
        elif v == 0:
            asyncio.get_running_loop().call_later(self.ack_delay_s, self._set_ack, regs, start, 0)

    def _take(self, regs: list[int], start: int) -> None:
        m = self.map
        if regs[m.ready - start] != 1:
            return
        n = regs[m.count - start]
        tag = _u32(regs[m.run_tag - start], regs[m.run_tag + 1 - start])
        slots = []
        for i in range(n):
            b = m.slot_base + i * m.slot_stride - start
            slots.append(
                {
                    "seq": _u32(regs[b], regs[b + 1]),
                    "cell_id": _u32(regs[b + 2], regs[b + 3]),
                    "station": regs[b + SLOT_FIELDS["station"]],
                    "verdict": regs[b + SLOT_FIELDS["verdict"]],
                    "reason": regs[b + SLOT_FIELDS["reason"]],
                }
            )
        self.recorder.take(tag, slots)
        self._set_ack(regs, start, 1)

    def _set_ack(self, regs: list[int], start: int, value: int) -> None:
        regs[self.map.ack - start] = value

    async def serve(self, started: threading.Event | None = None) -> None:
        dev = SimDevice(
            id=0,
            simdata=[SimData(address=0, count=REGISTERS, values=0, datatype=DataType.REGISTERS)],
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
        self.recorder.close()


class OpcUaPlc:
    def __init__(self, port: int, record: Path | None = None, slots: int = 8) -> None:
        self.port = port
        self.slots = slots
        self.recorder = Recorder(record)
        self.ack_delay_s = 0.0
        self.respond = True
        self.server = Server()
        self.nodes: dict[str, object] = {}
        self.url = f"opc.tcp://127.0.0.1:{port}/linevision/"

    async def _setup(self) -> None:
        s = self.server
        await s.init()
        s.set_endpoint(self.url)
        idx = await s.register_namespace(OPCUA_NS)
        obj = await s.nodes.objects.add_object(ua.NodeId("Linevision", idx), "Linevision")
        vt = ua.VariantType
        spec = {
            "Ready": (False, vt.Boolean),
            "Ack": (False, vt.Boolean),
            "Heartbeat": (0, vt.UInt16),
            "Status": (0, vt.UInt16),
            "Lost": (0, vt.UInt32),
            "Count": (0, vt.UInt16),
            "RunTag": (0, vt.UInt32),
            "Seq": ([0] * self.slots, vt.UInt32),
            "CellId": ([0] * self.slots, vt.Int64),
            "Station": ([0] * self.slots, vt.UInt16),
            "Verdict": ([0] * self.slots, vt.UInt16),
            "Reason": ([0] * self.slots, vt.UInt16),
            "ChallengeRequest": (False, vt.Boolean),
        }
        for name, (value, vtype) in spec.items():
            node = await obj.add_variable(
                ua.NodeId(f"Linevision.{name}", idx), name, ua.Variant(value, vtype)
            )
            await node.set_writable()
            self.nodes[name] = node

    async def _on_write(self, event: object, _dispatcher: object) -> None:
        ready = self.nodes["Ready"]
        for req in event.request_params.NodesToWrite:  # type: ignore[attr-defined]
            if req.NodeId == ready.nodeid:  # type: ignore[attr-defined]
                value = bool(req.Value.Value.Value)
                if value and self.respond:
                    asyncio.get_running_loop().call_later(
                        self.ack_delay_s, lambda: asyncio.ensure_future(self._take())
                    )
                elif not value:
                    asyncio.get_running_loop().call_later(
                        self.ack_delay_s, lambda: asyncio.ensure_future(self._ack(value=False))
                    )

    async def read(self, name: str) -> object:
        return await self.nodes[name].read_value()  # type: ignore[attr-defined]

    async def _take(self) -> None:
        if not await self.read("Ready"):
            return
        n = int(await self.read("Count"))
        tag = int(await self.read("RunTag"))
        cols = {k: await self.read(k) for k in ("Seq", "CellId", "Station", "Verdict", "Reason")}
        names = {"Seq": "seq", "CellId": "cell_id", "Station": "station", "Verdict": "verdict"}
        names["Reason"] = "reason"
        slots = [{names[k]: int(v[i]) for k, v in cols.items()} for i in range(n)]  # type: ignore[index]
        self.recorder.take(tag, slots)
        await self._ack(value=True)

    async def _ack(self, *, value: bool) -> None:
        node = self.nodes["Ack"]
        await self.server.write_attribute_value(
            node.nodeid,  # type: ignore[attr-defined]
            ua.DataValue(ua.Variant(value, ua.VariantType.Boolean)),
        )

    async def serve(self, started: threading.Event | None = None) -> None:
        await self._setup()
        async with self.server:
            self.server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
            if started is not None:
                started.set()
            await asyncio.Event().wait()

    async def shutdown(self) -> None:
        self.recorder.close()


class ThreadedPlc:
    """Runs a stand-in on its own event loop thread; ``stop()`` shuts it down."""

    def __init__(self, plc: ModbusPlc | OpcUaPlc) -> None:
        self.plc = plc
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._task = self.loop.create_task(self.plc.serve(self._started))
        try:
            self.loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.run_until_complete(self.plc.shutdown())
            self.loop.close()

    def start(self, timeout_s: float = 10.0) -> ThreadedPlc:
        self._thread.start()
        assert self._started.wait(timeout_s), "PLC stand-in did not start"
        return self

    def call(self, coro: object, timeout_s: float = 5.0) -> object:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result(timeout_s)

    def stop(self) -> None:
        if self._task is not None:
            self.loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("modbus", "opcua"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--record", type=Path, required=True)
    args = p.parse_args()
    plc: ModbusPlc | OpcUaPlc = (
        ModbusPlc(args.port, args.record)
        if args.kind == "modbus"
        else OpcUaPlc(args.port, args.record)
    )
    ready = threading.Event()

    async def run() -> None:
        task = asyncio.create_task(plc.serve(ready))
        await asyncio.to_thread(ready.wait, 30)
        print("ready", flush=True)
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()


class S7Plc:
    """snap7's server with one data block; a 1 ms scan thread runs the PLC side."""

    def __init__(self, port: int, db: int = 10, m: ModbusMap | None = None) -> None:
        from snap7.server import Server as S7Server  # noqa: PLC0415

        self.port = port
        self.db = db
        self.map = m or ModbusMap()
        self.mem = bytearray(2 * REGISTERS)
        self.recorder = Recorder(None)
        self.server = S7Server(log=False)
        self._stop = threading.Event()
        self._scan = threading.Thread(target=self._scan_loop, daemon=True)

    def word(self, reg: int) -> int:
        return int.from_bytes(self.mem[2 * reg : 2 * reg + 2], "big")

    def _set(self, reg: int, value: int) -> None:
        self.mem[2 * reg : 2 * reg + 2] = value.to_bytes(2, "big")

    def start(self) -> S7Plc:
        from snap7.type import SrvArea  # noqa: PLC0415

        self.server.register_area(SrvArea.DB, self.db, self.mem)
        self.server.start(tcp_port=self.port)
        self._scan.start()
        return self

    def _scan_loop(self) -> None:
        m = self.map
        was_ready = 0
        while not self._stop.wait(0.001):
            ready = self.word(m.ready)
            if ready and not was_ready:
                regs = [self.word(r) for r in range(REGISTERS)]
                self._take(regs)
                self._set(m.ack, 1)
            elif not ready and self.word(m.ack):
                self._set(m.ack, 0)
            was_ready = ready

    def _take(self, regs: list[int]) -> None:
        m = self.map
        tag = _u32(regs[m.run_tag], regs[m.run_tag + 1])
        slots = []
        for i in range(regs[m.count]):
            b = m.slot_base + i * m.slot_stride
            slots.append(
                {
                    "seq": _u32(regs[b], regs[b + 1]),
                    "cell_id": _u32(regs[b + 2], regs[b + 3]),
                    "station": regs[b + SLOT_FIELDS["station"]],
                    "verdict": regs[b + SLOT_FIELDS["verdict"]],
                    "reason": regs[b + SLOT_FIELDS["reason"]],
                }
            )
        self.recorder.take(tag, slots)

    def stop(self) -> None:
        self._stop.set()
        self._scan.join(5)
        self.server.stop()
        self.server.destroy()
