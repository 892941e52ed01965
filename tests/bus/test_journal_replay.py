"""Journal on disk, the replay endpoint, and gap/restart recovery in the verdict stream."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
import zmq

from linevision.bridges.config import SourceConfig
from linevision.bridges.subscriber import Lost, VerdictStream
from linevision.bus.journal import Journal
from linevision.bus.replay import ReplayClient, ReplayError, ReplayServer
from linevision.bus.wire import HeartbeatMessage, VerdictMessage, context, verdict_payload
from tests.bridges.daemon_sim import verdict
from tests.bridges.harness import ROOT
from tests.helpers import free_tcp_endpoint

RUN_A, RUN_B = "a" * 32, "b" * 32


def _payload(run: str, seq: int, cell: int | None = None) -> bytes:
    return verdict_payload(
        verdict(cell if cell is not None else seq), run, seq, time.time_ns(), 1.0
    )


def _fill(journal: Journal, run: str, seqs) -> None:
    journal.begin_run(run)
    for s in seqs:
        journal.append(run, s, "pole_piece", s, _payload(run, s))


def test_journal_reads_ranges_and_stays_bounded(tmp_path):
    with Journal(tmp_path / "j.db", max_entries=500) as j:
        _fill(j, RUN_A, range(1, 2001))
        assert j.count() <= 500 + 1000
        span = j.span(RUN_A)
        assert span is not None
        assert span.last_seq == 2000
        assert span.first_seq > 1
        got = [json.loads(p)["seq"] for p in j.read(RUN_A, 1990, 1995, 100)]
        assert got == list(range(1990, 1996))
        assert j.span(RUN_B) is None
        j.begin_run(RUN_B)
        span_b = j.span(RUN_B)
        assert span_b is not None
        assert span_b.first_seq is None


def test_journal_survives_kill_9_mid_write(tmp_path):
    path = tmp_path / "j.db"
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from linevision.bus.journal import Journal
        j = Journal(Path({str(path)!r}), max_entries=1000)
        j.begin_run({RUN_A!r})
        print("ready", flush=True)
        seq = 0
        while True:
            seq += 1
            j.append({RUN_A!r}, seq, "pole_piece", seq, b'{{"x":' + str(seq).encode() + b'}}' * 20)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready")
        time.sleep(0.7)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with Journal(path) as j:
        span = j.span(RUN_A)
        assert span is not None
        assert span.last_seq is not None
        assert span.last_seq > 100
        seqs = [json.loads(p[: p.index(b"}") + 1])["x"] for p in j.read(RUN_A, 1, None, 10**6)]
        assert seqs == list(range(span.first_seq, span.last_seq + 1))
        j.append(RUN_A, span.last_seq + 1, "pole_piece", 0, b"{}")


@pytest.fixture
def replay_server(tmp_path):
    j = Journal(tmp_path / "j.db", shared=True)
    _fill(j, RUN_A, range(1, 51))
    _fill(j, RUN_B, range(1, 31))
    server = ReplayServer(free_tcp_endpoint(), tmp_path / "j.db", lambda: (RUN_B, 30))
    server.start()
    yield server, j
    server.stop()
    j.close()


def test_replay_serves_ranges_old_runs_and_refuses_bad_requests(replay_server):
    server, _ = replay_server

    async def go():
        c = ReplayClient(server.endpoint)
        try:
            a = await c.fetch(RUN_A, 10, 20, 2.0)
            b = await c.fetch(None, 25, None, 2.0)
            unknown = await c.fetch("c" * 32, 1, None, 2.0)
            return a, b, unknown
        finally:
            c.close()

    a, b, unknown = asyncio.run(go())
    assert [v.seq for v in a.verdicts] == list(range(10, 21))
    assert a.reply.complete
    assert a.reply.last_seq == 50
    assert a.reply.current_run == RUN_B
    assert [v.seq for v in b.verdicts] == list(range(25, 31))
    assert not b.reply.complete
    assert unknown.reply.status == "unknown_run"
    assert unknown.verdicts == []
    sock = context().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    try:
        sock.send_multipart([b"", b"{not json"])
        assert sock.poll(2000)
        head = json.loads(sock.recv_multipart()[1])
        assert head["status"] == "bad_request"
        sock.send_multipart([b"", json.dumps({"schema": 2, "id": "x", "from_seq": 1}).encode()])
        assert sock.poll(2000)
        assert json.loads(sock.recv_multipart()[1])["status"] == "bad_request"
        sock.send_multipart([b"only-one-frame"])  # no envelope: dropped, no answer
        assert not sock.poll(300)
    finally:
        sock.close()
    assert server.invalid == 3


def test_replay_timeout_is_an_error_not_a_hang():
    async def go():
        c = ReplayClient(free_tcp_endpoint())
        try:
            t0 = time.monotonic()
            with pytest.raises(ReplayError):
                await c.fetch(RUN_A, 1, 2, 0.3)
            return time.monotonic() - t0
        finally:
            c.close()

    assert asyncio.run(go()) < 2.0


def _msg(run: str, seq: int, cell: int | None = None) -> VerdictMessage:
    return VerdictMessage.model_validate_json(_payload(run, seq, cell))


def _hb(run: str, seq: int) -> HeartbeatMessage:
    return HeartbeatMessage.model_validate(
        {"schema": 1, "run_id": run, "seq": seq, "t_ns": 0, "stations": {}, "cameras": {}}
    )


def _stream(replay: str | None, resume=None):
    out: list[object] = []

    async def sink(ev):
        out.append(ev)

    cfg = SourceConfig(replay=replay, recover_timeout_s=0.5, replay_timeout_s=0.2)
    return VerdictStream(cfg, sink, resume), out


def _seqs(out):
    return [(e.run_id[0], e.seq) for e in out if isinstance(e, VerdictMessage)]


def test_stream_fills_gaps_and_finishes_the_old_run_after_a_restart(replay_server):
    server, _ = replay_server
    stream, out = _stream(server.endpoint)

    async def go():
        for m in (_msg(RUN_A, 40), _msg(RUN_A, 41), _msg(RUN_A, 44), _msg(RUN_A, 44)):
            await stream.handle(m)
        await stream.handle(_hb(RUN_A, 46))  # 45, 46 were published but not received
        await stream.handle(_msg(RUN_B, 3))  # restart: A 47..50 first, then B 1..2, then 3

    asyncio.run(go())
    expected = [("a", s) for s in range(40, 51)] + [("b", s) for s in (1, 2, 3)]
    assert _seqs(out) == expected
    assert stream.counters["duplicates"] == 1
    assert stream.counters["restarts"] == 1
    assert not [e for e in out if isinstance(e, Lost)]


def test_stream_reports_what_it_cannot_recover():
    stream, out = _stream(free_tcp_endpoint())  # nobody answers there

    async def go():
        await stream.handle(_msg(RUN_A, 1))
        await stream.handle(_msg(RUN_A, 5))
        await stream.handle(_msg(RUN_B, 1))

    asyncio.run(go())
    lost = [e for e in out if isinstance(e, Lost)]
    assert lost[0] == Lost(RUN_A, 2, 4, "not_recovered")
    assert lost[1] == Lost(RUN_A, 6, None, "run_end_unknown")
    assert _seqs(out) == [("a", 1), ("a", 5), ("b", 1)]
    assert stream.counters["lost"] == 3
