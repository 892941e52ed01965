"""Bad HMI parameters are 400 naming the parameter; a failing request is one JSON log line."""

from __future__ import annotations

import io
import json
import sys
import time
import urllib.error
import urllib.request

import pytest
import zmq
from starlette.requests import Request
from starlette.responses import Response

from linevision import log
from linevision.bus.wire import context
from linevision.config import HmiConfig
from linevision.hmi.server import HmiServer
from tests.bus.test_hostile_messages import HOSTILE
from tests.daemon.parts import free_port
from tests.helpers import free_tcp_endpoint

RUN = "ab" * 16


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def hmi(tmp_path):
    log.configure("info", "json")
    (tmp_path / "archive").mkdir()
    port = free_port()
    server = HmiServer(
        HmiConfig(listen=f"127.0.0.1:{port}"), free_tcp_endpoint(), tmp_path / "archive"
    )

    async def boom(_request: Request) -> Response:
        msg = "a bug in a handler"
        raise ZeroDivisionError(msg)

    server.app.add_route("/boom", boom)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("1.jpg?t=" + "9" * 35, "t"),
        ("1.jpg?t=9223372036854775808", "t"),
        ("1.jpg?t=-1", "t"),
        ("1.jpg?t=1e9", "t"),
        ("1.jpg?t=%C2%B2", "t"),  # superscript two: str.isdigit() says yes, int() says no
        ("1.jpg?t=", "t"),
        ("1.jpg", "t"),
        ("0.jpg?t=1", "seq"),
        ("9223372036854775808.jpg?t=1", "seq"),
        ("1" + "0" * 40 + ".jpg?t=1", "seq"),
    ],
)
def test_bad_image_parameters_are_400_naming_the_parameter(hmi, query, param):
    status, body = get(f"{hmi}/img/pole_piece/{RUN}/{query}")
    assert status == 400, body
    reply = json.loads(body)
    assert reply["param"] == param
    assert reply["error"].startswith(f"{param}: ")
    status, body = get(f"{hmi}/healthz")
    assert status == 200
    assert json.loads(body)["bad_requests"] == 1


def test_a_valid_time_without_an_image_is_404_and_a_long_station_is_not_500(hmi):
    assert get(f"{hmi}/img/pole_piece/{RUN}/1.jpg?t=1700000000000000000")[0] == 404
    assert get(f"{hmi}/img/{'a' * 300}/{RUN}/1.jpg?t=1")[0] == 404


def test_a_failing_request_is_one_json_log_event(hmi, capsys):
    status, body = get(f"{hmi}/boom")
    assert status == 500
    assert json.loads(body) == {"error": "internal error"}
    assert get(f"{hmi}/healthz")[0] == 200
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]  # all JSON
    failed = [x for x in lines if "ZeroDivisionError" in json.dumps(x)]
    assert len(failed) == 1
    assert failed[0]["event"] == "hmi_request_failed"
    assert failed[0]["path"] == "/boom"
    assert "Traceback" in failed[0]["exception"]


def test_the_standard_library_logs_as_one_json_line(monkeypatch):
    log.configure("info", "json")  # before the capture: no line in the defaults' format
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    import logging  # noqa: PLC0415  (the standard library's own logger, as uvicorn uses it)

    try:
        _ = 1 / 0
    except ZeroDivisionError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    (line,) = out.getvalue().splitlines()
    rec = json.loads(line)
    assert (rec["event"], rec["level"], rec["logger"]) == (
        "Exception in ASGI application",
        "error",
        "uvicorn.error",
    )
    assert "ZeroDivisionError" in rec["exception"]


def test_the_hmi_feed_survives_hostile_messages(tmp_path):
    endpoint = free_tcp_endpoint()
    pub = context().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    port = free_port()
    server = HmiServer(HmiConfig(listen=f"127.0.0.1:{port}"), endpoint, None)
    server.start()
    beat = {"schema": 1, "run_id": RUN, "seq": 0, "t_ns": 1, "stations": {}, "cameras": {}}
    try:
        deadline = time.monotonic() + 5
        while server.feed.invalid == 0 and time.monotonic() < deadline:
            pub.send_multipart([b"heartbeat", b"{"])
            time.sleep(0.05)
        n0 = server.feed.invalid
        for frames in HOSTILE:
            pub.send_multipart(frames)
        pub.send_multipart([b"heartbeat", json.dumps(beat).encode()])
        while server.state.snapshot()["run_id"] is None and time.monotonic() < deadline + 5:
            time.sleep(0.02)
        assert server.state.snapshot()["run_id"] == RUN
        assert server.feed.invalid == n0 + len(HOSTILE)
        assert server.feed._thread.is_alive()
    finally:
        server.stop()
        pub.close()


def post(url: str, body: bytes, content_type: str | None = "application/json") -> tuple[int, bytes]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


ACK_BAD = [
    (b'{"alarm": "daemon_down", "operator": "Ana"}', "text/plain", "body"),
    (b"{not json", "application/json", "body"),
    (b'["daemon_down", "Ana"]', "application/json", "body"),
    (b'{"alarm": "daemon_down", "operator": "Ana", "x": 1}', "application/json", "x"),
    (b'{"operator": "Ana"}', "application/json", "alarm"),
    (b'{"alarm": 7, "operator": "Ana"}', "application/json", "alarm"),
    (b'{"alarm": "daemon_down", "operator": 7}', "application/json", "operator"),
    (b'{"alarm": "daemon_down", "operator": "  "}', "application/json", "operator"),
    (b'{"alarm": "daemon_down", "operator": "<script>"}', "application/json", "operator"),
    (b'{"alarm": "daemon_down", "operator": "' + b"a" * 65 + b'"}', "application/json", "operator"),
    (b'{"alarm": "low_yield:nowhere", "operator": "Ana"}', "application/json", "alarm"),
    (
        b'{"alarm": "daemon_down", "operator": "Ana", "pad": "' + b"x" * 5000 + b'"}',
        "application/json",
        "body",
    ),
]


def test_an_acknowledgement_is_validated_and_recorded(hmi):
    deadline = time.monotonic() + 10
    while True:  # no daemon on the bus: daemon_down after 3.5 s
        state = json.loads(get(f"{hmi}/api/state")[1])
        if any(a["key"] == "daemon_down" for a in state["alarms"]):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    for n, (body, kind, param) in enumerate(ACK_BAD, start=1):
        status, reply = post(f"{hmi}/api/alarms/ack", body, kind)
        assert status == 400, (body, reply)
        assert json.loads(reply)["param"] == param, body
        assert json.loads(get(f"{hmi}/healthz")[1])["bad_requests"] == n
    status, reply = post(f"{hmi}/api/alarms/ack", b'{"alarm": "daemon_down", "operator": "Ana"}')
    assert status == 200
    acked = json.loads(reply)["alarm"]["acked"]
    assert acked["by"] == "Ana"
    assert abs(acked["at"] / 1000 - time.time()) < 30
    state = json.loads(get(f"{hmi}/api/state")[1])
    (alarm,) = [a for a in state["alarms"] if a["key"] == "daemon_down"]
    assert alarm["acked"]["by"] == "Ana"
    assert state["acks"][0]["by"] == "Ana"
    assert get(f"{hmi}/api/alarms/ack")[0] == 405  # a GET acknowledges nothing


def test_a_picture_that_is_not_there_is_said_so_not_404(hmi):
    status, body = get(f"{hmi}/api/picture/pole_piece/{RUN}/5?t=1700000000000000000")
    assert status == 200
    reply = json.loads(body)
    assert reply["picture"] is None
    assert "no picture" in reply["why"]
    assert get(f"{hmi}/api/picture/pole_piece/{RUN}/0?t=1")[0] == 400
    assert get(f"{hmi}/api/picture/pole_piece/{RUN}/5?t=x")[0] == 400
    assert get(f"{hmi}/img/pole_piece/{RUN}/5-d9.jpg?t=1")[0] == 404
