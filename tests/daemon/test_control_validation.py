"""The control socket answers every request, refuses bad ones by field, and never stops."""

from __future__ import annotations

import io
import json
import sys

import pytest
import zmq

from linevision import log
from linevision.bus.wire import context
from linevision.daemon.control import ControlServer, request
from tests.helpers import free_tcp_endpoint


def _switch(req: dict[str, object]) -> dict[str, object]:
    if req["name"] == "boom":
        msg = "no recipe 'boom'"
        raise FileNotFoundError(msg)
    return {"recipe": req["name"]}


@pytest.fixture
def control():
    server = ControlServer(
        free_tcp_endpoint(),
        {
            "status": lambda _req: {"seq": 7},
            "recipe.reload": lambda _req: {"recipe": None},
            "recipe.switch": _switch,
        },
    )
    server.start()
    yield server
    server.stop()


def _req_socket(endpoint: str) -> zmq.Socket[bytes]:
    sock = context().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def ask_frames(endpoint: str, frames: list[bytes]) -> dict[str, object]:
    sock = _req_socket(endpoint)
    try:
        sock.send_multipart(frames)
        assert sock.poll(2000), f"no answer to {frames!r:.80}"
        reply = json.loads(sock.recv())
    finally:
        sock.close(0)
    assert isinstance(reply, dict)
    return reply


def status_ok(endpoint: str) -> bool:
    return request(endpoint, {"cmd": "status"}, timeout_s=2.0) == {"ok": True, "seq": 7}


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([b"{not json"], "request is not UTF-8 JSON"),
        ([b"\xff\xfe{}"], "request is not UTF-8 JSON"),
        ([b"[" * 50_000], "request is not UTF-8 JSON"),
        ([b"1" * 5000], "request is not UTF-8 JSON"),
        ([b"[1]"], "request must be a JSON object"),
        ([b'{"cmd": ["status"]}'], "cmd: must be a string"),
        ([b'{"cmd": "status", "x": 1}'], "x: status takes no such field"),
        ([b'{"cmd": "recipe.switch"}'], "name: must be a string"),
        ([b'{"cmd": "recipe.switch", "name": 5}'], "name: must be a string"),
        ([b'{"cmd": "recipe.switch", "name": true}'], "name: must be a string"),
        ([b'{"cmd": "nope"}'], "cmd: unknown command 'nope'"),
        ([b'{"cmd": "status"}', b"second"], "a request is one frame, got 2"),
        ([b"", b'{"cmd": "status"}'], "a request is one frame, got 2"),
        ([b'{"cmd": "recipe.switch", "name": "boom"}'], "no recipe 'boom'"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_bad_requests_get_an_error_naming_the_field_and_the_socket_keeps_answering(
    control, frames, error
):
    reply = ask_frames(control.endpoint, frames)
    assert reply["ok"] is False
    assert str(reply["error"]).startswith(error), reply
    assert status_ok(control.endpoint)
    assert control._thread.is_alive()


def test_a_flood_of_bad_requests_is_counted_and_logged_rate_limited(control, monkeypatch):
    log.configure("info", "json")  # before the capture: no line in the defaults' format
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    sock = _req_socket(control.endpoint)
    try:
        for i in range(200):
            sock.send(b'{"cmd": %d}' % i)
            assert sock.poll(2000)
            sock.recv()
    finally:
        sock.close(0)
    assert status_ok(control.endpoint)
    assert control.bad_input.count == 200
    warnings = [x for x in map(json.loads, out.getvalue().splitlines()) if x["level"] == "warning"]
    assert [x["event"] for x in warnings] == ["control_bad_request"]
