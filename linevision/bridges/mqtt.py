"""The MQTT bridge: every verdict of the line into the plant's broker, store-and-forward.

Three parts, one event loop:

- the *reader* is the gapless verdict stream (``subscriber.VerdictStream``, the PLC bridge's):
  each verdict, lost range and a shift's final yield goes into a pending batch, which the
  writer commits to the outbox (``mqtt_store``) with the stream position and the tallies. It
  reads whether the broker is up or not: the daemon's journal is bounded, the outbox is not
  (up to ``store.max_entries``);
- the *sender* (``mqtt_sender``) publishes outbox rows in order, at most ``window``
  unacknowledged, and moves the acknowledged position on PUBACK only; after a lost
  connection or a restart it sends again from there: duplicates, never gaps; consumers
  drop them on ``(run_id, seq)``;
- the *ticker* publishes the line state, alarms and yields (retained, not stored: the last
  one is the one that matters) and the bridge's health on the bus and on MQTT.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from linevision.bridges.alarms import HEALTH_PERIOD_S, BridgeHealth, Reporter, publish_health
from linevision.bridges.mqtt_alarms import AlarmBoard
from linevision.bridges.mqtt_config import MqttBridgeConfig
from linevision.bridges.mqtt_link import (
    read_secret,
    tls_context,
)
from linevision.bridges.mqtt_messages import Identity, Tree
from linevision.bridges.mqtt_reports import watch_reports
from linevision.bridges.mqtt_sender import Sender
from linevision.bridges.mqtt_store import Append, NewRow, Outbox
from linevision.bridges.mqtt_wire import Status
from linevision.bridges.mqtt_yield import ShiftTally
from linevision.bridges.subscriber import (
    Event,
    Liveness,
    Lost,
    Position,
    VerdictStream,
    client_keys,
)
from linevision.bus.wire import SCHEMA, HeartbeatMessage, VerdictMessage
from linevision.log import get_logger
from linevision.paths import state_dir

log = get_logger(__name__)

T = TypeVar("T")
PENDING_MAX = 20_000
"""Rows waiting for the writer before the reader waits (the SUB socket queues meanwhile)."""


class MqttBridge:
    def __init__(
        self, cfg: MqttBridgeConfig, store: Outbox, reporter: Reporter, password: str | None
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.reporter = reporter
        self.password = password
        self.tree = Tree(cfg.topic_prefix, cfg.site, cfg.line, cfg.name)
        self.counters: Counter[str] = Counter()
        self.stream_counters: Counter[str] = Counter()
        self.identity = Identity()
        """Restored from the outbox: the Will of the first connection names the last run."""
        self.daemon_alive: bool | None = None
        self.lost = 0
        self.board = AlarmBoard(cfg.name, cfg.yields.min_yield, time.time_ns())
        self._io = ThreadPoolExecutor(1, thread_name_prefix="mqtt-store")
        meta = store.meta()
        self.identity = Identity.restore(meta.get("identity"))
        self.resume = _position(meta.get("read_run"), meta.get("read_seq"))
        revisions = {
            str(k)[6:]: int(v or 0) for k, v in meta.items() if str(k).startswith("final.")
        }
        current = meta.get("shift")
        self.tally = ShiftTally(
            cfg.yields.shifts,
            store.tally(),
            current if isinstance(current, str) else None,
            revisions,
        )
        self._rows: list[NewRow] = []
        self._deltas: Counter[tuple[str, str, str]] = Counter()
        self._meta: dict[str, int | str | None] = {}
        self._pending = asyncio.Event()
        self._drained = asyncio.Event()
        self._identity_saved = self.identity.key()
        self.state_sent: tuple[str, str] | None = None
        self.alarms_sent: dict[str | None, tuple[object, ...]] = {}
        acked = _position(meta.get("acked_run"), meta.get("acked_seq"))
        self.sender = Sender(self, int(meta.get("acked_pos") or 0), acked, store.last_pos())

    async def run_io(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the store's one thread (SQLite never blocks the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    # ---- the reader ---------------------------------------------------------------------

    async def on_event(self, ev: Event) -> None:
        """The verdict stream's sink: into the pending batch, in stream order."""
        if isinstance(ev, VerdictMessage):
            self._verdict(ev)
        elif isinstance(ev, Lost):
            self._lost(ev)
        elif isinstance(ev, Liveness):
            self.daemon_alive = self.board.daemon_alive = ev.alive
            if ev.alive:
                self.reporter.clear("daemon_down", run_id=ev.run_id)
            else:
                self.reporter.raise_once("daemon_down", run_id=ev.run_id)
            self.sender.wake.set()
        if len(self._rows) >= PENDING_MAX:
            self._drained.clear()
            await self._drained.wait()

    def on_heartbeat(self, hb: HeartbeatMessage) -> None:
        self.identity.from_heartbeat(hb)
        self._keep_identity()
        self.board.heartbeat(hb)
        self.sender.wake.set()

    def _verdict(self, v: VerdictMessage) -> None:
        self._meta.update(read_run=v.run_id, read_seq=v.seq)
        if self.cfg.stations is not None and v.station not in self.cfg.stations:
            self.counters["other_station"] += 1
            self._pending.set()
            return
        self.identity.from_verdict(v)
        self._keep_identity()
        key, ended = self.tally.add(v.station, v.verdict, v.reason, v.t_frame_ns)
        for shift in ended:
            self._finals(shift)
        self._deltas[key] += 1
        self._meta["shift"] = self.tally.current
        self.board.verdict(v.station, v.verdict, v.reason, time.time_ns())
        topic = self.tree.topic("verdict", v.station)
        self._rows.append(NewRow(topic, self.tree.verdict(v), run_id=v.run_id, seq=v.seq))
        self.counters["read"] += 1
        self._pending.set()

    def _keep_identity(self) -> None:
        key = self.identity.key()
        if key != self._identity_saved:
            self._identity_saved = self._meta["identity"] = key
            self._pending.set()

    def _lost(self, ev: Lost) -> None:
        n = 1 if ev.last_seq is None else ev.last_seq - ev.first_seq + 1
        self.lost += n
        detail: dict[str, object] = {
            "run_id": ev.run_id,
            "first_seq": ev.first_seq,
            "last_seq": ev.last_seq,
            "reason": ev.reason,
        }
        self.reporter.alarm("verdicts_lost", "error", **detail, lost_total=self.lost)
        self.board.event(self.cfg.name, "verdicts_lost", detail, time.time_ns())
        payload = self.tree.lost(ev.run_id, ev.first_seq, ev.last_seq, ev.reason)
        self._rows.append(NewRow(self.tree.topic("lost"), payload))
        self._pending.set()

    def _finals(self, shift: str) -> None:
        """The closing figures of ``shift``, one per station, into the outbox."""
        rev = self.tally.finalised(shift)
        self._meta[f"final.{shift}"] = rev
        for station, counts in sorted(self.tally.stations(shift).items()):
            payload = self.tree.yield_report(station, shift, counts, final=True, revision=rev)
            self._rows.append(NewRow(self.tree.topic("yield", station), payload))
        self.counters["finals"] += 1
        self._pending.set()

    async def writer(self, stop: asyncio.Event) -> None:
        """Commit the pending batch, as often as the disk allows; flush on stop."""
        while True:
            if not self._rows and not self._meta and not self._deltas:
                self._drained.set()
                if stop.is_set():
                    return
                self._pending.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._pending.wait(), 0.2)
                continue
            batch = Append(self._rows, dict(self._deltas), self._meta)
            self._rows, self._deltas, self._meta = [], Counter(), {}
            self._drained.set()
            self.sender.committed = await self.run_io(self.store.append, batch)
            self.counters["commits"] += 1
            self.sender.wake.set()

    async def prune(self) -> None:
        """Drop what is past ``resend_s``; rows the full outbox dropped are reported lost."""
        cutoff = time.time_ns() - int(self.cfg.store.resend_s * 1e9)
        dropped = await self.run_io(self.store.prune, cutoff, self.tally.keep())
        if dropped.count:
            self.counters["dropped_full"] += dropped.count
            self.lost += len(dropped.verdicts)
            runs: dict[str, list[int]] = {}
            for run_id, seq in dropped.verdicts:
                runs.setdefault(run_id, []).append(seq)
            for run_id, seqs in runs.items():
                self._lost(Lost(run_id, min(seqs), max(seqs), "outbox_full"))

    # ---- the ticker ---------------------------------------------------------------------

    def status(self) -> Status:
        if self.daemon_alive is None:
            return "starting"
        return "running" if self.daemon_alive else "daemon_down"

    def publish_state(self) -> None:
        now = (self.status(), self.identity.key())
        if now != self.state_sent and self.sender.publish_live(
            self.tree.topic("state"), self.tree.state(self.identity, self.status())
        ):
            self.state_sent = now

    def publish_alarms(self, *, force: bool = False) -> None:
        now = time.time_ns()
        scopes: dict[str | None, list[Any]] = {None: self.board.line(now)}
        current = self.tally.current
        for station in sorted(
            set(self.identity.stations) | set(self.tally.stations(current or ""))
        ):
            counts = self.tally.stations(current or "").get(station, Counter())
            scopes[station] = self.board.station(station, counts, now)
        for scope, conditions in scopes.items():
            active = self.board.stamp(scope, conditions, now)
            key = tuple(sorted((a["source"], a["alarm"], a["severity"]) for a in active))
            if (force or self.alarms_sent.get(scope) != key) and self.sender.publish_live(
                self.tree.topic("alarm", scope), self.tree.alarms(scope, active)
            ):
                self.alarms_sent[scope] = key

    def publish_yields(self) -> bool:
        """Every station's figures for the current shift; False if any was not sent."""
        shift = self.tally.current
        if shift is None:
            return True
        counts = self.tally.stations(shift)
        sent = True
        for station in sorted(set(counts) | set(self.identity.stations)):
            payload = self.tree.yield_report(
                station, shift, counts.get(station, Counter()), final=False
            )
            sent = self.sender.publish_live(self.tree.topic("yield", station), payload) and sent
        return sent

    async def ticker(self, stop: asyncio.Event) -> None:
        next_yield = next_health = 0.0
        while not stop.is_set():
            now = time.monotonic()
            for shift in self.tally.tick(time.time_ns()):
                self._finals(shift)
                self._meta["shift"] = self.tally.current
            self.publish_alarms()
            if now >= next_yield and self.publish_yields():
                next_yield = now + self.cfg.yields.period_s
            if now >= next_health and self.sender.publish_live(
                self.tree.topic("health"),
                self.tree.health(self.mqtt_health()),
                retain=False,
                qos=0,
                expiry_s=max(1, round(3 * self.cfg.health_period_s)),
            ):
                next_health = now + self.cfg.health_period_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    # ---- health -------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        return max(0, self.sender.committed - self.sender.acked_pos) + len(self._rows)

    def mqtt_health(self) -> dict[str, object]:
        acked = self.sender.acked
        return {
            "daemon_alive": self.daemon_alive,
            "backlog": self.backlog,
            "acked_run_id": None if acked is None else acked.run_id,
            "acked_seq": None if acked is None else acked.seq,
            "lost": self.lost,
            "counters": dict(self.counters),
        }

    def health(self, *, stopping: bool = False) -> BridgeHealth:
        up = self.sender.up
        acked = self.sender.acked
        return BridgeHealth(
            schema_=SCHEMA,
            bridge=self.cfg.name,
            kind="mqtt",
            state="down" if stopping else "connected" if up else "retrying",
            stream_alive=self.daemon_alive,
            run_id=None if acked is None else acked.run_id,
            last_seq=None if acked is None else acked.seq,
            backlog=self.backlog,
            lost=self.lost,
            retries=self.counters["retries"],
            active=sorted(self.reporter.active),
            counters=dict(self.counters),
            interval_s=HEALTH_PERIOD_S,
            t_ns=time.time_ns(),
        )

    def close(self) -> None:
        self._io.shutdown(wait=True)
        self.store.close()


def _position(run_id: object, seq: object) -> Position | None:
    if isinstance(run_id, str) and isinstance(seq, int):
        return Position(run_id, seq)
    return None


async def run_mqtt_bridge(cfg: MqttBridgeConfig, stop: asyncio.Event) -> MqttBridge:
    """Run until ``stop`` is set; returns the bridge (its counters) for callers and tests."""
    password = None if cfg.broker.password_file is None else read_secret(cfg.broker.password_file)
    tls_context(cfg.broker)  # a missing or bad CA or client pair stops the start, naming the file
    path = cfg.store.path or state_dir() / f"mqtt-{cfg.name}.db"
    reporter = Reporter(cfg.report.publish, cfg.name)
    try:
        bridge = MqttBridge(cfg, Outbox(path, cfg.store.max_entries), reporter, password)
    except BaseException:
        reporter.close()
        raise
    stream = VerdictStream(
        cfg.source,
        bridge.on_event,
        bridge.resume,
        client_keys(cfg.source.curve),
        bridge.on_heartbeat,
        from_run_start=True,  # a new bridge sends the current run from its start
    )
    bridge.stream_counters = stream.counters
    log.info(
        "mqtt_bridge_started",
        bridge=cfg.name,
        store=str(path),
        resume=str(bridge.resume),
        acked_pos=bridge.sender.acked_pos,
    )
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(stream.run(stop))
            tg.create_task(bridge.writer(stop))
            tg.create_task(bridge.sender.connection(stop))
            tg.create_task(bridge.sender.acker(stop))
            tg.create_task(bridge.ticker(stop))
            tg.create_task(publish_health(reporter, bridge.health, stop))
            for endpoint in cfg.alarms_from:
                bridge.board.watch(endpoint)
                tg.create_task(watch_reports(endpoint, bridge.board, stop))
    finally:
        reporter.health(bridge.health(stopping=True))
        reporter.close()
        bridge.close()
        log.info(
            "mqtt_bridge_stopped",
            bridge=cfg.name,
            position=str(bridge.sender.acked),
            unacked=bridge.backlog,
            lost=bridge.lost,
            **dict(bridge.counters),
            **{f"stream_{k}": v for k, v in stream.counters.items()},
        )
    return bridge
