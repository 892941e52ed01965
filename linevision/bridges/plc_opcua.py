"""The PLC handshake over OPC UA variables (asyncua client).

Scalars: Ready, Ack (Boolean), Count, Heartbeat, Status (UInt16), RunTag, Lost (UInt32).
Arrays of ``slots`` elements: Seq (UInt32), CellId (Int64), Station, Verdict, Reason (UInt16).
A block is one Write service call for all data nodes, then one for Ready.
"""

from __future__ import annotations

import asyncio

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.uaerrors import UaError

from linevision.bridges.config import OpcUaTarget
from linevision.bridges.plc_link import U32, Block, PlcError

_ERRORS = (UaError, OSError, TimeoutError, ConnectionError)
_FIELDS = (
    "ready",
    "ack",
    "heartbeat",
    "status",
    "lost",
    "count",
    "run_tag",
    "seq",
    "cell_id",
    "station",
    "verdict",
    "reason",
)

VT = ua.VariantType


def node_id(text: str, namespace: int | None) -> str:
    """``s=Lv.Ready`` with namespace 3 -> ``ns=3;s=Lv.Ready``; a full id is kept.

    >>> node_id("s=Lv.Ready", 3)
    'ns=3;s=Lv.Ready'
    >>> node_id("ns=2;i=7", None)
    'ns=2;i=7'
    """
    if namespace is None or text.startswith("ns="):
        return text
    return f"ns={namespace};{text}"


def _dv(value: object, vtype: ua.VariantType) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vtype))


class OpcUaLink:
    def __init__(self, target: OpcUaTarget) -> None:
        self.target = target
        self._client: Client | None = None
        self._nodes: dict[str, Node] = {}

    async def connect(self) -> None:
        client = Client(self.target.url, timeout=self.target.timeout_s)
        try:
            await asyncio.wait_for(client.connect(), self.target.timeout_s * 2)
            ns = (
                await client.get_namespace_index(self.target.namespace_uri)
                if self.target.namespace_uri is not None
                else None
            )
        except (*_ERRORS, ValueError) as exc:
            await self._disconnect(client)
            msg = f"cannot connect to {self.target.url}: {exc!r}"
            raise PlcError(msg) from exc
        nodes = self.target.nodes
        self._nodes = {f: client.get_node(node_id(getattr(nodes, f), ns)) for f in _FIELDS}
        self._client = client

    @staticmethod
    async def _disconnect(client: Client) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), 1.0)
        except (*_ERRORS, AttributeError):
            pass

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await self._disconnect(client)

    def _live(self) -> Client:
        if self._client is None:
            msg = f"not connected to {self.target.url}"
            raise PlcError(msg)
        return self._client

    async def _write(self, values: dict[str, ua.DataValue]) -> None:
        client = self._live()
        try:
            await asyncio.wait_for(
                client.write_values([self._nodes[f] for f in values], list(values.values())),
                self.target.timeout_s,
            )
        except _ERRORS as exc:
            msg = f"write to {self.target.url} failed: {exc!r}"
            raise PlcError(msg) from exc

    async def write_block(self, block: Block) -> None:
        n = self.target.slots
        pad = [0] * (n - len(block.slots))
        await self._write(
            {
                "count": _dv(len(block.slots), VT.UInt16),
                "run_tag": _dv(block.tag, VT.UInt32),
                "seq": _dv([s.seq for s in block.slots] + pad, VT.UInt32),
                "cell_id": _dv([s.cell_id for s in block.slots] + pad, VT.Int64),
                "station": _dv([s.station for s in block.slots] + pad, VT.UInt16),
                "verdict": _dv([s.verdict for s in block.slots] + pad, VT.UInt16),
                "reason": _dv([s.reason for s in block.slots] + pad, VT.UInt16),
            }
        )

    async def set_ready(self, ready: bool) -> None:  # noqa: FBT001
        await self._write({"ready": _dv(ready, VT.Boolean)})

    async def read_ack(self) -> bool:
        self._live()
        try:
            value = await asyncio.wait_for(self._nodes["ack"].read_value(), self.target.timeout_s)
        except _ERRORS as exc:
            msg = f"read from {self.target.url} failed: {exc!r}"
            raise PlcError(msg) from exc
        return bool(value)

    async def write_status(self, heartbeat: int, status: int, lost: int) -> None:
        await self._write(
            {
                "heartbeat": _dv(heartbeat & 0xFFFF, VT.UInt16),
                "status": _dv(status & 0xFFFF, VT.UInt16),
                "lost": _dv(lost & U32, VT.UInt32),
            }
        )
