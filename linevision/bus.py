"""The verdict bus: one zmq.Context per process, a PUB socket owned by one thread.

Wire format (see docs/protocol.md): multipart ``[topic, payload]``; topic ASCII
``verdict.<station>`` or ``heartbeat``; payload UTF-8 JSON validated by the models below.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Generator
from typing import Literal

import zmq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from linevision.journal import Journal, JournalError
from linevision.keys import ClientKeys, KeyPair, make_client, make_server
from linevision.log import get_logger
from linevision.types import Reason, Verdict

log = get_logger(__name__)

SCHEMA = 1
HEARTBEAT_TOPIC = "heartbeat"
VERDICT_PREFIX = "verdict."


def context() -> zmq.Context[zmq.Socket[bytes]]:
    """The process-wide ZeroMQ context (zguide: one per process)."""
    return zmq.Context.instance()


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WireModel(_Wire):
    name: str
    version: str
    sha256: str


class WireDefect(_Wire):
    kind: str
    score: float
    x: int
    y: int
    w: int
    h: int


class VerdictMessage(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    run_id: str
    seq: int = Field(ge=1)
    station: str
    cell_id: int
    verdict: Literal["OK", "NG"]
    reason: Reason | None
    label: str | None
    score: float | None
    defects: list[WireDefect]
    model: WireModel | None
    t_frame_ns: int
    t_publish_ns: int
    latency_ms: float
    infer_ms: float | None = None
    recipe: str | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class HeartbeatMessage(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    run_id: str
    seq: int = Field(ge=0)
    t_ns: int
    stations: dict[str, dict[str, object]]
    cameras: dict[str, dict[str, object]]

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def verdict_payload(
    v: Verdict, run_id: str, seq: int, t_publish_ns: int, latency_ms: float
) -> bytes:
    d = v.decision
    body = {
        "schema": SCHEMA,
        "run_id": run_id,
        "seq": seq,
        "station": v.station,
        "cell_id": v.cell_id,
        "verdict": d.verdict,
        "reason": d.reason,
        "label": d.label,
        "score": d.score,
        "defects": [
            {"kind": x.kind, "score": x.score, "x": x.x, "y": x.y, "w": x.w, "h": x.h}
            for x in d.defects
        ],
        "model": (
            None
            if d.model is None
            else {"name": d.model.name, "version": d.model.version, "sha256": d.model.sha256}
        ),
        "t_frame_ns": v.t_frame_ns,
        "t_publish_ns": t_publish_ns,
        "latency_ms": round(latency_ms, 3),
        "infer_ms": None if d.infer_ms is None else round(d.infer_ms, 3),
        "recipe": v.recipe,
    }
    return json.dumps(body, separators=(",", ":")).encode()


StateFn = Callable[[], tuple[dict[str, dict[str, object]], dict[str, dict[str, object]]]]


class VerdictPublisher:
    """Owns the PUB socket; ``publish`` may be called from any thread and never blocks.

    ``seq`` is assigned here, in send order, so it is gapless across stations.
    """

    def __init__(
        self,
        endpoint: str,
        heartbeat_s: float = 1.0,
        state: StateFn | None = None,
        on_published: Callable[[Verdict, int, float], None] | None = None,
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
        self._queue: queue.SimpleQueue[Verdict | None] = queue.SimpleQueue()
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
        self._queue.put(verdict)

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
                self._send_verdict(sock, item)
        finally:
            self._send_heartbeat(sock)
            sock.close()
            log.info("bus_closed", endpoint=self.endpoint, last_seq=self.seq)

    def _send_verdict(self, sock: zmq.Socket[bytes], v: Verdict) -> None:
        self.seq += 1
        t_pub = time.time_ns()
        latency_ms = (time.monotonic_ns() - v.t_frame_mono_ns) / 1e6
        payload = verdict_payload(v, self.run_id, self.seq, t_pub, latency_ms)
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
            latency_ms=round(latency_ms, 3),
        )
        if self._on_published is not None:
            self._on_published(v, self.seq, latency_ms)

    def _send_heartbeat(self, sock: zmq.Socket[bytes]) -> None:
        stations, cameras = self._state() if self._state is not None else ({}, {})
        body = {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "seq": self.seq,
            "t_ns": time.time_ns(),
            "stations": stations,
            "cameras": cameras,
        }
        sock.send_multipart([HEARTBEAT_TOPIC.encode(), json.dumps(body, default=str).encode()])


class BusMessageError(ValueError):
    """A message on the bus that does not match the wire schema."""


def parse_message(topic: bytes, payload: bytes) -> VerdictMessage | HeartbeatMessage:
    """Validate one received message; raises BusMessageError for anything malformed."""
    try:
        name = topic.decode("ascii")
        data = json.loads(payload.decode("utf-8"))
        if name == HEARTBEAT_TOPIC:
            return HeartbeatMessage.model_validate(data)
        if name.startswith(VERDICT_PREFIX):
            msg = VerdictMessage.model_validate(data)
            if msg.station != name[len(VERDICT_PREFIX) :]:
                err = f"topic {name!r} does not match station {msg.station!r}"
                raise BusMessageError(err)
            return msg
    except (UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
        err = f"malformed message on topic {topic[:64]!r}: {exc}"
        raise BusMessageError(err) from exc
    err = f"unknown topic {topic[:64]!r}"
    raise BusMessageError(err)


def subscribe(
    endpoint: str,
    topics: tuple[str, ...] = ("verdict.",),
    timeout_s: float | None = None,
    on_invalid: Callable[[BusMessageError], None] | None = None,
    curve: ClientKeys | None = None,
) -> Generator[VerdictMessage | HeartbeatMessage, None, None]:
    """Yield validated messages until ``timeout_s`` passes without one (None: forever).

    Invalid messages are never yielded; they go to ``on_invalid``.
    """
    sock = context().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    for t in topics:
        sock.setsockopt(zmq.SUBSCRIBE, t.encode("ascii"))
    if curve is not None:
        make_client(sock, curve)
    sock.connect(endpoint)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    wait_ms = None if timeout_s is None else int(timeout_s * 1000)
    try:
        while True:
            if not poller.poll(wait_ms):
                return
            frames = sock.recv_multipart()
            if len(frames) != 2:
                if on_invalid is not None:
                    on_invalid(BusMessageError(f"expected 2 frames, got {len(frames)}"))
                continue
            try:
                yield parse_message(frames[0], frames[1])
            except BusMessageError as exc:
                if on_invalid is not None:
                    on_invalid(exc)
    finally:
        sock.close()
