"""The PLC bridge: verdicts, in order, through a ready/ack handshake (docs/plc.md).

A block of results stays at the head of the queue until the PLC has acknowledged it: an
unreachable or slow PLC delays delivery (with back-off, counts and alarms) but never
reorders or drops a verdict. A retried block may be one the PLC already took; the PLC
recognises it by ``(run tag, seq)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque

from linevision.bridges.alarms import (
    HEALTH_PERIOD_S,
    BridgeHealth,
    BridgeState,
    Reporter,
    publish_health,
)
from linevision.bridges.config import PlcBridgeConfig, PlcTarget
from linevision.bridges.control_client import ControlRequestError, control_request
from linevision.bridges.plc_link import (
    STATUS_BACKLOG,
    STATUS_CHALLENGE,
    STATUS_LOST,
    STATUS_STREAM_ALIVE,
    STATUS_VERIFIED,
    U32,
    Block,
    PlcError,
    PlcLink,
    make_block,
)
from linevision.bridges.subscriber import (
    Event,
    Liveness,
    Lost,
    Position,
    VerdictStream,
    client_keys,
    load_position,
    save_position,
)
from linevision.bus.wire import SCHEMA, HeartbeatMessage, VerdictMessage
from linevision.log import get_logger
from linevision.types import Backoff

log = get_logger(__name__)


def make_link(target: PlcTarget) -> PlcLink:
    if target.kind == "modbus":
        from linevision.bridges.plc_modbus import ModbusLink  # noqa: PLC0415

        return ModbusLink(target)
    if target.kind == "s7":
        from linevision.bridges.plc_s7 import S7Link  # noqa: PLC0415

        return S7Link(target)
    from linevision.bridges.plc_opcua import OpcUaLink  # noqa: PLC0415

    return OpcUaLink(target)


def slots_of(target: PlcTarget) -> int:
    return target.slots if target.kind == "opcua" else target.map.slots


class PlcBridge:
    def __init__(self, cfg: PlcBridgeConfig, link: PlcLink, reporter: Reporter) -> None:
        self.cfg = cfg
        self.link = link
        self.reporter = reporter
        self.position: Position | None = None
        self.counters: Counter[str] = Counter()
        self.latencies_ms: deque[float] = deque(maxlen=200_000)
        """Verdict published -> ready set in the PLC, per delivered verdict."""
        self.lost = 0
        self.stream_alive = False
        self.stream_counters: Counter[str] = Counter()
        self._status_backoff = Backoff(cfg.backoff.min_s, cfg.backoff.max_s)
        self._ready_unknown = True
        """Ready may still be set from a failed handshake: clear it (and see Ack clear) first."""
        self._pending: deque[VerdictMessage] = deque()
        self._wake = asyncio.Event()
        self._connected = False
        self._heartbeat = 0
        self._status_due = 0.0
        self._slots = slots_of(cfg.plc)
        self.verified = False
        """Every station of the bridge verified by its challenge (the last heartbeat's)."""
        self.challenge_running = False

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def health(self, *, stopping: bool = False) -> BridgeHealth:
        state: BridgeState = "down" if stopping else "connected" if self._connected else "retrying"
        pos = self.position
        return BridgeHealth(
            schema_=SCHEMA,
            bridge=self.cfg.name,
            kind="plc",
            state=state,
            stream_alive=self.stream_alive,
            run_id=None if pos is None else pos.run_id,
            last_seq=None if pos is None else pos.seq,
            backlog=len(self._pending),
            lost=self.lost,
            retries=self.counters["retries"],
            active=sorted(self.reporter.active),
            counters=dict(self.counters),
            interval_s=HEALTH_PERIOD_S,
            t_ns=time.time_ns(),
        )

    async def on_event(self, ev: Event) -> None:
        """The verdict stream's sink: never blocks."""
        if isinstance(ev, VerdictMessage):
            if ev.station in self.cfg.stations:
                self._pending.append(ev)
                self._wake.set()
            else:
                self.counters["other_station"] += 1
        elif isinstance(ev, Lost):
            n = 1 if ev.last_seq is None else ev.last_seq - ev.first_seq + 1
            self.lost += n
            self.reporter.alarm(
                "verdicts_lost",
                run_id=ev.run_id,
                first_seq=ev.first_seq,
                last_seq=ev.last_seq,
                reason=ev.reason,
                lost_total=self.lost,
            )
            self._status_due = 0.0
            self._wake.set()
        elif isinstance(ev, Liveness):
            self.stream_alive = ev.alive
            if ev.alive:
                self.reporter.clear("daemon_down", run_id=ev.run_id)
            else:
                self.reporter.raise_once("daemon_down", run_id=ev.run_id)
            self._status_due = 0.0
            self._wake.set()

    def on_heartbeat(self, msg: HeartbeatMessage) -> None:
        """The daemon's per-station ``verified``: the "vision verified" status bit."""
        fields = [msg.stations.get(name, {}) for name in self.cfg.stations]
        verified = all(f.get("verified") is True for f in fields)
        running = any(f.get("challenge_running") is True for f in fields)
        if (verified, running) == (self.verified, self.challenge_running):
            return
        if verified != self.verified:
            log.info("vision_verified" if verified else "vision_not_verified", bridge=self.cfg.name)
        self.verified, self.challenge_running = verified, running
        self._status_due = 0.0
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                if self._pending:
                    await self._deliver(self._next_block(), stop)
                elif time.monotonic() >= self._status_due:
                    await self._status(stop)
                else:
                    self._wake.clear()
                    wait = max(0.0, self._status_due - time.monotonic())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            await self.link.close()

    def _next_block(self) -> Block:
        first = self._pending[0]
        msgs = [first]
        for m in self._pending:
            if m is first:
                continue
            if len(msgs) >= self._slots or m.run_id != first.run_id:
                break
            msgs.append(m)
        return make_block(msgs, self.cfg.stations)

    def _status_word(self) -> int:
        word = STATUS_STREAM_ALIVE if self.stream_alive else 0
        if self.lost:
            word |= STATUS_LOST
        if len(self._pending) > self._slots:
            word |= STATUS_BACKLOG
        if self.stream_alive and self.verified:
            word |= STATUS_VERIFIED
        if self.stream_alive and self.challenge_running:
            word |= STATUS_CHALLENGE
        return word

    async def _status(self, stop: asyncio.Event) -> None:
        self._heartbeat = (self._heartbeat + 1) & 0xFFFF
        try:
            await self._ensure_connected()
            await self.link.write_status(self._heartbeat, self._status_word(), self.lost & U32)
            await self._challenge_request()
        except PlcError as exc:
            await self._failed(exc, self._status_backoff, stop)
            return
        self._status_backoff.reset()
        self._status_due = time.monotonic() + self.cfg.heartbeat_s

    async def _challenge_request(self) -> None:
        """The PLC asks for a challenge: pass it to the daemon, then clear the request.

        A request the daemon cannot take stays set (and ``challenge_request_failed`` active):
        it is passed on again at the next status write.
        """
        link = self.cfg.challenge
        if link is None or self.cfg.challenge_request() is None:
            return
        if not await self.link.read_request():
            return
        self.counters["challenge_requests"] += 1
        body: dict[str, object] = {
            "cmd": "challenge.run",
            "trigger": "plc",
            "user": f"plc:{self.cfg.name}",
        }
        try:
            reply = await control_request(link.control, body, link.timeout_s)
        except ControlRequestError as exc:
            self.counters["challenge_requests_failed"] += 1
            self.reporter.raise_once("challenge_request_failed", error=str(exc))
            return
        await self.link.clear_request()
        self.reporter.clear("challenge_request_failed")
        log.info("challenge_requested", bridge=self.cfg.name, runs=reply.get("runs"))

    async def _ensure_connected(self) -> None:
        if self._connected:
            return
        await self.link.connect()
        self._connected = True
        self.counters["connects"] += 1
        log.info("plc_connected", bridge=self.cfg.name)
        for code in ("plc_unreachable", "plc_untrusted", "plc_auth_refused", "plc_security"):
            self.reporter.clear(code)

    async def _deliver(self, first: Block, stop: asyncio.Event) -> None:
        backoff = Backoff(self.cfg.backoff.min_s, self.cfg.backoff.max_s)
        block = first
        while not stop.is_set():
            try:
                await self._ensure_connected()
                t_ready_ns = await self._handshake(block)
            except PlcError as exc:
                await self._failed(exc, backoff, stop)
                block = self._next_block()
                continue
            self._delivered(block, t_ready_ns, backoff.failures)
            return

    async def _failed(self, exc: PlcError, backoff: Backoff, stop: asyncio.Event) -> None:
        self.counters[exc.code] += 1
        self.counters["retries"] += 1
        self.reporter.raise_once(
            exc.code, error=str(exc), backlog=len(self._pending), count=self.counters[exc.code]
        )
        if self._connected:
            self._connected = False
            await self.link.close()
        delay = backoff.failed()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    async def _handshake(self, block: Block) -> int:
        hs = self.cfg.handshake
        if self._ready_unknown or await self.link.read_ack():
            await self.link.set_ready(False)
            await self._wait_ack(value=False, timeout_ms=hs.clear_timeout_ms, code="plc_not_idle")
        self._ready_unknown = True
        await self.link.write_block(block)
        await self.link.set_ready(True)
        t_ready_ns = time.time_ns()
        await self._wait_ack(value=True, timeout_ms=hs.ack_timeout_ms, code="plc_ack_timeout")
        await self.link.set_ready(False)
        self._ready_unknown = False
        return t_ready_ns

    async def _wait_ack(self, *, value: bool, timeout_ms: float, code: str) -> None:
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            if await self.link.read_ack() == value:
                return
            if time.monotonic() >= deadline:
                msg = f"PLC ack did not become {int(value)} within {timeout_ms:g} ms"
                raise PlcError(msg, code)
            await asyncio.sleep(self.cfg.handshake.poll_ms / 1000.0)

    def _delivered(self, block: Block, t_ready_ns: int, attempt: int) -> None:
        for _ in block.messages:
            self._pending.popleft()
        late = 0
        for m in block.messages:
            ms = (t_ready_ns - m.t_publish_ns) / 1e6
            self.latencies_ms.append(ms)
            late += ms > self.cfg.handshake.late_after_ms
        self.counters["delivered"] += len(block.messages)
        self.counters["blocks"] += 1
        if late:
            self.counters["late"] += late
            self.reporter.raise_once("late_delivery", late=late, backlog=len(self._pending))
        else:
            self.reporter.clear("late_delivery")
        for code in ("plc_ack_timeout", "plc_not_idle"):
            self.reporter.clear(code, attempts=attempt)
        last = block.messages[-1]
        self.position = Position(last.run_id, last.seq)
        if self.cfg.state_file is not None:
            save_position(self.cfg.state_file, self.position)


async def run_plc_bridge(
    cfg: PlcBridgeConfig, stop: asyncio.Event, link: PlcLink | None = None
) -> PlcBridge:
    """Run until ``stop`` is set; returns the bridge (its counters) for callers and tests."""
    reporter = Reporter(cfg.report.publish, cfg.name)
    bridge = PlcBridge(cfg, link if link is not None else make_link(cfg.plc), reporter)
    resume = load_position(cfg.state_file)
    stream = VerdictStream(
        cfg.source,
        bridge.on_event,
        resume,
        client_keys(cfg.source.curve),
        on_heartbeat=bridge.on_heartbeat,
    )
    bridge.stream_counters = stream.counters
    log.info("plc_bridge_started", bridge=cfg.name, plc=cfg.plc.kind, resume=str(resume))
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stream.run(stop))
            tg.create_task(bridge.run(stop))
            tg.create_task(publish_health(reporter, bridge.health, stop))
    finally:
        reporter.health(bridge.health(stopping=True))
        reporter.close()
        log.info(
            "plc_bridge_stopped",
            bridge=cfg.name,
            position=str(bridge.position),
            backlog=bridge.backlog,
            lost=bridge.lost,
            **dict(bridge.counters),
            **{f"stream_{k}": v for k, v in stream.counters.items()},
        )
    return bridge
