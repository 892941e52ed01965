"""Hostile messages on the verdict bus are refused as malformed; no subscriber loop ends on one."""

from __future__ import annotations

import json
import time

import pytest
import zmq

from linevision.bridges.config import SourceConfig
from linevision.bridges.subscriber import VerdictStream
from linevision.bus.wire import (
    BusMessageError,
    VerdictMessage,
    context,
    parse_message,
    verdict_payload,
)
from tests.bridges.daemon_sim import verdict
from tests.bridges.harness import BridgeThread, wait_for
from tests.helpers import free_tcp_endpoint

BEAT = b'{"schema":1,"run_id":"r","seq":%d,"t_ns":1,"stations":{},"cameras":{}}'
HOSTILE = [
    [b"verdict.pole_piece", b"[" * 50_000],  # deeper than json.loads can go
    [b"heartbeat", b'{"schema": 1, "seq": ' + b"9" * 5_000 + b"}"],  # over 4,300 digits
    [b"heartbeat", b"\xff\xfe\x00"],
    [b"verdict.\xff\xfe", b"{}"],
    [b"verdict.pole_piece"],
    [b"heartbeat", b"", b""],
    [b"heartbeat", BEAT % 2**63],  # seq beyond a signed 64-bit number
]


@pytest.mark.parametrize("frames", [f for f in HOSTILE if len(f) == 2], ids=lambda f: repr(f)[:40])
def test_hostile_payloads_are_malformed_messages(frames):
    with pytest.raises(BusMessageError, match="malformed message"):
        parse_message(frames[0], frames[1])


def test_the_bridges_verdict_stream_survives_hostile_messages():
    endpoint = free_tcp_endpoint()
    pub = context().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    good = verdict_payload(verdict(1), "a" * 32, 1, time.time_ns(), 1.0)
    out: list[object] = []

    async def sink(ev):
        out.append(ev)

    stream = VerdictStream(SourceConfig(verdicts=endpoint, replay=None), sink)
    runner = BridgeThread(stream.run).start()
    try:
        deadline = time.monotonic() + 5
        while stream.counters["invalid"] == 0 and time.monotonic() < deadline:
            pub.send_multipart([b"heartbeat", b"{"])
            time.sleep(0.05)
        n0 = stream.counters["invalid"]
        for frames in HOSTILE * 3:
            pub.send_multipart(frames)
        pub.send_multipart([b"verdict.pole_piece", good])
        wait_for(lambda: any(isinstance(e, VerdictMessage) for e in out), 5, "the valid one")
    finally:
        runner.stop()
        pub.close()
    assert stream.counters["invalid"] == n0 + 3 * len(HOSTILE)
    assert [json.loads(good)["seq"]] == [e.seq for e in out if isinstance(e, VerdictMessage)]
