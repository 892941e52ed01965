"""Fuzz every endpoint of a running daemon that takes input; each must keep answering.

The daemon runs with the journal, the replay ROUTER, the control REP, the metrics listener
and the HMI, all on real sockets. The fuzz is seeded (``SEED``), so a failure replays.
After the fuzz: every endpoint answers a valid request, no thread died, no HTTP 500, every
log line is one JSON event, and the warnings about bad input are rate-limited.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from linevision import log
from linevision.bus.replay import MAX_REQUEST_BYTES, ReplayClient, ReplayReply
from linevision.bus.wire import context
from linevision.config import HmiConfig
from linevision.daemon.control import request
from linevision.daemon.operations import Operations
from linevision.daemon.service import Service
from linevision.hmi.server import HmiServer
from tests.daemon import fuzz
from tests.daemon.parts import free_port, make_frames, make_model, ops_config
from tests.helpers import free_tcp_endpoint

SEED = 18
ZMQ_FRAMES = 2_000
HTTP_REQUESTS = {"hmi": 250, "metrics": 125}
PERIOD_S = 10.0
"""The rate limit of a bad-input warning (``linevision.log.RateLimitedLog``)."""


@dataclass
class Daemon:
    ops: Operations
    service: Service
    hmi: HmiServer
    replay: str
    control: str
    metrics_port: int


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    models = tmp / "models"
    make_model(models / "tiny")
    cfg = ops_config(
        tmp,
        make_frames(tmp / "frames"),
        rate_hz=20,
        journal={"path": str(tmp / "journal.db")},
        bus={"publish": free_tcp_endpoint(), "replay": free_tcp_endpoint()},
    )
    ops = Operations(cfg, models, env={"STATE_DIRECTORY": str(tmp / "state")})
    svc = ops.make_service()
    assert ops.archive is not None
    hmi = HmiServer(
        HmiConfig(listen=f"127.0.0.1:{free_port()}"), cfg.bus.publish, ops.archive.folder
    )
    stop = threading.Event()
    try:
        ops.start()
        svc.start()
        hmi.start()
        assert ops.ready(stop, camera_timeout_s=10)
        assert ops.metrics_address is not None
        assert cfg.bus.replay is not None
        deadline = time.monotonic() + 10
        while svc.publisher.seq < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield Daemon(ops, svc, hmi, cfg.bus.replay, cfg.control.endpoint, ops.metrics_address[1])
    finally:
        hmi.stop()
        ops.stopping()
        svc.stop()
        ops.close()


@pytest.fixture
def watch(monkeypatch, capsys):
    """JSON logs on stdout; records any thread that ends with an exception."""
    log.configure("info", "json")
    # A daemon thread may have logged between the capture's start and the line above, with the
    # defaults the previous test's reset left (console lines): not this test's output.
    capsys.readouterr()
    died: list[str] = []
    monkeypatch.setattr(
        threading, "excepthook", lambda a: died.append(f"{a.thread}: {a.exc_type.__name__}")
    )
    before = _long_lived()
    started = time.monotonic()
    yield died
    assert died == []
    assert before <= _long_lived(), "a thread is gone"
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err[-3000:]
    _check_log(out, time.monotonic() - started)


def _long_lived() -> set[str]:
    """The named threads (unnamed ``Thread-N`` and pool workers come and go per request)."""
    transient = ("Thread-", "ThreadPoolExecutor", "AnyIO", "asyncio_")
    return {t.name for t in threading.enumerate() if not t.name.startswith(transient)}


def _check_log(out: str, elapsed_s: float) -> None:
    lines = []
    for x in out.splitlines():  # every line is one JSON event
        try:
            lines.append(json.loads(x))
        except ValueError:
            pytest.fail(f"not one JSON event: {x[:300]!r}")
    loud = Counter(x["event"] for x in lines if x["level"] in {"warning", "error", "critical"})
    allowed = 2 + int(elapsed_s / PERIOD_S)
    assert all(n <= allowed for n in loud.values()), loud
    assert sum(loud.values()) <= 40, loud


def _scrape(port: int) -> dict[str, float]:
    """Each sample's value by name (the last one where labels differ)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def _answers(d: Daemon) -> None:
    """Every endpoint answers a valid request."""

    async def fetch() -> list[int]:
        client = ReplayClient(d.replay)
        try:
            batch = await client.fetch(None, 1, 3, 5.0)
        finally:
            client.close()
        return [v.seq for v in batch.verdicts]

    assert asyncio.run(fetch()) == [1, 2, 3]
    reply = request(d.control, {"cmd": "status"}, timeout_s=5.0)
    assert reply["ok"] is True
    assert reply["run_id"] == d.service.publisher.run_id
    for path in ("/healthz", "/api/state"):
        with urllib.request.urlopen(f"http://127.0.0.1:{d.hmi.port}{path}", timeout=5) as r:
            assert r.status == 200
    assert _scrape(d.metrics_port)["linevision_camera_up"] == 1.0


def _drain(sock: zmq.Socket[bytes], replies: list[list[bytes]]) -> None:
    while True:
        try:
            replies.append(sock.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return


def _dealers(endpoint: str, n: int) -> list[zmq.Socket[bytes]]:
    out = []
    for _ in range(n):
        sock = context().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.connect(endpoint)
        out.append(sock)
    return out


def _raw_tcp_garbage(rng: random.Random, endpoint: str) -> None:
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    import socket  # noqa: PLC0415  (only here: bytes that are not ZMTP at all)

    with socket.create_connection((host, int(port)), timeout=2) as raw:
        raw.sendall(rng.randbytes(rng.randrange(1, 2_000)))


def _send(
    sock: zmq.Socket[bytes], endpoint: str, frames: list[bytes], spare: list[zmq.Socket[bytes]]
) -> None:
    """Over the size limit the peer is disconnected: such frames go on a socket of their own.

    That socket stays open until the end: libzmq 4.3.5 aborts (session_base.cpp:233) when a
    socket is closed while its peer drops it in the middle of a multipart message.
    """
    if max(len(f) for f in frames) <= MAX_REQUEST_BYTES:
        sock.send_multipart(frames)
        return
    (own,) = _dealers(endpoint, 1)
    own.send_multipart(frames)
    spare.append(own)


def _fuzz_zmq(d: Daemon, rng: random.Random) -> dict[str, list[list[bytes]]]:
    """ZMQ_FRAMES requests to replay and control; the replies each socket got."""
    socks = {"replay": _dealers(d.replay, 4), "control": _dealers(d.control, 4), "spare": []}
    endpoints = {"replay": d.replay, "control": d.control}
    bodies = {"replay": fuzz.replay_body, "control": fuzz.control_body}
    replies: dict[str, list[list[bytes]]] = {"replay": [], "control": [], "spare": []}
    try:
        for i in range(ZMQ_FRAMES):
            name = "replay" if rng.random() < 0.6 else "control"
            frames = fuzz.envelope(rng, bodies[name](rng))
            _send(rng.choice(socks[name]), endpoints[name], frames, socks["spare"])
            if i % 100 == 0:
                _raw_tcp_garbage(rng, endpoints[name])
            for key, group in socks.items():
                for s in group:
                    _drain(s, replies[key])
        time.sleep(0.5)
        for key, group in socks.items():
            for s in group:
                _drain(s, replies[key])
    finally:
        for group in socks.values():
            for s in group:
                s.close(0)
    return replies


def test_fuzz_the_replay_and_control_sockets(daemon, watch):
    replies = _fuzz_zmq(daemon, random.Random(SEED))
    assert len(replies["replay"]) > 300
    assert len(replies["control"]) > 200
    for frames in replies["replay"]:
        assert frames[0] == b""
        ReplayReply.model_validate_json(frames[1])
    for frames in replies["control"]:
        assert frames[0] == b""
        assert "ok" in json.loads(frames[1])
    _answers(daemon)
    metrics = _scrape(daemon.metrics_port)
    assert metrics["linevision_replay_bad_requests"] > 100
    assert metrics["linevision_control_bad_requests"] > 100
    assert daemon.service.delivery.replay is not None
    assert daemon.service.delivery.replay._thread.is_alive()
    assert daemon.ops.control is not None
    assert daemon.ops.control._thread.is_alive()


def test_fuzz_the_hmi_and_metrics_over_http(daemon, watch):
    rng = random.Random(SEED + 1)
    run_id = daemon.service.publisher.run_id
    jobs = [
        (port, fuzz.http_request(rng, run_id))
        for name, port in (("hmi", daemon.hmi.port), ("metrics", daemon.metrics_port))
        for _ in range(HTTP_REQUESTS[name])
    ]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda job: fuzz.send_http(*job), jobs))
    seen = Counter(statuses)
    assert 500 not in seen, [
        raw[:120] for (_, raw), s in zip(jobs, statuses, strict=True) if s == 500
    ]
    assert seen[200] > 10  # the fuzzer reached real pages too (about 7 % of its requests)
    assert seen[400] + seen[404] > 50
    _answers(daemon)
    health = json.loads(
        urllib.request.urlopen(f"http://127.0.0.1:{daemon.hmi.port}/healthz").read()
    )
    assert health["bad_requests"] > 0
