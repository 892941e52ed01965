"""The reject-actuator bridge: a shift register from inspection to the reject station.

Verdicts fill the register, keyed by tracked cell id (``cell_id + offset`` per station). The
line's counter says which cell is at the reject station now (``counter - distance``); that
cell is rejected unless every configured station said OK: an NG, and a cell that has no
verdict by then (lost, late, daemon down), are both rejected. Every decision is reported
on ``reject.<name>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Literal, Protocol

from linevision.bridges.alarms import (
    HEALTH_PERIOD_S,
    BridgeHealth,
    BridgeState,
    RejectReport,
    Reporter,
    publish_health,
)
from linevision.bridges.config import RejectBridgeConfig
from linevision.bridges.plc_link import PlcError
from linevision.bridges.subscriber import Event, Lost, VerdictStream, client_keys
from linevision.bus import SCHEMA, VerdictMessage
from linevision.log import get_logger

log = get_logger(__name__)

VerdictValue = Literal["OK", "NG"]


@dataclass(frozen=True, slots=True)
class RejectDecision:
    cell_id: int
    fire: bool
    reason: Literal["ng", "no_verdict", "ok"]
    verdicts: dict[str, VerdictValue | None]


class CellTracker:
    """Pure shift register: ``record`` verdicts, ``arrive`` cells. No I/O.

    >>> t = CellTracker({"a": 0, "b": 10})
    >>> t.record_verdict("a", 5, "OK"); t.record_verdict("b", -5, "OK")
    >>> t.arrive(5).fire, t.arrive(6).reason
    (False, 'no_verdict')
    """

    def __init__(self, stations: dict[str, int], memory: int = 100_000) -> None:
        self.stations = stations
        self.memory = memory
        self._cells: OrderedDict[int, dict[str, VerdictValue]] = OrderedDict()
        self.dropped = 0

    def record_verdict(self, station: str, cell_id: int, verdict: VerdictValue) -> None:
        if station not in self.stations:
            return
        key = cell_id + self.stations[station]
        got = self._cells.setdefault(key, {})
        if got.get(station) != "NG":
            got[station] = verdict
        while len(self._cells) > self.memory:
            self._cells.popitem(last=False)
            self.dropped += 1

    def arrive(self, cell: int) -> RejectDecision:
        got = self._cells.pop(cell, {})
        verdicts: dict[str, VerdictValue | None] = {s: got.get(s) for s in self.stations}
        if any(v == "NG" for v in verdicts.values()):
            return RejectDecision(cell, fire=True, reason="ng", verdicts=verdicts)
        if any(v is None for v in verdicts.values()):
            return RejectDecision(cell, fire=True, reason="no_verdict", verdicts=verdicts)
        return RejectDecision(cell, fire=False, reason="ok", verdicts=verdicts)

    def __len__(self) -> int:
        return len(self._cells)


class RejectIo(Protocol):
    """The reject station's I/O. Methods raise PlcError on failure."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def read_counter(self) -> int: ...

    async def fire(self, cell_id: int) -> None:
        """Switch the reject output on; it goes off by itself after the pulse."""


class RejectBridge:
    def __init__(self, cfg: RejectBridgeConfig, io: RejectIo, reporter: Reporter) -> None:
        self.cfg = cfg
        self.io = io
        self.reporter = reporter
        self.tracker = CellTracker(cfg.tracking.stations, cfg.memory)
        self.counters: Counter[str] = Counter()
        self.last_cell: int | None = None
        self.last_verdict: tuple[str, int] | None = None
        self.stream_alive: bool | None = None
        self.lost = 0
        self._connected = False
        self._failures = 0

    async def on_event(self, ev: Event) -> None:
        if isinstance(ev, VerdictMessage):
            self.tracker.record_verdict(ev.station, ev.cell_id, ev.verdict)
            self.counters["verdicts"] += 1
            self.last_verdict = (ev.run_id, ev.seq)
        elif isinstance(ev, Lost):
            self.lost += 1 if ev.last_seq is None else ev.last_seq - ev.first_seq + 1
            self.reporter.alarm(
                "verdicts_lost",
                "warning",
                run_id=ev.run_id,
                first_seq=ev.first_seq,
                last_seq=ev.last_seq,
                reason=ev.reason,
                action="cells without a verdict are rejected",
            )
        elif ev.alive:
            self.stream_alive = True
            self.reporter.clear("daemon_down", run_id=ev.run_id)
        else:
            self.stream_alive = False
            self.reporter.raise_once("daemon_down", run_id=ev.run_id)

    def health(self, *, stopping: bool = False) -> BridgeHealth:
        state: BridgeState = "down" if stopping else "connected" if self._connected else "retrying"
        last = self.last_verdict
        return BridgeHealth(
            schema_=SCHEMA,
            bridge=self.cfg.name,
            kind="reject",
            state=state,
            stream_alive=self.stream_alive,
            run_id=None if last is None else last[0],
            last_seq=None if last is None else last[1],
            backlog=0,
            lost=self.lost,
            retries=self.counters["io_errors"],
            active=sorted(self.reporter.active),
            counters={**self.counters, "tracked_cells": len(self.tracker)},
            interval_s=HEALTH_PERIOD_S,
            t_ns=time.time_ns(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        poll_s = self.cfg.tracking.poll_ms / 1000.0
        try:
            while not stop.is_set():
                try:
                    if not self._connected:
                        await self.io.connect()
                        self._connected = True
                        self._failures = 0
                        self.reporter.clear("io_unreachable")
                    counter = await self.io.read_counter()
                    await self.step(counter - self.cfg.tracking.distance)
                except PlcError as exc:
                    await self._failed(exc, stop)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_s)
        finally:
            await self.io.close()

    async def _failed(self, exc: PlcError, stop: asyncio.Event) -> None:
        self._failures += 1
        self.counters["io_errors"] += 1
        self.reporter.raise_once("io_unreachable", error=str(exc))
        if self._connected:
            self._connected = False
            await self.io.close()
        b = self.cfg.backoff
        delay = min(b.max_s, b.min_s * 2 ** (self._failures - 1))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    async def step(self, cell_at_reject: int) -> None:
        """The tracked cell now at the reject station; handles every cell since the last."""
        last = self.last_cell
        if last is None or cell_at_reject < last:
            if last is not None:
                self.reporter.alarm("counter_reset", "warning", previous=last, now=cell_at_reject)
            self.last_cell = cell_at_reject
            await self._arrive(cell_at_reject, in_time=True)
            return
        if cell_at_reject == last:
            return
        for cell in range(last + 1, cell_at_reject + 1):
            await self._arrive(cell, in_time=cell == cell_at_reject)
        self.last_cell = cell_at_reject

    async def _arrive(self, cell: int, *, in_time: bool) -> None:
        d = self.tracker.arrive(cell)
        self.counters[d.reason] += 1
        fired = False
        if d.fire and in_time:
            try:
                await self.io.fire(cell)
                fired = True
                self.counters["fired"] += 1
            except PlcError as exc:
                self.counters["fire_failed"] += 1
                self.reporter.alarm("reject_output_failed", cell_id=cell, error=str(exc))
        elif d.fire:
            self.counters["missed"] += 1
            self.reporter.alarm("missed_reject", cell_id=cell, reason=d.reason)
        self.reporter.reject(
            RejectReport(
                schema_=SCHEMA,
                station=self.cfg.name,
                cell_id=cell,
                action="reject" if d.fire else "pass",
                reason=d.reason,
                verdicts=d.verdicts,
                fired=fired,
                t_ns=time.time_ns(),
            )
        )


async def run_reject_bridge(
    cfg: RejectBridgeConfig, stop: asyncio.Event, io: RejectIo | None = None
) -> RejectBridge:
    if io is None:
        from linevision.bridges.reject_modbus import ModbusRejectIo  # noqa: PLC0415

        io = ModbusRejectIo(cfg)
    reporter = Reporter(cfg.report.publish, cfg.name)
    bridge = RejectBridge(cfg, io, reporter)
    stream = VerdictStream(cfg.source, bridge.on_event, None, client_keys(cfg.source.curve))
    log.info("reject_bridge_started", bridge=cfg.name, distance=cfg.tracking.distance)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stream.run(stop))
            tg.create_task(bridge.run(stop))
            tg.create_task(publish_health(reporter, bridge.health, stop))
    finally:
        reporter.health(bridge.health(stopping=True))
        reporter.close()
        log.info("reject_bridge_stopped", bridge=cfg.name, **dict(bridge.counters))
    return bridge
