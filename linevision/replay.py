"""The replay endpoint: missed verdicts served from the journal (zguide Clone/Titanic).

The daemon binds a ROUTER; a client (DEALER or REQ) sends ``["", request]`` and gets
``["", reply, payload, payload, ...]``: a JSON header, then the verdict payloads exactly as
they were published, in ``seq`` order. See docs/protocol.md.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import zmq
import zmq.asyncio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from linevision.bus import SCHEMA, VerdictMessage, context
from linevision.journal import Journal, JournalError
from linevision.keys import ClientKeys, KeyPair, make_client, make_server
from linevision.log import get_logger

log = get_logger(__name__)

MAX_BATCH = 1000
RUN_ID_PATTERN = r"^[0-9a-f]{32}$"


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ReplayRequest(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    id: str = Field(min_length=1, max_length=64)
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)
    """None: the daemon's current run."""
    from_seq: int = Field(ge=1)
    to_seq: int | None = Field(default=None, ge=1)
    limit: int = Field(default=MAX_BATCH, ge=1, le=MAX_BATCH)


class ReplayReply(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    id: str
    status: Literal["ok", "unknown_run", "bad_request", "error"]
    run_id: str | None
    current_run: str
    current_seq: int = Field(ge=0)
    first_seq: int | None
    """Oldest seq of ``run_id`` still in the journal (older ones were pruned)."""
    last_seq: int | None
    """Newest journaled seq of ``run_id``."""
    complete: bool
    """``run_id`` is not the current run: no verdict will ever be added to it."""
    count: int = Field(ge=0)
    error: str | None = None


CurrentFn = Callable[[], tuple[str, int]]


class ReplayServer:
    """A ROUTER on its own thread, reading the journal through its own connection."""

    def __init__(
        self,
        endpoint: str,
        journal_path: Path,
        current: CurrentFn,
        *,
        curve: KeyPair | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._journal_path = journal_path
        self._current = current
        self._curve = curve
        self.served = 0
        self.invalid = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="replay", daemon=True)

    def start(self, timeout_s: float = 5.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            msg = f"cannot bind replay endpoint {self.endpoint}: {self._error}"
            raise RuntimeError(msg) from self._error

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        sock = context().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        if self._curve is not None:
            make_server(sock, self._curve)
        try:
            journal = Journal(self._journal_path)
            sock.bind(self.endpoint)
        except (zmq.ZMQError, JournalError) as exc:
            self._error = exc
            sock.close(0)
            self._ready.set()
            return
        self._ready.set()
        log.info("replay_bound", endpoint=self.endpoint)
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                frames = sock.recv_multipart()
                reply = self._answer(frames, journal)
                if reply is not None:
                    sock.send_multipart(reply)
        finally:
            journal.close()
            sock.close()
            log.info("replay_closed", served=self.served, invalid=self.invalid)

    def _answer(self, frames: list[bytes], journal: Journal) -> list[bytes] | None:
        if len(frames) != 3 or frames[1] != b"":
            self.invalid += 1
            log.warning("replay_bad_envelope", frames=len(frames))
            return None
        identity, _, body = frames
        run_id, seq = self._current()
        base = {
            "schema": SCHEMA,
            "current_run": run_id,
            "current_seq": seq,
            "first_seq": None,
            "last_seq": None,
            "complete": False,
            "count": 0,
        }
        try:
            req = ReplayRequest.model_validate_json(body)
        except ValidationError as exc:
            self.invalid += 1
            log.warning("replay_bad_request", error=str(exc).splitlines()[0], size=len(body))
            head = {**base, "id": "?", "status": "bad_request", "run_id": None, "error": str(exc)}
            return [identity, b"", json.dumps(head).encode()]
        wanted = req.run_id or run_id
        head = {**base, "id": req.id, "run_id": wanted, "complete": wanted != run_id}
        try:
            span = journal.span(wanted)
            payloads = journal.read(wanted, req.from_seq, req.to_seq, req.limit) if span else []
        except JournalError as exc:
            log.exception("replay_journal_error")
            head.update(status="error", error=str(exc))
            return [identity, b"", json.dumps(head).encode()]
        if span is None:
            head.update(status="unknown_run")
        else:
            head.update(
                status="ok", first_seq=span.first_seq, last_seq=span.last_seq, count=len(payloads)
            )
        self.served += len(payloads)
        return [identity, b"", json.dumps(head).encode(), *payloads]


class ReplayError(RuntimeError):
    """The replay endpoint did not answer in time, or answered with an error."""


@dataclass(frozen=True, slots=True)
class ReplayBatch:
    reply: ReplayReply
    verdicts: list[VerdictMessage]


class ReplayClient:
    """An asyncio DEALER; a timed-out request closes and reopens the socket (Lazy Pirate)."""

    def __init__(self, endpoint: str, curve: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self._curve = curve
        self._ctx = zmq.asyncio.Context(context())
        self._sock: zmq.asyncio.Socket | None = None
        self.invalid = 0

    def _socket(self) -> zmq.asyncio.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if self._curve is not None:
                make_client(sock, self._curve)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    async def fetch(
        self, run_id: str | None, from_seq: int, to_seq: int | None, timeout_s: float
    ) -> ReplayBatch:
        """One request: up to MAX_BATCH verdicts of ``run_id`` from ``from_seq``."""
        req_id = uuid.uuid4().hex
        req = {"schema": SCHEMA, "id": req_id, "run_id": run_id, "from_seq": from_seq}
        if to_seq is not None:
            req["to_seq"] = to_seq
        sock = self._socket()
        await sock.send_multipart([b"", json.dumps(req).encode()])
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not await sock.poll(left_ms):
                self.close()
                msg = f"replay endpoint {self.endpoint} did not answer within {timeout_s} s"
                raise ReplayError(msg)
            frames = await sock.recv_multipart()
            batch = self._parse(frames, req_id, run_id, from_seq)
            if batch is not None:
                return batch

    def _parse(
        self, frames: list[bytes], req_id: str, run_id: str | None, from_seq: int
    ) -> ReplayBatch | None:
        if len(frames) < 2 or frames[0] != b"":
            self.invalid += 1
            return None
        try:
            reply = ReplayReply.model_validate_json(frames[1])
        except ValidationError:
            self.invalid += 1
            log.warning("replay_bad_reply", size=len(frames[1]))
            return None
        if reply.id != req_id:
            log.debug("replay_stale_reply", id=reply.id)
            return None
        if reply.status in {"bad_request", "error"}:
            msg = f"replay endpoint answered {reply.status}: {reply.error}"
            raise ReplayError(msg)
        verdicts: list[VerdictMessage] = []
        expected = from_seq
        for payload in frames[2:]:
            try:
                v = VerdictMessage.model_validate_json(payload)
            except ValidationError as exc:
                self.invalid += 1
                msg = f"replay endpoint sent an invalid verdict: {exc}"
                raise ReplayError(msg) from exc
            if (run_id is not None and v.run_id != run_id) or v.seq < expected:
                self.invalid += 1
                msg = f"replay endpoint sent run {v.run_id} seq {v.seq} out of order"
                raise ReplayError(msg)
            expected = v.seq + 1
            verdicts.append(v)
        return ReplayBatch(reply, verdicts)
