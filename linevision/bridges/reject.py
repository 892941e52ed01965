"""The reject-actuator bridge: a shift register from inspection to the reject station.

Verdicts fill the register, keyed by tracked cell id (``cell_id + offset`` per station,
modulo the counter's width). The line's counter says which cell is at the reject station
now (``counter - distance``); that cell is rejected unless every configured station said
OK: an NG, and a cell that has no verdict by then (lost, late, daemon down), are both
rejected. Every decision is reported on ``reject.<name>``.

A counter that jumps (forward by more than ``tracking.max_step``, backward, to 0) breaks the
link between the register and the cells on the line: the register is forgotten and the
``on_jump`` policy covers the cells in flight (docs/plc.md, "Counter jumps"). The daemon's
cameras keep counting, so the bridge then learns the new numbering from the verdicts'
capture times (:mod:`linevision.bridges.reject_sync`), firing every cell until it knows it;
it checks the numbering the same way all along. Each step of the counter costs bounded
work: at most ``max_step`` cells, one alarm, one commit.

The register is kept on disk (:mod:`linevision.bridges.reject_store`), so a restarted
bridge still rejects the NG cells that were in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import replace
from typing import Protocol

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
from linevision.bridges.reject_store import (
    Meta,
    RegisterStore,
    Saved,
    StoreError,
    StoreWriter,
    make_batch,
)
from linevision.bridges.reject_sync import CounterHistory, Learned, Mismatch, NumberingSync
from linevision.bridges.reject_track import (
    CellTracker,
    CounterStep,
    RejectDecision,
    VerdictValue,
    classify,
)
from linevision.bridges.subscriber import Event, Lost, Position, VerdictStream, client_keys
from linevision.bus.wire import SCHEMA, VerdictMessage
from linevision.log import get_logger
from linevision.paths import state_dir
from linevision.types import Backoff

__all__ = ["CellTracker", "RejectBridge", "RejectDecision", "RejectIo", "VerdictValue"]

log = get_logger(__name__)


class RejectIo(Protocol):
    """The reject station's I/O. Methods raise PlcError on failure."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def read_counter(self) -> int: ...

    async def fire(self, cell_id: int) -> None:
        """Switch the reject output on; it goes off by itself after the pulse."""

    async def decide(self, counter: int, *, reject: bool) -> None:
        """Tell the station the decision for the cell the counter value ``counter`` put
        there (``output.decision_register``; a no-op when none is configured)."""

    async def stop_line(self) -> None:
        """Set the output that stops the line (``on_jump.stop``); the PLC or an operator
        clears it once the cells in flight are dealt with."""


class RejectBridge:
    def __init__(
        self,
        cfg: RejectBridgeConfig,
        io: RejectIo,
        reporter: Reporter,
        store: RegisterStore | None = None,
    ) -> None:
        self.cfg = cfg
        self.io = io
        self.reporter = reporter
        self.store = store
        self.modulus = 1 << cfg.tracking.width
        self.tracker = CellTracker(cfg.tracking.stations, cfg.memory, self.modulus)
        self.counters: Counter[str] = Counter()
        self.history = CounterHistory()
        self.sync = NumberingSync(self.modulus, cfg.tracking.phases)
        self.last_counter: int | None = None
        self.window_left = 0
        """Cells still to fire whatever their verdicts (``reject_all`` after a jump)."""
        self.last_verdict: tuple[str, int] | None = None
        self.stream_alive: bool | None = None
        self.lost = 0
        self._connected = False
        self._backoff = Backoff(cfg.backoff.min_s, cfg.backoff.max_s)
        self._flush_handle: asyncio.Handle | None = None
        self._rewrite = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: StoreWriter | None = None
        if store is not None:
            self._restore(store.load())
            self._writer = StoreWriter(store, self._stored_threadsafe)

    @property
    def resume(self) -> Position | None:
        """Where the verdict stream resumes after a restart (the last recorded verdict)."""
        last = self.last_verdict
        return None if last is None else Position(last[0], last[1])

    def _restore(self, saved: Saved) -> None:
        self.tracker.restore(saved.cells)
        meta = saved.meta
        counter, window, valid = meta.get("counter"), meta.get("window_left"), meta.get("valid")
        if isinstance(counter, int):
            self.last_counter = counter % self.modulus
            self.tracker.position = (counter - self.cfg.tracking.distance) % self.modulus
        if isinstance(window, int):
            self.window_left = window
        if isinstance(valid, int):
            self.tracker.valid_from_ns = valid
        shift, learning = meta.get("shift"), meta.get("learning")
        if isinstance(shift, int):
            self.sync.shift = self.tracker.shift = shift % self.modulus
        if learning == 1:
            self.sync.start_learning(self.tracker.valid_from_ns)
        run_id, seq = meta.get("run_id"), meta.get("seq")
        if isinstance(run_id, str) and isinstance(seq, int):
            self.last_verdict = (run_id, seq)
        log.info(
            "reject_state_restored",
            bridge=self.cfg.name,
            cells=len(self.tracker),
            ng_cells=self.tracker.ng_cells,
            counter=self.last_counter,
            window_left=self.window_left,
            shift=self.sync.shift,
            learning=self.sync.learning,
        )

    def _meta(self) -> Meta:
        run_id, seq = self.last_verdict if self.last_verdict is not None else (None, None)
        return {
            "shift": self.sync.shift,
            "learning": int(self.sync.learning),
            "counter": self.last_counter,
            "window_left": self.window_left,
            "valid": self.tracker.valid_from_ns,
            "run_id": run_id,
            "seq": seq,
        }

    def _changed(self) -> None:
        """Commit what changed at the end of this event-loop turn (one transaction)."""
        if self.store is not None and self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Hand what changed to the writer thread (it commits; the loop never waits)."""
        self._flush_handle = None
        if self._writer is None:
            return
        self._loop = asyncio.get_running_loop()
        changes = self.tracker.snapshot() if self._rewrite else self.tracker.take_changes()
        self._rewrite = False
        self._writer.submit(make_batch(changes, self._meta()))

    def close_store(self) -> None:
        """Commit what is queued and stop the writer (at shutdown)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._loop = None

    def _stored_threadsafe(self, error: StoreError | None) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._stored, error)

    def _stored(self, error: StoreError | None) -> None:
        if self._writer is None:
            return
        if error is None:
            self.reporter.clear("state_unwritable")
            return
        self._rewrite = True  # the file missed a batch: write it whole next time
        self.counters["state_errors"] += 1
        self.reporter.raise_once("state_unwritable", error=str(error))
        self._changed()

    async def on_event(self, ev: Event) -> None:
        if isinstance(ev, VerdictMessage):
            self._verdict(ev)
            self.last_verdict = (ev.run_id, ev.seq)
            self._changed()
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

    def _verdict(self, ev: VerdictMessage) -> None:
        t = self.tracker
        offset = t.stations.get(ev.station)
        if offset is None or not self.sync.learning:
            kept = t.record_verdict(ev.station, ev.cell_id, ev.verdict, ev.t_frame_ns)
            self.counters["verdicts" if kept else "verdicts_unused"] += 1
        elif ev.t_frame_ns < t.valid_from_ns:
            t.stale += 1
            self.counters["verdicts_unused"] += 1
        else:
            self.sync.hold(ev.station, ev.cell_id, ev.verdict, ev.t_frame_ns)
            self.counters["verdicts_buffered"] += 1
        if offset is not None:
            self.sync.observe(ev.t_frame_ns, ev.station, (ev.cell_id + offset) % self.modulus)

    def health(self, *, stopping: bool = False) -> BridgeHealth:
        state: BridgeState = "down" if stopping else "connected" if self._connected else "retrying"
        last = self.last_verdict
        t = self.tracker
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
            counters={
                **self.counters,
                "tracked_cells": len(t),
                "tracked_ng": t.ng_cells,
                "late_verdicts": t.late,
                "stale_verdicts": t.stale,
                "dropped_cells": t.dropped,
                "window_left": self.window_left,
                "numbering_shift": self.sync.shift,
                "numbering_learning": int(self.sync.learning),
                "buffered_verdicts": len(self.sync.buffer),
                "state_commits": 0 if self.store is None else self.store.commits,
            },
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
                        self._backoff.reset()
                        self.reporter.clear("io_unreachable")
                    t0 = time.time_ns()
                    value = await self.io.read_counter()
                    await self.step(value, (t0 + time.time_ns()) // 2)
                except PlcError as exc:
                    await self._failed(exc, stop)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_s)
        finally:
            self.flush()
            await self.io.close()

    async def _failed(self, exc: PlcError, stop: asyncio.Event) -> None:
        self.counters["io_errors"] += 1
        self.reporter.raise_once("io_unreachable", error=str(exc))
        if self._connected:
            self._connected = False
            await self.io.close()
        delay = self._backoff.failed()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    async def step(self, counter: int, t_ns: int | None = None) -> None:
        """The counter's value read at wall time ``t_ns`` (default: now): decides the cell at
        the station, handles a jump, checks the numbering."""
        t = self.cfg.tracking
        t_ns = time.time_ns() if t_ns is None else t_ns
        counter %= self.modulus
        cell = (counter - t.distance) % self.modulus
        prev = self.last_counter
        s = None if prev is None else classify(prev, counter, t.width, t.max_step)
        self.history.read(t_ns, counter, single_step=s is not None and s.delta == 1)
        if s is None:
            self.last_counter = counter
            await self._arrive(cell)
        elif s.kind != "still":
            self.last_counter = counter
            if s.kind == "advance":
                self.counters["wraps"] += s.wrapped
                if s.delta > 1:
                    self._skipped(cell - s.delta + 1, s.delta - 1)
                await self._arrive(cell)
            else:
                await self._jump(s, prev or 0, counter, cell, t_ns)
        checked = self.sync.evaluate(self.history)
        if isinstance(checked, Learned):
            self._relearned(checked)
        elif isinstance(checked, Mismatch):
            self._mismatch(checked, t_ns)
        if s is None or s.kind != "still" or checked is not None:
            self._changed()

    def _relearned(self, learned: Learned) -> None:
        """The shift is known again: key the buffered verdicts, stop firing every cell."""
        t = self.tracker
        late, held = t.late, len(self.sync.buffer)
        kept = self.sync.release(t)
        self.counters["numbering_relearned"] += 1
        self.reporter.alarm(
            "numbering_relearned",
            "info",
            shift=learned.shift,
            previous=learned.previous,
            buffered=held,
            kept=kept,
            late=t.late - late,
        )

    def _mismatch(self, m: Mismatch, t_ns: int) -> None:
        """Verdicts no longer match the counter: the numbering changed without a jump."""
        forgotten, ng = self.tracker.resync(self.tracker.position or 0, t_ns)
        self.sync.start_learning(t_ns)
        self.counters["numbering_mismatch"] += 1
        self.reporter.alarm(
            "numbering_mismatch",
            shift=m.shift,
            seen=m.seen,
            forgotten_cells=forgotten,
            forgotten_ng=ng,
            action="every cell is rejected until the numbering is learned again",
        )

    def _skipped(self, first: int, count: int) -> None:
        """Cells that went by between two reads (at most ``max_step - 1``): one alarm."""
        missed = 0
        ng = 0
        for i in range(count):
            d = self._cover(self.tracker.arrive(first + i))
            self.counters[d.reason] += 1
            missed += d.fire
            ng += d.reason == "ng"
            self._report(d, fired=False)
        if missed:
            self.counters["missed"] += missed
            self.reporter.alarm(
                "missed_reject",
                count=missed,
                ng=ng,
                first_cell=first % self.modulus,
                last_cell=(first + count - 1) % self.modulus,
                reason="the counter moved more than one cell between two reads",
            )

    async def _jump(self, s: CounterStep, prev: int, counter: int, cell: int, t_ns: int) -> None:
        """The register no longer matches the line: forget it, cover the cells in flight,
        learn the numbering again (every cell fires until then)."""
        forgotten, ng = self.tracker.resync(cell, t_ns)
        self.sync.start_learning(t_ns)
        self.counters[f"counter_{s.kind}"] += 1
        policy = self.cfg.on_jump.policy
        window = self.cfg.jump_window()
        if policy == "stop_line":
            try:
                await self.io.stop_line()
                window = 0
                self.counters["line_stops"] += 1
            except PlcError as exc:
                self.counters["stop_failed"] += 1
                self.reporter.alarm("stop_line_failed", error=str(exc), action="reject_all")
        self.window_left = window
        self.reporter.alarm(
            "counter_jump",
            kind=s.kind,
            from_counter=prev,
            to_counter=counter,
            delta=s.delta,
            forgotten_cells=forgotten,
            forgotten_ng=ng,
            policy="stop_line" if policy == "stop_line" and window == 0 else "reject_all",
            count=window,
            first_cell=cell,
            last_cell=(cell + window - 1) % self.modulus if window else None,
        )
        await self._arrive(cell)

    def _cover(self, d: RejectDecision) -> RejectDecision:
        """Fire in the window after a jump, and for as long as the numbering is unknown."""
        if self.window_left > 0:
            self.window_left -= 1
        elif not self.sync.learning:
            return d
        return d if d.reason == "ng" else replace(d, fire=True, reason="counter_jump")

    async def _arrive(self, cell: int) -> None:
        d = self._cover(self.tracker.arrive(cell))
        self.counters[d.reason] += 1
        fired, counter = False, (cell + self.cfg.tracking.distance) % self.modulus
        try:  # the handshake first (docs/plc.md, the reject interlock)
            await self.io.decide(counter, reject=d.fire)
            self.reporter.clear("decision_unwritten")
        except PlcError as exc:
            self.counters["decision_failed"] += 1
            self.reporter.raise_once("decision_unwritten", cell_id=d.cell_id, error=str(exc))
        if d.fire:
            try:
                await self.io.fire(d.cell_id)
                fired = True
                self.counters["fired"] += 1
            except PlcError as exc:
                self.counters["fire_failed"] += 1
                self.reporter.alarm("reject_output_failed", cell_id=d.cell_id, error=str(exc))
        self._report(d, fired=fired)

    def _report(self, d: RejectDecision, *, fired: bool) -> None:
        self.reporter.reject(
            RejectReport(
                schema_=SCHEMA,
                station=self.cfg.name,
                cell_id=d.cell_id,
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
    path = cfg.state_file or state_dir() / f"reject-{cfg.name}.db"
    store = RegisterStore(path)
    reporter = Reporter(cfg.report.publish, cfg.name)
    bridge = RejectBridge(cfg, io, reporter, store)
    stream = VerdictStream(
        cfg.source, bridge.on_event, bridge.resume, client_keys(cfg.source.curve)
    )
    log.info(
        "reject_bridge_started",
        bridge=cfg.name,
        distance=cfg.tracking.distance,
        state_file=str(path),
        resume=str(bridge.resume),
    )
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stream.run(stop))
            tg.create_task(bridge.run(stop))
            tg.create_task(publish_health(reporter, bridge.health, stop))
    finally:
        bridge.flush()
        bridge.close_store()
        store.close()
        reporter.health(bridge.health(stopping=True))
        reporter.close()
        log.info("reject_bridge_stopped", bridge=cfg.name, **dict(bridge.counters))
    return bridge
