"""The replay endpoint refuses bad requests by name, echoes their id and never stops answering."""

from __future__ import annotations

import io
import json
import sys
import time

import pytest
import zmq

from linevision import log
from linevision.bus.journal import Journal
from linevision.bus.replay import ReplayServer
from linevision.bus.wire import context
from tests.bus.test_journal_replay import RUN_A, _fill
from tests.helpers import free_tcp_endpoint

HOSTILE = b'{"schema":1,"id":"x","from_seq":9223372036854775808}'


@pytest.fixture
def server(tmp_path):
    j = Journal(tmp_path / "j.db", shared=True)
    _fill(j, RUN_A, range(1, 11))
    srv = ReplayServer(free_tcp_endpoint(), tmp_path / "j.db", lambda: (RUN_A, 10))
    srv.start()
    yield srv
    srv.stop()
    j.close()


@pytest.fixture
def dealer(server):
    sock = context().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    yield sock
    sock.close(0)


def ask(sock: zmq.Socket[bytes], body: bytes, timeout_ms: int = 2000) -> list[bytes]:
    sock.send_multipart([b"", body])
    assert sock.poll(timeout_ms), f"no answer to {body[:80]!r}"
    frames = sock.recv_multipart()
    assert frames[0] == b""
    return frames[1:]


def valid(req_id: str = "ok", from_seq: int = 3) -> bytes:
    return json.dumps({"schema": 1, "id": req_id, "from_seq": from_seq, "to_seq": 5}).encode()


def test_the_hostile_frame_gets_an_error_naming_its_id_and_replay_keeps_answering(server, dealer):
    head = json.loads(ask(dealer, HOSTILE)[0])
    assert head["status"] == "bad_request"
    assert head["id"] == "x"
    assert "from_seq" in head["error"]
    frames = ask(dealer, valid())
    assert json.loads(frames[0])["status"] == "ok"
    assert [json.loads(p)["seq"] for p in frames[1:]] == [3, 4, 5]
    assert server.invalid == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("from_seq", "1"),
        ("from_seq", True),
        ("from_seq", 1.0),
        ("from_seq", 0),
        ("from_seq", -1),
        ("from_seq", 2**63),
        ("from_seq", 10**400),
        ("from_seq", None),
        ("to_seq", "5"),
        ("to_seq", False),
        ("to_seq", 0),
        ("to_seq", 2**63),
        ("limit", "10"),
        ("limit", True),
        ("limit", 0),
        ("limit", 1001),
        ("schema", True),
        ("schema", "1"),
        ("schema", 2),
        ("run_id", 5),
        ("run_id", "A" * 32),
        ("id", 7),
        ("id", ""),
        ("id", "y" * 65),
        ("extra", 1),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_each_field_is_checked_for_type_and_range(server, dealer, field, value):
    req: dict[str, object] = {"schema": 1, "id": "req-7", "from_seq": 1, field: value}
    head = json.loads(ask(dealer, json.dumps(req).encode())[0])
    assert head["status"] == "bad_request"
    assert head["error"].startswith(f"{field}: "), head["error"]
    readable = field != "id"
    assert head["id"] == ("req-7" if readable else "?")
    assert json.loads(ask(dealer, valid())[0])["status"] == "ok"


def test_an_unreadable_id_is_answered_with_a_question_mark(server, dealer):
    for body in (b"{not json", b'["x"]', b'{"id": 5}', b"\xff\xfe", b"[" * 60_000):
        head = json.loads(ask(dealer, body)[0])
        assert (head["status"], head["id"]) == ("bad_request", "?")
    head = json.loads(ask(dealer, b'{"id": "mine", "from_seq": "1"}')[0])
    assert head["id"] == "mine"
    assert head["error"] == "schema: Field required; from_seq: Input should be a valid integer"


def test_a_flood_of_bad_requests_is_counted_and_logged_rate_limited(server, dealer, monkeypatch):
    log.configure("info", "json")  # before the capture: no line in the defaults' format
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    for i in range(300):
        dealer.send_multipart([b"", b'{"id":"z","from_seq":"%d"}' % i])
        dealer.send_multipart([b"no-envelope"])
    for _ in range(300):
        assert dealer.poll(2000)
        dealer.recv_multipart()
    assert json.loads(ask(dealer, valid())[0])["status"] == "ok"
    deadline = time.monotonic() + 2
    while server.invalid < 600 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.invalid == 600
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    warnings = [x for x in lines if x["level"] == "warning"]
    assert [x["event"] for x in warnings] == ["replay_bad_request", "replay_bad_envelope"]
    assert warnings[0]["count"] == 1


def test_a_request_that_fails_inside_is_an_error_reply_and_the_loop_goes_on(tmp_path):
    """A fault no request should cause (here: the daemon's position raising once)."""
    j = Journal(tmp_path / "j.db", shared=True)
    _fill(j, RUN_A, range(1, 11))
    calls = iter([RuntimeError("position unavailable")])

    def current() -> tuple[str, int]:
        fault = next(calls, None)
        if fault is not None:
            raise fault
        return RUN_A, 10

    srv = ReplayServer(free_tcp_endpoint(), tmp_path / "j.db", current)
    srv.start()
    sock = context().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(srv.endpoint)
    try:
        head = json.loads(ask(sock, valid("first"))[0])
        assert (head["status"], head["id"], head["error"]) == ("error", "first", "internal error")
        assert json.loads(ask(sock, valid("second"))[0])["status"] == "ok"
        assert srv.failures.count == 1
    finally:
        sock.close(0)
        srv.stop()
        j.close()
