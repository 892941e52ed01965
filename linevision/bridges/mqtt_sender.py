"""The MQTT bridge's sender: outbox rows to the broker in order, a window of them in flight.

Each PUBACK marks its row; the acknowledged position moves over the acknowledged prefix only
and is committed every 50 ms. A lost connection, a refused message or a restart sends again
from there, and after an unexpected loss also the rows acknowledged in the last
``store.resend_s`` (a broker may acknowledge before it has persisted): duplicates, never gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from linevision.bridges.mqtt_link import BrokerConfigError, Link, LinkError
from linevision.bridges.mqtt_store import Row
from linevision.bridges.subscriber import Position
from linevision.log import get_logger
from linevision.types import Backoff

if TYPE_CHECKING:
    from linevision.bridges.mqtt import MqttBridge

log = get_logger(__name__)

PAGE = 500
ACK_COMMIT_S = 0.05
PRUNE_S = 5.0
RESERVED_INFLIGHT = 8
"""Receive Maximum kept free for the retained state, alarm and yield messages (at most half
of it)."""
STOP_DRAIN_S = 3.0
REFRESH_AFTER_S = 0.5
"""The Will carries the line's identity: when it changes, reconnect (not sooner than this
after connecting) so that the broker holds a Will that names the current run."""
BROKER_ALARMS = (
    "broker_unreachable",
    "broker_untrusted",
    "broker_tls",
    "broker_refused",
    "broker_auth_refused",
    "broker_config",
)


@dataclass
class _InFlight:
    row: Row
    mid: int
    acked: bool = False


class Sender:
    def __init__(
        self, bridge: MqttBridge, acked_pos: int, acked: Position | None, committed: int
    ) -> None:
        self.b = bridge
        self.acked_pos = acked_pos
        """Every outbox row up to here has been acknowledged by the broker."""
        self.acked = acked
        """The last verdict among them."""
        self.committed = committed
        """The last outbox row committed by the writer."""
        self.wake = asyncio.Event()
        self.link: Link | None = None
        self._gen = 0
        self._cursor = 0
        self._page: deque[Row] = deque()
        self._inflight: deque[_InFlight] = deque()
        self._by_mid: dict[int, _InFlight] = {}
        self._live_mids: set[int] = set()
        self._live_inflight = 0
        self._refused = False
        self._ack_dirty = False
        self._will_key = ""
        self._connected_at = 0.0

    @property
    def up(self) -> bool:
        return self.link is not None and self.link.up

    async def connection(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.b.cfg.backoff.min_s, self.b.cfg.backoff.max_s)
        unexpected = True
        """After a restart or a lost connection the broker may have lost what it acked."""
        # the first Will should name the run: wait a little for the daemon (or a saved run)
        deadline = time.monotonic() + self.b.cfg.source.heartbeat_timeout_s
        while self.b.identity.run_id is None and not stop.is_set():
            if (left := deadline - time.monotonic()) <= 0:
                break
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), left)
        while not stop.is_set():
            self._will_key = self.b.identity.key()
            will = (
                self.b.tree.topic("state"),
                self.b.tree.state(self.b.identity, "offline", "bridge_lost"),
            )
            gen = self._gen = self._gen + 1
            try:
                link = Link(
                    self.b.cfg.broker,
                    self.b.cfg.client_id,
                    self.b.password,
                    will,
                    on_ack=functools.partial(self._acked, gen),
                    on_lost=lambda _why: self.wake.set(),
                )
                await link.open()
            except (LinkError, BrokerConfigError) as exc:
                code = exc.code if isinstance(exc, LinkError) else "broker_config"
                self.b.counters["connect_failures"] += 1
                self.b.counters["retries"] += 1
                self.b.reporter.raise_once(code, error=str(exc), backlog=self.b.backlog)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.failed())
                continue
            backoff.reset()
            for code in BROKER_ALARMS:
                self.b.reporter.clear(code)
            ended = await self._connected(link, stop, resend=unexpected)
            unexpected = ended != "refresh"
            await link.close()
            self.link = None
            log.info("mqtt_disconnected", bridge=self.b.cfg.name, why=ended, backlog=self.b.backlog)
            if ended in ("lost", "refused"):
                self.b.counters["retries"] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.failed())

    async def _connected(self, link: Link, stop: asyncio.Event, *, resend: bool) -> str:
        self.link = link
        self.b.counters["connects"] += 1
        self._connected_at = time.monotonic()
        self._inflight.clear()
        self._by_mid.clear()
        self._live_mids.clear()
        self._live_inflight = 0
        self._page.clear()
        self._refused = False
        first = await self.b.run_io(self.b.store.first_kept) if resend else None
        start = self.acked_pos + 1 if first is None else min(first, self.acked_pos + 1)
        self._cursor = start - 1
        if resend and start <= self.acked_pos:
            self.b.counters["resent_window"] += self.acked_pos - start + 1
        receive_max = link.receive_maximum
        window = max(
            1, min(self.b.cfg.window, receive_max - min(RESERVED_INFLIGHT, receive_max // 2))
        )
        log.info(
            "mqtt_connected",
            bridge=self.b.cfg.name,
            broker=f"{self.b.cfg.broker.host}:{self.b.cfg.broker.effective_port}",
            window=window,
            resend_from=start,
            backlog=self.b.backlog,
        )
        self.b.state_sent = None
        self.b.alarms_sent.clear()
        self.b.publish_state()
        self.b.publish_alarms(force=True)
        self.b.publish_yields()
        while True:
            if stop.is_set():
                await self._stop_gracefully(link)
                return "stop"
            if not link.up:
                return "lost"
            if self._refused:
                return "refused"
            self.b.publish_state()
            if (
                self.b.identity.key() != self._will_key
                and time.monotonic() - self._connected_at > REFRESH_AFTER_S
            ):
                self.b.counters["will_refresh"] += 1
                return "refresh"
            try:
                await self._fill(link, window)
            except LinkError:
                return "lost"
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.5)

    async def _fill(self, link: Link, window: int) -> None:
        while len(self._inflight) < window and link.up:
            row = await self._next_row()
            if row is None or not link.up:
                return
            user = None
            if row.run_id is not None and row.seq is not None:
                user = [
                    ("run_id", row.run_id),
                    ("seq", str(row.seq)),
                    ("t_mqtt_ns", str(time.time_ns())),
                ]
            mid = link.publish(row.topic, row.payload, retain=row.retain, user=user)
            entry = _InFlight(row, mid)
            self._inflight.append(entry)
            self._by_mid[mid] = entry
            self._cursor = row.pos
            self.b.counters["published"] += 1

    async def _next_row(self) -> Row | None:
        while self._page and self._page[0].pos <= self._cursor:
            self._page.popleft()
        if self._page:
            return self._page.popleft()
        if self.committed <= self._cursor:
            return None
        rows = await self.b.run_io(self.b.store.page, self._cursor, PAGE)
        self._page.extend(rows)
        return self._page.popleft() if self._page else None

    def _acked(self, gen: int, mid: int, ok: bool, why: str) -> None:  # noqa: FBT001
        if gen != self._gen:
            return
        entry = self._by_mid.pop(mid, None)
        if entry is None:
            if mid in self._live_mids:
                self._live_mids.discard(mid)
                self._live_inflight -= 1
            return
        if not ok:
            self.b.counters["refused"] += 1
            self._refused = True
            self.b.reporter.raise_once("broker_refused", error=f"PUBACK {why} on {entry.row.topic}")
            self.wake.set()
            return
        entry.acked = True
        while self._inflight and self._inflight[0].acked:
            done = self._inflight.popleft()
            self.acked_pos = done.row.pos
            if done.row.run_id is not None and done.row.seq is not None:
                self.acked = Position(done.row.run_id, done.row.seq)
            self._ack_dirty = True
            self.b.counters["acked"] += 1
        self.wake.set()

    async def _stop_gracefully(self, link: Link) -> None:
        """The last state (offline, stopped), then wait a moment for what is in flight."""
        with contextlib.suppress(LinkError):
            link.publish(
                self.b.tree.topic("state"),
                self.b.tree.state(self.b.identity, "offline", "bridge_stopped"),
                retain=True,
            )
        deadline = time.monotonic() + STOP_DRAIN_S
        while self._inflight and link.up and (left := deadline - time.monotonic()) > 0:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), left)

    async def acker(self, stop: asyncio.Event) -> None:
        """Commit the acknowledged position; prune what is past ``resend_s``."""
        next_prune = time.monotonic() + PRUNE_S
        while True:
            if self._ack_dirty:
                await self._commit_ack()
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_S
                await self.b.prune()
            if stop.is_set() and self.link is None:
                if self._ack_dirty:
                    await self._commit_ack()
                return
            await asyncio.sleep(ACK_COMMIT_S)

    async def _commit_ack(self) -> None:
        self._ack_dirty = False
        meta: dict[str, int | str | None] = {"acked_pos": self.acked_pos}
        if self.acked is not None:
            meta.update(acked_run=self.acked.run_id, acked_seq=self.acked.seq)
        await self.b.run_io(self.b.store.ack, self.acked_pos, time.time_ns(), meta)

    def publish_live(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = True,
        qos: int = 1,
        expiry_s: int | None = None,
    ) -> bool:
        """State, alarms, yields, health: only while connected (the latest is what counts).

        False when not sent: no connection, or the broker's Receive Maximum is used up (the
        caller tries again on the next tick).
        """
        link = self.link
        if link is None or not link.up:
            return False
        if qos and len(self._inflight) + self._live_inflight >= link.receive_maximum:
            self.b.counters["live_deferred"] += 1
            return False
        try:
            mid = link.publish(topic, payload, qos=qos, retain=retain, expiry_s=expiry_s)
        except LinkError:
            self.b.counters["live_unsent"] += 1
            return False
        if qos:
            self._live_mids.add(mid)
            self._live_inflight += 1
        return True
