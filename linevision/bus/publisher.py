"""The verdict publisher: a PUB socket owned by one thread, fed from any thread."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import zmq

from linevision.bus.curve import KeyPair, make_server
from linevision.bus.journal import Journal, JournalError
from linevision.bus.wire import HEARTBEAT_TOPIC, SCHEMA, VERDICT_PREFIX, context, verdict_payload
from linevision.log import get_logger
from linevision.types import Verdict

log = get_logger(__name__)


StateFn = Callable[[], tuple[dict[str, dict[str, object]], dict[str, dict[str, object]]]]
ThreadsFn = Callable[[], dict[str, dict[str, object]]]
DeathFn = Callable[[str, BaseException], None]


class _Raw:
    """A message the bus thread sends as it is (a daemon alarm), in order with verdicts."""

    __slots__ = ("payload", "topic")

    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic = topic
        self.payload = payload


class VerdictPublisher:
    """Owns the PUB socket; ``publish`` may be called from any thread and never blocks.

    ``seq`` is assigned here, in send order, so it is gapless across stations.
    """

    def __init__(  # noqa: PLR0913  (the endpoint and one hook per concern, all optional)
        self,
        endpoint: str,
        heartbeat_s: float = 1.0,
        state: StateFn | None = None,
        on_published: Callable[[Verdict, int, float], None] | None = None,
        *,
        threads: ThreadsFn | None = None,
        on_death: DeathFn | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.run_id = uuid.uuid4().hex
        self.seq = 0
        self.journal_errors = 0
        self._journal: Journal | None = None
        self._curve: KeyPair | None = None
        self._heartbeat_s = heartbeat_s
        self._state = state
        self._on_published = on_published
        self._threads = threads
        self._on_death = on_death
        self.state_errors = 0
        self.unsent = 0
        """Verdicts handed over after the bus thread died: never sent (see ``publish``)."""
        self.failure: BaseException | None = None
        """What ended the bus thread, when it was not ``stop``."""
        self._last_state: tuple[dict[str, dict[str, object]], ...] = ({}, {}, {})
        self._queue: queue.SimpleQueue[Verdict | _Raw | None] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="bus-publisher", daemon=True)

    def start(self, timeout_s: float = 5.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            msg = f"verdict publisher did not bind {self.endpoint} within {timeout_s} s"
            raise RuntimeError(msg)
        if self._error is not None:
            msg = f"cannot bind verdict publisher to {self.endpoint}: {self._error}"
            raise RuntimeError(msg) from self._error

    def publish(self, verdict: Verdict) -> None:
        """Queue ``verdict`` for the bus thread (the queue is unbounded: nothing is dropped).

        Once the bus thread has died nothing would send it: the verdict is counted in
        ``unsent`` instead of growing the queue. The PLC reads a missing verdict as a reject,
        and supervision has already raised ``thread_dead`` and withheld the watchdog.
        """
        if self.failure is not None:
            self.unsent += 1
            return
        self._queue.put(verdict)

    def send_raw(self, topic: str, payload: bytes) -> None:
        """Queue a message for the bus thread to send as it is, after what is queued."""
        if self.failure is None:
            self._queue.put(_Raw(topic, payload))

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,)

    def use_delivery(self, journal: Journal | None, curve: KeyPair | None) -> None:
        """Before ``start``: commit each verdict to ``journal`` before it is sent (the replay
        source), and make the socket a CURVE server with ``curve``."""
        if self._thread.is_alive():
            msg = "use_delivery must be called before start"
            raise RuntimeError(msg)
        self._journal = journal
        self._curve = curve

    def current(self) -> tuple[str, int]:
        """``(run_id, last seq sent)``, readable from any thread."""
        return self.run_id, self.seq

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Send what is queued, then close the socket."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        sock = context().socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 500)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        if self._curve is not None:
            make_server(sock, self._curve)
        try:
            if self._journal is not None:
                self._journal.begin_run(self.run_id)
            sock.bind(self.endpoint)
        except (zmq.ZMQError, JournalError) as exc:
            self._error = exc
            sock.close(0)
            self._ready.set()
            return
        self._ready.set()
        log.info("bus_bound", endpoint=self.endpoint, run_id=self.run_id)
        next_beat = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now >= next_beat:
                    self._send_heartbeat(sock)
                    next_beat = now + self._heartbeat_s
                try:
                    item = self._queue.get(timeout=max(0.0, next_beat - time.monotonic()))
                except queue.Empty:
                    continue
                if item is None:
                    break
                self._send_item(sock, item)
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            self._send_queued_raw(sock)
            self._send_heartbeat(sock)
            sock.close()
            log.info("bus_closed", endpoint=self.endpoint, last_seq=self.seq)

    def _send_verdict(self, sock: zmq.Socket[bytes], v: Verdict) -> None:
        self.seq += 1
        t_pub = time.time_ns()
        sent = time.monotonic_ns()
        # latency counts to the instant the verdict was decided and queued (the arbiter
        # checked it against the deadline at that instant), not to this send; the time it
        # then waited for this thread is publish_ms
        decided = sent if v.stages is None else v.stages.decided_mono_ns
        latency_ms = _ms(decided - v.t_frame_mono_ns)
        publish_ms = _ms(sent - decided)
        if v.stages is not None:
            v = replace(v, stages=replace(v.stages, sent_mono_ns=sent))
        payload = verdict_payload(
            v, self.run_id, self.seq, t_pub, latency_ms, publish_ms=publish_ms
        )
        if self._journal is not None:
            try:
                self._journal.append(self.run_id, self.seq, v.station, v.cell_id, payload)
            except JournalError:
                self.journal_errors += 1
                log.exception("journal_write_failed", seq=self.seq)
        sock.send_multipart([(VERDICT_PREFIX + v.station).encode("ascii"), payload])
        log.debug(
            "verdict",
            seq=self.seq,
            station=v.station,
            cell_id=v.cell_id,
            verdict=v.decision.verdict,
            reason=v.decision.reason,
            label=v.decision.label,
            latency_ms=latency_ms,
            publish_ms=publish_ms,
        )
        if self._on_published is not None:
            self._on_published(v, self.seq, latency_ms)

    def _failed(self, exc: BaseException) -> None:
        """The bus thread is ending on ``exc``: tell supervision while the socket is open.

        ``on_death`` may queue its alarm with ``send_raw``; from ``failure`` on nothing more
        is queued, and what is is sent (raw) or counted (verdicts) on the way out.
        """
        log.error("bus_thread_failed", error=repr(exc))
        if self._on_death is not None:
            try:
                self._on_death(self._thread.name, exc)
            except Exception as hook_exc:
                log.exception("bus_death_hook_failed", error=repr(hook_exc))
        self.failure = exc

    def _send_item(self, sock: zmq.Socket[bytes], item: Verdict | _Raw) -> None:
        if isinstance(item, _Raw):
            sock.send_multipart([item.topic.encode("ascii"), item.payload])
        else:
            self._send_verdict(sock, item)

    def _send_queued_raw(self, sock: zmq.Socket[bytes]) -> None:
        """On the way out: send the raw messages still queued (the alarm of this death)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Raw):
                sock.send_multipart([item.topic.encode("ascii"), item.payload])
            elif item is not None:
                self.unsent += 1

    def _heartbeat_state(self) -> tuple[dict[str, dict[str, object]], ...]:
        """The state callbacks' answer; the last good one if they raise (logged, counted).

        A heartbeat must go out whatever the state callbacks do: it is the daemon's sign of
        life, and an exception here must not end the thread that sends the verdicts.
        """
        try:
            stations, cameras = self._state() if self._state is not None else ({}, {})
            threads = self._threads() if self._threads is not None else {}
        except Exception as exc:
            self.state_errors += 1
            log.exception("heartbeat_state_failed", error=repr(exc), count=self.state_errors)
            return self._last_state
        self._last_state = (stations, cameras, threads)
        return self._last_state

    def _send_heartbeat(self, sock: zmq.Socket[bytes]) -> None:
        stations, cameras, threads = self._heartbeat_state()
        body: dict[str, object] = {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "seq": self.seq,
            "t_ns": time.time_ns(),
            "stations": stations,
            "cameras": cameras,
        }
        if self._threads is not None:
            body["threads"] = threads
        sock.send_multipart([HEARTBEAT_TOPIC.encode(), json.dumps(body, default=str).encode()])


def _ms(ns: int) -> float:
    """Nanoseconds as milliseconds, truncated to the microsecond (never rounded up past a
    deadline)."""
    return (ns // 1000) / 1000.0
