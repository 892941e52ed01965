"""A gapless verdict stream: SUB socket + replay fetch + heartbeat liveness.

Verdicts come out in ``(run_id, seq)`` order, each once. A ``seq`` jump or a heartbeat ahead
of the last verdict is a gap, filled from the replay endpoint; a new ``run_id`` is a daemon
restart: the rest of the old run is fetched first. What cannot be fetched within
``recover_timeout_s`` comes out as :class:`Lost`, never silently skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio

from linevision.bridges.config import SourceConfig
from linevision.bus import curve as keys
from linevision.bus.replay import ReplayClient, ReplayError
from linevision.bus.subscriber import open_sub
from linevision.bus.wire import (
    HEARTBEAT_TOPIC,
    VERDICT_PREFIX,
    BusMessageError,
    HeartbeatMessage,
    VerdictMessage,
    context,
    parse_message,
)
from linevision.config import CurveClientConfig
from linevision.log import RateLimitedLog, get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Position:
    """The last verdict a bridge has finished with."""

    run_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class Lost:
    """Verdicts that were published but could not be recovered (``last_seq`` None: unknown)."""

    run_id: str
    first_seq: int
    last_seq: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Liveness:
    alive: bool
    run_id: str | None


Event = VerdictMessage | Lost | Liveness
Sink = Callable[[Event], Awaitable[None]]


def client_keys(cfg: CurveClientConfig | None) -> keys.ClientKeys | None:
    if cfg is None:
        return None
    return keys.ClientKeys(
        keys.load_pair(cfg.secret_key_file), keys.load_public(cfg.server_public_key_file)
    )


def load_position(path: Path | None) -> Position | None:
    """A missing or unreadable file means: start with the live stream."""
    if path is None or not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Position(str(data["run_id"]), int(data["seq"]))
    except (OSError, ValueError, KeyError, TypeError):
        log.exception("state_file_unreadable", path=str(path))
        return None


def save_position(path: Path, pos: Position) -> None:
    """Atomic replace: a crash leaves the old or the new position, never a torn file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"run_id": pos.run_id, "seq": pos.seq}), encoding="utf-8")
    os.replace(tmp, path)  # noqa: PTH105  (Path.replace is the same call; this reads clearer)


class VerdictStream:
    def __init__(  # noqa: PLR0913  (the source, the sink, where to start, keys, heartbeats)
        self,
        cfg: SourceConfig,
        sink: Sink,
        resume: Position | None = None,
        curve: keys.ClientKeys | None = None,
        on_heartbeat: Callable[[HeartbeatMessage], None] | None = None,
        *,
        from_run_start: bool = False,
    ) -> None:
        self.cfg = cfg
        self._sink = sink
        self._on_heartbeat = on_heartbeat
        """Called with each heartbeat after its gap (if any) was recovered (the stations'
        ``verified``, for the PLC's bit)."""
        self._from_run_start = from_run_start
        """Without ``resume``: begin with the current run's first journaled verdict, not
        with the first message heard (what the journal no longer holds is skipped, not lost)."""
        self._joining = False
        self._resume = resume
        self._curve = curve
        self.run_id: str | None = None
        self.next_seq = 0
        self.alive: bool | None = None
        """None until the first message or the first heartbeat timeout."""
        self.counters: Counter[str] = Counter()
        self._bad_input = RateLimitedLog(log)
        self._replay = ReplayClient(cfg.replay, curve) if cfg.replay is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        ctx = zmq.asyncio.Context(context())
        topics = (VERDICT_PREFIX, HEARTBEAT_TOPIC)
        sock = open_sub(ctx, self.cfg.verdicts, topics, self._curve)
        last_heard = time.monotonic()
        try:
            while not stop.is_set():
                if not await sock.poll(100):
                    silent = time.monotonic() - last_heard > self.cfg.heartbeat_timeout_s
                    if self.alive is not False and silent:
                        self.alive = False
                        await self._sink(Liveness(alive=False, run_id=self.run_id))
                    continue
                frames = await sock.recv_multipart()
                msg = self._parse(frames)
                if msg is None:
                    continue
                last_heard = time.monotonic()
                if not self.alive:
                    self.alive = True
                    await self._sink(Liveness(alive=True, run_id=msg.run_id))
                await self.handle(msg)
        finally:
            sock.close(0)
            if self._replay is not None:
                self._replay.close()

    def _parse(self, frames: list[bytes]) -> VerdictMessage | HeartbeatMessage | None:
        if len(frames) != 2:
            self._invalid(f"expected 2 frames, got {len(frames)}")
            return None
        try:
            return parse_message(frames[0], frames[1])
        except BusMessageError as exc:
            self._invalid(str(exc))
            return None

    def _invalid(self, error: str) -> None:
        self.counters["invalid"] += 1
        self._bad_input.warning("invalid_message", error=error[:300])

    async def handle(self, msg: VerdictMessage | HeartbeatMessage) -> None:
        """Apply one validated message (public for tests that feed messages directly)."""
        if self.run_id is None:
            await self._first_contact(msg)
        elif msg.run_id != self.run_id:
            self.counters["restarts"] += 1
            log.warning("daemon_restart", old_run=self.run_id, new_run=msg.run_id)
            await self._finish_run(self.run_id, self.next_seq)
            self.run_id, self.next_seq = msg.run_id, 1
        if isinstance(msg, HeartbeatMessage):
            if msg.seq >= self.next_seq:
                await self._recover(msg.run_id, self.next_seq, msg.seq)
            if self._on_heartbeat is not None:
                self._on_heartbeat(msg)
            return
        self.counters["received"] += 1
        if msg.seq < self.next_seq:
            self.counters["duplicates"] += 1
            return
        if msg.seq > self.next_seq:
            await self._recover(msg.run_id, self.next_seq, msg.seq - 1)
        self._joining = False
        await self._sink(msg)
        self.next_seq = msg.seq + 1

    async def _first_contact(self, msg: VerdictMessage | HeartbeatMessage) -> None:
        resume, self._resume = self._resume, None
        if resume is not None and resume.run_id == msg.run_id:
            self.run_id, self.next_seq = msg.run_id, resume.seq + 1
            return
        if resume is not None:
            await self._finish_run(resume.run_id, resume.seq + 1)
            self.run_id, self.next_seq = msg.run_id, 1
            return
        self.run_id = msg.run_id
        self.next_seq = msg.seq + 1 if isinstance(msg, HeartbeatMessage) else msg.seq
        if self._from_run_start:
            self.next_seq, self._joining = 1, True
        log.info("stream_joined", run_id=msg.run_id, next_seq=self.next_seq)

    async def _recover(self, run_id: str, first: int, last: int) -> None:
        """Fetch ``first..last`` of the current run and pass it on; the rest becomes Lost."""
        joining, self._joining = self._joining, False
        if joining:
            log.info("stream_backfill", run_id=run_id, first_seq=first, last_seq=last)
        else:
            self.counters["gaps"] += 1
            log.warning("gap", run_id=run_id, first_seq=first, last_seq=last)
        got, _ = await self._fetch(run_id, first, last, lose_pruned=not joining)
        if got <= last and joining:
            self.counters["backfill_missed"] += last - got + 1
            log.warning("stream_backfill_incomplete", run_id=run_id, first_seq=got, last_seq=last)
        elif got <= last:
            await self._lose(run_id, got, last, "not_recovered")
        self.next_seq = last + 1

    async def _finish_run(self, run_id: str, first: int) -> None:
        """After a restart: everything of the old run from ``first`` to its end."""
        got, complete = await self._fetch(run_id, first, None)
        if not complete:
            await self._lose(run_id, got, None, "run_end_unknown")

    async def _fetch(
        self, run_id: str, first: int, last: int | None, *, lose_pruned: bool = True
    ) -> tuple[int, bool]:
        """Deliver what replay has of ``first..last`` (``last`` None: to the run's end).

        Returns the next seq still wanted, and whether the run's end was confirmed.
        """
        deadline = time.monotonic() + self.cfg.recover_timeout_s
        nxt = first
        while self._replay is not None and (last is None or nxt <= last):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch = await self._replay.fetch(
                    run_id, nxt, last, min(left, self.cfg.replay_timeout_s)
                )
            except ReplayError as exc:
                self.counters["replay_errors"] += 1
                log.warning("replay_failed", error=str(exc), run_id=run_id, from_seq=nxt)
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            reply = batch.reply
            if reply.status == "unknown_run":
                break
            if reply.first_seq is not None and reply.first_seq > nxt:
                end = reply.first_seq - 1 if last is None else min(last, reply.first_seq - 1)
                if lose_pruned:
                    await self._lose(run_id, nxt, end, "pruned")
                nxt = end + 1
            for v in batch.verdicts:
                self.counters["recovered"] += 1
                await self._sink(v)
                nxt = v.seq + 1
            if last is None and reply.complete and (reply.last_seq is None or nxt > reply.last_seq):
                return nxt, True
            if not batch.verdicts:
                await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        return nxt, False

    async def _lose(self, run_id: str, first: int, last: int | None, reason: str) -> None:
        n = 0 if last is None else last - first + 1
        self.counters["lost"] += n
        log.error("verdicts_lost", run_id=run_id, first_seq=first, last_seq=last, reason=reason)
        await self._sink(Lost(run_id, first, last, reason))
