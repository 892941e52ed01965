"""A new consumer's first contact: the live stream (the PLC bridge) or the whole current run
as far as the journal holds it (the MQTT bridge, ``from_run_start``)."""

from __future__ import annotations

import time

from linevision.bridges.config import SourceConfig
from linevision.bridges.subscriber import Event, Lost, VerdictStream
from linevision.bus.wire import VerdictMessage
from tests.bridges.daemon_sim import Daemon
from tests.bridges.harness import BridgeThread
from tests.helpers import free_tcp_endpoint


def joined(daemon: Daemon, *, from_run_start: bool) -> list[Event]:
    assert daemon.replay is not None
    cfg = SourceConfig(verdicts=daemon.publisher.endpoint, replay=daemon.replay.endpoint)
    got: list[Event] = []

    async def sink(ev: Event) -> None:
        got.append(ev)

    stream = VerdictStream(cfg, sink, from_run_start=from_run_start)
    t = BridgeThread(stream.run).start()
    time.sleep(1.0)  # a few heartbeats
    t.stop()
    return got


def test_a_new_stream_from_the_run_start_fetches_what_came_before_it(tmp_path):
    daemon = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "j.db").start()
    try:
        daemon.stream(1, 30, rate_hz=None)
        daemon.wait_sent(30)
        live = joined(daemon, from_run_start=False)
        whole = joined(daemon, from_run_start=True)
    finally:
        daemon.stop()
    assert [e for e in live if isinstance(e, VerdictMessage)] == []
    assert [e.seq for e in whole if isinstance(e, VerdictMessage)] == list(range(1, 31))
    assert not [e for e in whole if isinstance(e, Lost)]
