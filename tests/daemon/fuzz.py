"""Random and hostile input for the daemon's endpoints: ZeroMQ frames and raw HTTP requests.

Every generator takes a seeded ``random.Random``, so a failing case can be replayed.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
from collections.abc import Callable

HUGE: tuple[object, ...] = (
    2**63,
    2**64,
    -(2**63) - 1,
    10**100,
    10**3000,
    1e308,
    -0.0,
    0,
    -1,
)
ODD: tuple[object, ...] = (None, True, False, "1", "", [], {}, 1.5, "x" * 100, [1, 2], {"a": 1})
REPLAY_FIELDS = ("schema", "id", "run_id", "from_seq", "to_seq", "limit", "extra")
CONTROL_CMDS: tuple[object, ...] = ("status", "recipe.switch", "recipe.reload", "nope", "", 5)


def _deep(rng: random.Random) -> bytes:
    n = rng.choice([10, 1_000, 30_000])
    if rng.random() < 0.5:
        return b"[" * n + b"]" * n
    return b'{"a":' * n + b"1" + b"}" * n


def _mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randrange(1, 6)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


_ODD_BODIES = (
    b'{"schema":1,"id":"\xff\xfe","from_seq":1}',
    b'{"schema":1,"id":"a","from_seq":1e999}',
    b'{"schema":1,"id":"a","from_seq":NaN}',
    b'{"schema":1,"id":"\\ud800","from_seq":1}',
    b'{"schema":1,"id":"a","id":5,"from_seq":1}',
)
_REPLAY_CASES: tuple[Callable[[random.Random, dict[str, object]], bytes], ...] = (
    lambda rng, _v: rng.randbytes(rng.randrange(300)),
    lambda rng, _v: _deep(rng),
    lambda rng, v: json.dumps({**v, rng.choice(REPLAY_FIELDS): rng.choice(HUGE)}).encode(),
    lambda rng, _v: rng.choice(_ODD_BODIES),
    lambda _rng, _v: b"",
    # long ids; the longest is over the size limit
    lambda rng, v: json.dumps({**v, "id": "x" * rng.choice([65, 1_000, 70_000])}).encode(),
    lambda rng, v: json.dumps({**v, rng.choice(REPLAY_FIELDS): rng.choice(ODD)}).encode(),
    lambda _rng, v: json.dumps({**v, **{f"k{i}": i for i in range(2_000)}}).encode(),
    lambda rng, v: _mutate(rng, json.dumps(v).encode()),
    lambda rng, v: json.dumps([v] * rng.randrange(5)).encode(),
    lambda rng, v: json.dumps({**v, "from_seq": rng.randrange(1, 100)}).encode(),
)


def replay_body(rng: random.Random) -> bytes:
    valid: dict[str, object] = {"schema": 1, "id": f"f{rng.randrange(10**6)}", "from_seq": 1}
    return rng.choice(_REPLAY_CASES)(rng, valid)


def control_body(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(300))
    if kind == 1:
        return _deep(rng)
    req: dict[str, object] = {"cmd": rng.choice(CONTROL_CMDS)}
    if kind == 2:
        req[rng.choice(["name", "x", "cmd"])] = rng.choice((*ODD, *HUGE))
    if kind == 3:
        req["name"] = "r" * rng.choice([1, 128, 129, 70_000])
    body = json.dumps(req).encode()
    return _mutate(rng, body) if kind == 4 else body


def envelope(rng: random.Random, body: bytes) -> list[bytes]:
    """Frames a DEALER sends: mostly the right ``["", body]``, else wrong counts and shapes."""
    kind = rng.randrange(8)
    if kind < 3:
        return [b"", body]
    if kind == 3:
        return [body]
    if kind == 4:
        return [b"", body, rng.randbytes(rng.randrange(20))]
    if kind == 5:
        return [b""] * rng.randrange(1, 6)
    if kind == 6:
        return [rng.randbytes(4), body]
    return [b"", b"", body]


METHODS = (b"GET", b"GET", b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE")
ODD_METHODS = (b"PATCH", b"CONNECT", b"G\xffT", b"", b"GET GET", b"get", b"X" * 300)
PATHS = (
    "/",
    "/healthz",
    "/api/state",
    "/metrics",
    "/img/pole_piece/{run}/1.jpg",
    "/img/pole_piece/{run}/0.jpg",
    "/img/pole_piece/{run}/99999999999999999999999.jpg",
    "/img/POLE/{run}/1.jpg",
    "/img/pole_piece/zz/1.jpg",
    "/img/" + "a" * 300 + "/{run}/1.jpg",
    "/img/pole_piece/{run}/-1.jpg",
    "/static/js/main.js",
    "/static/css/tiles.css",
    "/favicon.ico",
    "/api/alarms/ack",
    "/api/picture/pole_piece/{run}/1",
    "/api/picture/pole_piece/{run}/99999999999999999999999",
    "/img/pole_piece/{run}/1-d1.jpg",
    "/img/pole_piece/{run}/1.json",
    "/static/../../etc/passwd",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/%00",
    "/static/" + "a" * 5_000,
    "/static/",
    "/%ff%fe",
    "/\xff",
    "*",
    "http://evil.example/",
    "/" + "a/" * 2_000,
    "//",
    "/api/state/../healthz",
)
QUERIES = (
    "",
    "?t=1",
    "?t=" + "9" * 35,
    "?t=-1",
    "?t=%00",
    "?t=%C2%B2",
    "?t=1&t=2",
    "?" + "a=b&" * 2_000,
    "?token=x",
    "?%zz",
    "?t=" + "1" * 5_000,
    "?name[]=linevision_verdicts",
    "?name[]=" + "x" * 1000,
    "?t=1.5",
    "?t=1e9",
)
HEADERS = (
    b"Range: bytes=0-1,5-6",
    b"Range: bytes=99999999999999999999-",
    b"Range: bytes=-0",
    b"Range: bytes=5-1",
    b"Range: garbage",
    b"If-Modified-Since: garbage",
    b"If-None-Match: *",
    b"If-Range: x",
    b"Accept-Encoding: gzip",
    b"Authorization: Bearer " + b"x" * 1000,
    b"Cookie: linevision_hmi=\xff\xfe",
    b"X-Odd: \x01\x7f",
    b"no colon here",
    b"Host: " + b"a" * 10_000,
    b"Transfer-Encoding: chunked",
    b"Content-Length: -1",
    b"Content-Length: 5",
    b"Expect: 100-continue",
    b"Upgrade: websocket",
)


def http_request(rng: random.Random, run_id: str) -> bytes:
    """One raw HTTP request, mostly well-formed, with hostile paths, queries and headers."""
    if rng.random() < 0.08:
        return rng.randbytes(rng.randrange(1, 500))
    method = rng.choice(METHODS) if rng.random() < 0.9 else rng.choice(ODD_METHODS)
    target = rng.choice(PATHS).replace("{run}", run_id) + rng.choice(QUERIES)
    version = rng.choice([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9", b"FOO"])
    lines = [method + b" " + target.encode("utf-8", "surrogateescape") + b" " + version]
    lines.append(b"Host: 127.0.0.1")
    lines.extend(rng.choice(HEADERS) for _ in range(rng.choice([0, 0, 1, 2, 3, 200])))
    lines.append(b"Connection: close")
    body = b""
    if rng.random() < 0.2:
        body = rng.randbytes(rng.randrange(100))
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def send_http(port: int, raw: bytes, timeout_s: float = 3.0) -> int | None:
    """The status code of the answer to ``raw``; None if the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        with contextlib.suppress(OSError):  # it may close early on garbage: read what it said
            sock.sendall(raw)
        head = b""
        try:
            while b"\r\n" not in head and len(head) < 200:
                chunk = sock.recv(200)
                if not chunk:
                    break
                head += chunk
        except OSError:
            return None
    parts = head.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None
