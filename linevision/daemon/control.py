"""The daemon's control socket: a ZeroMQ REP on loopback (or ``ipc://``), JSON in and out.

Requests: ``{"cmd": "recipe.switch", "name": "..."}``, ``{"cmd": "recipe.reload"}``,
``{"cmd": "status"}``. Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
One request is handled at a time, on the control thread, never on the pipeline's threads.

Every request gets a reply, whatever it holds: a request that is not one frame of a JSON
object, names no known command or carries a field the command does not take is refused
with an error naming the field; a handler that fails is an error reply. Refusals are
counted (``bad_input.count``) and logged rate-limited; the loop never ends on input.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import zmq

from linevision.bus.wire import context
from linevision.log import RateLimitedLog, get_logger

log = get_logger(__name__)

Handler = Callable[[dict[str, object]], dict[str, object]]

MAX_REQUEST_BYTES = 64 * 1024
MAX_NAME_CHARS = 128
MAX_PATH_CHARS = 4096
PATH_FIELDS = frozenset({"model", "session", "data"})
"""Fields that hold a folder: a path may be longer than a name."""
FIELDS: dict[str, dict[str, bool]] = {
    "status": {},
    "recipe.reload": {},
    "recipe.switch": {"name": True},
    "challenge.run": {"station": False, "user": False, "trigger": False},
    "challenge.status": {"station": False},
    "baseline.capture": {"station": True, "cells": False},
    "drift.status": {},
    "repeatability.run": {"station": True, "data": True, "n": False, "user": False},
    "repeatability.status": {"id": False},
    "model.shadow": {"station": True, "model": True, "user": False},
    "model.unshadow": {"station": True},
    "model.report": {"station": False, "session": False},
    "model.status": {},
    "model.promote": {"station": True, "model": False, "user": False, "force": False},
    "model.rollback": {"station": True, "user": False},
}
"""The fields each command takes besides ``cmd`` (all strings), and whether each is required.

A command not listed here (one a caller added) takes any fields; its handler checks them.
"""


class BadRequestError(ValueError):
    """A control request that does not match its command's fields."""


def check_request(raw: bytes) -> tuple[str, dict[str, object]]:
    """The command and the request object; BadRequestError naming the field otherwise."""
    try:
        req = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        msg = "request is not UTF-8 JSON"
        raise BadRequestError(msg) from exc
    if not isinstance(req, dict):
        msg = "request must be a JSON object"
        raise BadRequestError(msg)
    cmd = req.get("cmd")
    if not isinstance(cmd, str) or not cmd or len(cmd) > MAX_NAME_CHARS:
        msg = f"cmd: must be a string of 1-{MAX_NAME_CHARS} characters"
        raise BadRequestError(msg)
    fields = FIELDS.get(cmd)
    if fields is None:
        return cmd, req
    for key in req:
        if key != "cmd" and key not in fields:
            msg = f"{str(key)[:MAX_NAME_CHARS]}: {cmd} takes no such field"
            raise BadRequestError(msg)
    for key, required in fields.items():
        value = req.get(key)
        if value is None and not required:
            continue
        longest = MAX_PATH_CHARS if key in PATH_FIELDS else MAX_NAME_CHARS
        if not isinstance(value, str) or not value or len(value) > longest:
            msg = f"{key}: must be a string of 1-{longest} characters"
            raise BadRequestError(msg)
    return cmd, req


class ControlError(Exception):
    """The daemon did not answer, or refused the request."""


class ControlServer:
    def __init__(self, endpoint: str, handlers: dict[str, Handler]) -> None:
        self.endpoint = endpoint
        self._handlers = handlers
        self.bad_input = RateLimitedLog(log)
        """Refused requests (not JSON, unknown command, bad field)."""
        self.failures = RateLimitedLog(log)
        """Requests whose handler failed."""
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: zmq.ZMQError | None = None
        self._thread = threading.Thread(target=self._loop, name="control", daemon=True)

    def start(self, timeout_s: float = 5.0) -> None:
        self._thread.start()
        self._ready.wait(timeout_s)
        if self._error is not None:
            msg = f"cannot bind control socket {self.endpoint}: {self._error}"
            raise ControlError(msg) from self._error

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,)

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        sock = context().socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            self._error = exc
            sock.close(0)
            self._ready.set()
            return
        self._ready.set()
        log.info("control_bound", endpoint=self.endpoint)
        try:
            while not self._stop.is_set():
                if not sock.poll(200):
                    continue
                frames = sock.recv_multipart()
                sock.send(self._reply(frames))
        finally:
            sock.close(0)

    def _reply(self, frames: list[bytes]) -> bytes:
        """Never raises: a REP socket must answer every request to take the next one."""
        try:
            return json.dumps(self._handle(frames), default=str).encode()
        except Exception as exc:
            self.failures.exception("control_reply_failed", error=repr(exc)[:300])
            return b'{"ok": false, "error": "internal error"}'

    def _handle(self, frames: list[bytes]) -> dict[str, object]:
        if len(frames) != 1:
            self.bad_input.warning("control_bad_request", error="not one frame")
            return {"ok": False, "error": f"a request is one frame, got {len(frames)}"}
        try:
            cmd, req = check_request(frames[0])
        except BadRequestError as exc:
            self.bad_input.warning("control_bad_request", error=str(exc), size=len(frames[0]))
            return {"ok": False, "error": str(exc)}
        handler = self._handlers.get(cmd)
        if handler is None:
            self.bad_input.warning("control_unknown_command", cmd=cmd[:64])
            return {
                "ok": False,
                "error": f"cmd: unknown command {cmd[:MAX_NAME_CHARS]!r}",
                "known": sorted(self._handlers),
            }
        try:
            return {"ok": True, **handler(req)}
        except Exception as exc:
            self.failures.warning("control_request_failed", cmd=cmd, error=str(exc)[:300])
            return {"ok": False, "error": str(exc)}


def request(endpoint: str, body: dict[str, object], timeout_s: float = 30.0) -> dict[str, object]:
    """Send one request and wait for the reply; ControlError when there is none in time."""
    sock = context().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(json.dumps(body).encode())
        if not sock.poll(int(timeout_s * 1000)):
            msg = f"no answer from the daemon at {endpoint} within {timeout_s} s"
            raise ControlError(msg)
        reply = json.loads(sock.recv().decode("utf-8"))
    finally:
        sock.close(0)
    if not isinstance(reply, dict):
        msg = f"unexpected reply from {endpoint}: {reply!r}"
        raise ControlError(msg)
    return reply
