"""What the PLC handshake writes, independent of the fieldbus: codes, result blocks, links.

A :class:`PlcLink` is one fieldbus (Modbus TCP, OPC UA); the handshake itself lives in
:mod:`linevision.bridges.plc` and is the same for every link. docs/plc.md is the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from linevision.bus.wire import VerdictMessage

VERDICT_CODES: dict[str, int] = {"OK": 1, "NG": 2}
REASON_CODES: dict[str | None, int] = {
    None: 0,
    "defect": 1,
    "timeout": 2,
    "bad_frame": 3,
    "camera_error": 4,
    "model_error": 5,
    "overload": 6,
}

STATUS_STREAM_ALIVE = 1 << 0
"""Bit 0: the bridge hears the daemon (heartbeats within ``heartbeat_timeout_s``)."""
STATUS_LOST = 1 << 1
"""Bit 1: at least one verdict was lost since the bridge started (see the ``lost`` counter)."""
STATUS_BACKLOG = 1 << 2
"""Bit 2: more verdicts wait than one block holds (the PLC side is behind)."""
STATUS_VERIFIED = 1 << 3
"""Bit 3: vision verified: the daemon is heard and every station the bridge sends passed its
last challenge, on the model in force, in time (docs/lifecycle.md). 0 blocks the line."""
STATUS_CHALLENGE = 1 << 4
"""Bit 4: a challenge run is in progress on one of the bridge's stations."""

U32 = 0xFFFFFFFF


def run_tag(run_id: str) -> int:
    """The 32-bit tag of a daemon run written beside each block (never 0).

    >>> run_tag("6f1c00aa" + "0" * 24)
    1864106154
    """
    return int(run_id[:8], 16) or 1


@dataclass(frozen=True, slots=True)
class Slot:
    seq: int
    cell_id: int
    station: int
    verdict: int
    reason: int


@dataclass(frozen=True, slots=True)
class Block:
    """Up to ``slots`` results of one run, in seq order, handed over in one handshake."""

    run_id: str
    tag: int
    slots: tuple[Slot, ...]
    messages: tuple[VerdictMessage, ...]


def make_block(messages: list[VerdictMessage], stations: dict[str, int]) -> Block:
    """``messages`` must be of one run and in seq order (the caller guarantees it)."""
    slots = tuple(
        Slot(
            seq=m.seq & U32,
            cell_id=m.cell_id & U32,
            station=stations[m.station],
            verdict=VERDICT_CODES[m.verdict],
            reason=REASON_CODES[m.reason],
        )
        for m in messages
    )
    run_id = messages[0].run_id
    return Block(run_id, run_tag(run_id), slots, tuple(messages))


class PlcError(RuntimeError):
    """A handshake step failed; ``code`` names the alarm it raises."""

    def __init__(self, message: str, code: str = "plc_unreachable") -> None:
        super().__init__(message)
        self.code = code


class PlcLink(Protocol):
    """One fieldbus connection to the PLC. Every method raises PlcError on failure."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def write_block(self, block: Block) -> None:
        """Count, run tag and the slots; not the ready flag."""

    async def set_ready(self, ready: bool) -> None: ...  # noqa: FBT001

    async def read_ack(self) -> bool: ...

    async def write_status(self, heartbeat: int, status: int, lost: int) -> None: ...

    async def read_request(self) -> bool:
        """The PLC's challenge request (register or node); only called when configured."""

    async def clear_request(self) -> None:
        """Write the challenge request back to 0 (the daemon took it)."""
