"""Reading the bus: the one place a SUB socket is set up."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

import zmq

from linevision.bus.curve import ClientKeys, make_client
from linevision.bus.wire import (
    BusMessageError,
    HeartbeatMessage,
    VerdictMessage,
    context,
    parse_message,
)

RCVHWM = 100_000
"""Messages a SUB socket queues before it drops: a reader that falls behind loses the newest."""

SocketT = TypeVar("SocketT", bound="zmq.Socket[Any]")


def open_sub(
    ctx: zmq.Context[SocketT],
    endpoint: str,
    topics: Iterable[str],
    curve: ClientKeys | None = None,
) -> SocketT:
    """A SUB socket of ``ctx`` subscribed to ``topics`` (prefixes) and connected to ``endpoint``.

    No linger, a deep receive queue (``RCVHWM``), a CURVE client when ``curve`` is given.
    ``ctx`` is :func:`context` or a ``zmq.asyncio.Context`` over it (for an asyncio socket).
    """
    sock = ctx.socket(zmq.SUB)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
        if curve is not None:
            make_client(sock, curve)
        sock.connect(endpoint)
    except BaseException:
        sock.close(0)
        raise
    return sock


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
    sock = open_sub(context(), endpoint, topics, curve)
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
