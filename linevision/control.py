"""The daemon's control socket: a ZeroMQ REP on loopback (or ``ipc://``), JSON in and out.

Requests: ``{"cmd": "recipe.switch", "name": "..."}``, ``{"cmd": "recipe.reload"}``,
``{"cmd": "status"}``. Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
One request is handled at a time, on the control thread, never on the pipeline's threads.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import zmq

from linevision.bus import context
from linevision.log import get_logger

log = get_logger(__name__)

Handler = Callable[[dict[str, object]], dict[str, object]]


class ControlError(Exception):
    """The daemon did not answer, or refused the request."""


class ControlServer:
    def __init__(self, endpoint: str, handlers: dict[str, Handler]) -> None:
        self.endpoint = endpoint
        self._handlers = handlers
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

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        sock = context().socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
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
                raw = sock.recv()
                sock.send(json.dumps(self._handle(raw), default=str).encode())
        finally:
            sock.close(0)

    def _handle(self, raw: bytes) -> dict[str, object]:
        try:
            req = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(req, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        cmd = str(req.get("cmd", ""))
        handler = self._handlers.get(cmd)
        if handler is None:
            return {
                "ok": False,
                "error": f"unknown command {cmd!r}",
                "known": sorted(self._handlers),
            }
        try:
            return {"ok": True, **handler(req)}
        except Exception as exc:
            log.warning("control_request_failed", cmd=cmd, error=str(exc))
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
