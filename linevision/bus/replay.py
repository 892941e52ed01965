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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from linevision.bus.curve import ClientKeys, KeyPair, make_client, make_server
from linevision.bus.journal import Journal, JournalError
from linevision.bus.wire import MAX_SEQ, SCHEMA, VerdictMessage, context
from linevision.log import RateLimitedLog, get_logger

log = get_logger(__name__)

MAX_BATCH = 1000
MAX_REQUEST_BYTES = 64 * 1024
"""A larger request is refused by ZeroMQ before it is read (the peer is disconnected)."""
MAX_ID_CHARS = 64
RUN_ID_PATTERN = r"^[0-9a-f]{32}$"


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ReplayRequest(_Wire):
    """Strict: an int is a JSON integer (not ``"1"``, ``true`` or ``1.0``), a str a JSON string."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, strict=True)

    schema_: int = Field(alias="schema")
    id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)
    """None: the daemon's current run."""
    from_seq: int = Field(ge=1, le=MAX_SEQ)
    to_seq: int | None = Field(default=None, ge=1, le=MAX_SEQ)
    limit: int = Field(default=MAX_BATCH, ge=1, le=MAX_BATCH)

    @field_validator("schema_")
    @classmethod
    def _schema_1(cls, value: int) -> int:
        if value != SCHEMA:
            msg = f"must be {SCHEMA}"
            raise ValueError(msg)
        return value

    @field_validator("id")
    @classmethod
    def _sane_id(cls, value: str) -> str:
        if not _sane(value):
            msg = "must be printable text (no control characters or lone surrogates)"
            raise ValueError(msg)
        return value


def _sane(text: str) -> bool:
    """Text a reply can carry back: printable, and encodable as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return text.isprintable()


def validation_message(exc: ValidationError) -> str:
    """``field: problem`` for each error, e.g. ``from_seq: Input should be a valid integer``."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(x) for x in err["loc"]) or "request"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def readable_id(body: bytes) -> str | None:
    """The request's ``id`` if it can be read: a JSON object whose id is short, printable text."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    req_id = data.get("id") if isinstance(data, dict) else None
    if isinstance(req_id, str) and 1 <= len(req_id) <= MAX_ID_CHARS and _sane(req_id):
        return req_id
    return None


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
        self.bad_input = RateLimitedLog(log)
        """Requests refused, counted (``bad_input.count``) and logged rate-limited."""
        self.failures = RateLimitedLog(log)
        """Requests that failed (journal error, or a bug a request ran into)."""
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="replay", daemon=True)

    def start(self, timeout_s: float = 5.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            msg = f"cannot bind replay endpoint {self.endpoint}: {self._error}"
            raise RuntimeError(msg) from self._error

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,)

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        sock = context().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
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
                reply = self._answer_safely(frames, journal)
                if reply is not None:
                    try:
                        sock.send_multipart(reply)
                    except zmq.ZMQError as exc:
                        self.failures.warning("replay_send_failed", error=str(exc))
        finally:
            journal.close()
            sock.close()
            log.info("replay_closed", served=self.served, invalid=self.invalid)

    @property
    def invalid(self) -> int:
        """Requests that were refused: a bad envelope or a bad request."""
        return self.bad_input.count

    def _answer_safely(self, frames: list[bytes], journal: Journal) -> list[bytes] | None:
        """Never raises: whatever a request does, the loop goes on to the next one."""
        try:
            return self._answer(frames, journal)
        except Exception as exc:
            self.failures.exception("replay_request_failed", error=repr(exc)[:300])
        if len(frames) != 3:  # identity, delimiter, request
            return None
        try:
            head = {**self._base(), "status": "error", "error": "internal error"}
            head.update(id=readable_id(frames[2]) or "?", run_id=None)
            return [frames[0], b"", json.dumps(head).encode()]
        except Exception as exc:
            self.failures.exception("replay_reply_failed", error=repr(exc)[:300])
            return None

    def _base(self) -> dict[str, object]:
        run_id, seq = self._current()
        return {
            "schema": SCHEMA,
            "current_run": run_id,
            "current_seq": seq,
            "first_seq": None,
            "last_seq": None,
            "complete": False,
            "count": 0,
        }

    def _answer(self, frames: list[bytes], journal: Journal) -> list[bytes] | None:
        if len(frames) != 3 or frames[1] != b"":
            self.bad_input.warning("replay_bad_envelope", frames=len(frames))
            return None
        identity, _, body = frames
        base = self._base()
        run_id = str(base["current_run"])
        try:
            req = ReplayRequest.model_validate_json(body)
        except ValidationError as exc:
            error = validation_message(exc)
            self.bad_input.warning("replay_bad_request", error=error[:300], size=len(body))
            head = {**base, "status": "bad_request", "run_id": None, "error": error[:1000]}
            head["id"] = readable_id(body) or "?"
            return [identity, b"", json.dumps(head).encode()]
        wanted = req.run_id or run_id
        head = {**base, "id": req.id, "run_id": wanted, "complete": wanted != run_id}
        try:
            span = journal.span(wanted)
            payloads = journal.read(wanted, req.from_seq, req.to_seq, req.limit) if span else []
        except JournalError as exc:
            self.failures.exception("replay_journal_error", error=str(exc)[:300])
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
