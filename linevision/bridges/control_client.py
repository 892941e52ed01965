"""A request to the daemon's control socket from a bridge's event loop (docs/lifecycle.md).

The same JSON request/reply as ``linevision recipe`` uses; a REQ socket per request, closed
after it, so a daemon that never answers leaves nothing stuck behind (the Lazy Pirate way).
"""

from __future__ import annotations

import json

import zmq
import zmq.asyncio

from linevision.bus.wire import context


class ControlRequestError(RuntimeError):
    """The daemon did not answer in time, or refused the request."""


async def control_request(
    endpoint: str, body: dict[str, object], timeout_s: float
) -> dict[str, object]:
    """Send ``body``; the daemon's reply (``ok`` true), else ControlRequestError."""
    sock = zmq.asyncio.Context(context()).socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        await sock.send(json.dumps(body).encode())
        if not await sock.poll(int(timeout_s * 1000)):
            msg = f"no answer from the daemon at {endpoint} within {timeout_s:g} s"
            raise ControlRequestError(msg)
        raw = await sock.recv()
    finally:
        sock.close(0)
    try:
        reply = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        msg = f"the daemon at {endpoint} answered something that is not JSON"
        raise ControlRequestError(msg) from exc
    if not isinstance(reply, dict):
        msg = f"unexpected reply from {endpoint}: {str(reply)[:200]}"
        raise ControlRequestError(msg)
    if not reply.get("ok"):
        msg = f"the daemon refused: {str(reply.get('error'))[:300]}"
        raise ControlRequestError(msg)
    return reply
