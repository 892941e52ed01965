import json
import threading
import time

import pytest
import zmq

from linevision.bus import wire as bus
from linevision.bus.publisher import VerdictPublisher
from linevision.bus.subscriber import RCVHWM, open_sub, subscribe
from linevision.bus.wire import BusMessageError, HeartbeatMessage, VerdictMessage, parse_message
from linevision.types import FAULT_REASONS, Decision, Defect, ModelRef, Verdict, now_ns
from tests.helpers import free_tcp_endpoint

MODEL = ModelRef("pole_piece", "1", "ab" * 32)


def _verdict(station: str, cell: int, ok: bool = True) -> Verdict:
    mono, wall = now_ns()
    d = (
        Decision("OK", None, "Normal", 0.99, model=MODEL, infer_ms=1.0)
        if ok
        else Decision("NG", "defect", "Long", 0.8, (Defect("burr", 0.8, 1, 2, 3, 4),), MODEL, 1.0)
    )
    return Verdict(station, cell, d, wall, mono)


def _collect(endpoint: str, n: int, topics=("verdict.",), timeout_s: float = 5.0, started=None):
    out: list[VerdictMessage | HeartbeatMessage] = []
    invalid: list[BusMessageError] = []

    def run() -> None:
        gen = subscribe(endpoint, topics, timeout_s=timeout_s, on_invalid=invalid.append)
        if started is not None:
            started.set()
        for m in gen:
            out.append(m)
            if len(out) >= n:
                gen.close()
                return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out, invalid


@pytest.fixture
def publisher():
    pub = VerdictPublisher(free_tcp_endpoint(), heartbeat_s=0.2)
    pub.start()
    yield pub
    pub.stop()


def _wait_subscribed(pub: VerdictPublisher) -> None:
    # a SUB socket needs a moment to connect; heartbeats prove the connection is live
    got = next(iter(subscribe(pub.endpoint, ("heartbeat",), timeout_s=3.0)), None)
    assert isinstance(got, HeartbeatMessage)


def test_seq_is_gapless_across_stations_and_threads(publisher):
    reader, out, invalid = _collect(publisher.endpoint, 600, timeout_s=5.0)
    time.sleep(0.3)

    def burst(station: str) -> None:
        for i in range(200):
            publisher.publish(_verdict(station, i, ok=i % 3 != 0))

    threads = [
        threading.Thread(target=burst, args=(s,)) for s in ("pole_piece", "seal_edge", "six_view")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    reader.join(10)
    assert not invalid
    assert len(out) == 600
    seqs = [m.seq for m in out if isinstance(m, VerdictMessage)]
    assert seqs == list(range(seqs[0], seqs[0] + 600))
    assert {m.run_id for m in out} == {publisher.run_id}
    for station in ("pole_piece", "seal_edge", "six_view"):
        cells = [m.cell_id for m in out if isinstance(m, VerdictMessage) and m.station == station]
        assert cells == list(range(200))


def test_verdict_payload_fields(publisher):
    reader, out, _ = _collect(publisher.endpoint, 2)
    time.sleep(0.3)
    publisher.publish(_verdict("pole_piece", 7, ok=False))
    publisher.publish(_verdict("pole_piece", 8, ok=True))
    reader.join(5)
    ng, ok = out
    assert isinstance(ng, VerdictMessage)
    assert isinstance(ok, VerdictMessage)
    assert (ng.verdict, ng.reason, ng.label, ng.cell_id) == ("NG", "defect", "Long", 7)
    assert ng.defects[0].kind == "burr"
    assert (ok.verdict, ok.reason) == ("OK", None)
    assert ng.model is not None
    assert ng.model.sha256 == "ab" * 32
    assert ok.seq == ng.seq + 1
    assert ng.t_publish_ns >= ng.t_frame_ns
    assert 0 <= ng.latency_ms < 5000


def test_heartbeat_carries_state_and_last_seq():
    state = ({"pole_piece": {"queue": 0, "frames": 3}}, {"cam0": {"state": "running"}})
    pub = VerdictPublisher(free_tcp_endpoint(), heartbeat_s=0.1, state=lambda: state)
    pub.start()
    try:
        _wait_subscribed(pub)
        pub.publish(_verdict("pole_piece", 1))
        deadline = time.monotonic() + 3
        beat = None
        for m in subscribe(pub.endpoint, ("heartbeat",), timeout_s=2.0):
            if isinstance(m, HeartbeatMessage) and m.seq >= 1:
                beat = m
                break
            if time.monotonic() > deadline:
                break
        assert beat is not None
        assert beat.seq == 1
        assert beat.run_id == pub.run_id
        assert beat.cameras["cam0"]["state"] == "running"
        assert beat.stations["pole_piece"]["frames"] == 3
    finally:
        pub.stop()


def test_new_run_id_per_publisher():
    a = VerdictPublisher(free_tcp_endpoint())
    b = VerdictPublisher(free_tcp_endpoint())
    assert a.run_id != b.run_id


def test_bind_failure_is_reported():
    pub = VerdictPublisher(free_tcp_endpoint())
    pub.start()
    try:
        clash = VerdictPublisher(pub.endpoint)
        with pytest.raises(RuntimeError, match="cannot bind verdict publisher"):
            clash.start()
    finally:
        pub.stop()


@pytest.mark.parametrize(
    ("topic", "payload", "match"),
    [
        (b"verdict.pole_piece", b"{not json", "malformed"),
        (b"verdict.pole_piece", b'{"schema": 1}', "malformed"),
        (b"verdict.pole_piece", b"\xff\xfe", "malformed"),
        (b"nonsense", b"{}", "unknown topic"),
    ],
)
def test_parse_message_rejects_malformed(topic, payload, match):
    with pytest.raises(BusMessageError, match=match):
        parse_message(topic, payload)


def test_parse_message_rejects_topic_station_mismatch_and_bad_values():
    body = json.loads(bus.verdict_payload(_verdict("pole_piece", 1), "r", 1, 1, 0.5))
    parse_message(b"verdict.pole_piece", json.dumps(body).encode())
    with pytest.raises(BusMessageError, match="does not match station"):
        parse_message(b"verdict.seal_edge", json.dumps(body).encode())
    for field, value in (("verdict", "MAYBE"), ("reason", "bored"), ("seq", 0), ("schema", 2)):
        bad = dict(body, **{field: value})
        with pytest.raises(BusMessageError):
            parse_message(b"verdict.pole_piece", json.dumps(bad).encode())


def test_subscriber_counts_invalid_messages_and_keeps_going():
    endpoint = free_tcp_endpoint()
    sock = bus.context().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    try:
        started = threading.Event()
        reader, out, invalid = _collect(endpoint, 1, started=started)
        started.wait(2)
        time.sleep(0.4)
        sock.send_multipart([b"verdict.pole_piece", b"garbage"])
        sock.send_multipart([b"verdict.pole_piece", b"a", b"b"])
        good = bus.verdict_payload(_verdict("pole_piece", 5), "r", 1, 1, 0.5)
        sock.send_multipart([b"verdict.pole_piece", good])
        reader.join(5)
        assert len(invalid) == 2
        assert len(out) == 1
        assert isinstance(out[0], VerdictMessage)
        assert out[0].cell_id == 5
    finally:
        sock.close()


def test_open_sub_subscribes_to_its_topics_only_with_a_deep_queue():
    endpoint = free_tcp_endpoint()
    pub = bus.context().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    sub = open_sub(bus.context(), endpoint, ("verdict.", "heartbeat"))
    try:
        assert sub.getsockopt(zmq.RCVHWM) == RCVHWM
        assert sub.getsockopt(zmq.LINGER) == 0
        deadline = time.monotonic() + 5
        while not sub.poll(50):  # until the subscription has reached the publisher
            assert time.monotonic() < deadline
            pub.send_multipart([b"alarm.plc", b"{}"])
            pub.send_multipart([b"heartbeat", b"{}"])
        got = set()
        while sub.poll(100):
            got.add(sub.recv_multipart()[0])
        assert got == {b"heartbeat"}
    finally:
        sub.close()
        pub.close()


def _each_field_set_and_unset() -> list[Verdict]:
    """A verdict per reason, and the optional fields each set and unset."""
    mono, wall = now_ns()
    out = []
    for i, reason in enumerate((None, "defect", *FAULT_REASONS)):
        full = i % 2 == 0
        d = Decision(
            "OK" if reason is None else "NG",
            reason,
            label="Normal" if full else None,
            score=1e-5 if full else None,
            defects=(Defect("burr", 0.5, 1, 2, 3, 4), Defect("dent", 1.0, 0, 0, 1, 1))
            if full
            else (),
            model=MODEL if full else None,
            infer_ms=0.123456 if full else None,
        )
        out.append(Verdict("pole_piece", i, d, wall, mono, recipe="r1" if full else None))
    return out


@pytest.mark.parametrize("v", _each_field_set_and_unset())
def test_the_payload_carries_every_field_of_the_verdict(v):
    payload = bus.verdict_payload(v, "ab" * 16, 9, 123, 4.56789)
    msg = parse_message(b"verdict.pole_piece", payload)
    assert isinstance(msg, VerdictMessage)
    d = v.decision
    assert (msg.run_id, msg.seq, msg.station, msg.cell_id) == ("ab" * 16, 9, v.station, v.cell_id)
    assert (msg.verdict, msg.reason, msg.label, msg.score) == (
        d.verdict,
        d.reason,
        d.label,
        d.score,
    )
    assert [(x.kind, x.score, x.x, x.y, x.w, x.h) for x in msg.defects] == [
        (x.kind, x.score, x.x, x.y, x.w, x.h) for x in d.defects
    ]
    want_model = None if d.model is None else (d.model.name, d.model.version, d.model.sha256)
    got_model = None if msg.model is None else (msg.model.name, msg.model.version, msg.model.sha256)
    assert got_model == want_model
    assert (msg.t_frame_ns, msg.t_publish_ns, msg.latency_ms) == (v.t_frame_ns, 123, 4.568)
    assert msg.infer_ms == (None if d.infer_ms is None else round(d.infer_ms, 3))
    assert msg.recipe == v.recipe
    # every field of the schema is written, none is left to a default
    assert set(json.loads(payload)) == {
        f.alias or n for n, f in VerdictMessage.model_fields.items()
    }


def test_a_decision_the_schema_refuses_goes_out_as_a_model_error():
    mono, wall = now_ns()
    bad = Decision("NG", "bored", "Long", 0.8, (Defect("burr", 0.8, 1.5, 2, 3, 4),), MODEL)
    payload = bus.verdict_payload(Verdict("pole_piece", 3, bad, wall, mono), "r", 4, 5, 0.5)
    msg = parse_message(b"verdict.pole_piece", payload)
    assert isinstance(msg, VerdictMessage)
    assert (msg.seq, msg.cell_id, msg.verdict, msg.reason) == (4, 3, "NG", "model_error")
    assert (msg.label, msg.defects, msg.model) == ("invalid decision", [], None)
