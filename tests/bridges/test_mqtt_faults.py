"""Store-and-forward against a real Mosquitto: broker ``kill -9``, bridge ``kill -9``, daemon
restart, broker down while verdicts flow. After each, an independent subscriber (persistent
session, QoS 1) has every journaled verdict once after dropping duplicates on
``(run_id, seq)``, in order per run.

``LINEVISION_MQTT_OUTAGE_S`` sets the broker outage of the last test (default 6 s; the
issue's 60 s run is ``LINEVISION_MQTT_OUTAGE_S=60``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tests.bridges.daemon_sim import Daemon
from tests.bridges.harness import Proc, journal_rows, wait_for, write_yaml
from tests.bridges.mosquitto import Mosquitto, Subscriber, account, dedupe
from tests.helpers import free_tcp_endpoint

OUTAGE_S = float(os.environ.get("LINEVISION_MQTT_OUTAGE_S", "6"))


def bridge_yaml(work: Path, publish: str, replay: str, port: int, **over: Any) -> Path:
    data: dict[str, Any] = {
        "site": "plant1",
        "line": "line1",
        "source": {"verdicts": publish, "replay": replay, "heartbeat_timeout_s": 1.5},
        "report": {"publish": free_tcp_endpoint()},
        "broker": {"host": "127.0.0.1", "port": port, "keepalive_s": 5, "connect_timeout_s": 2},
        "store": {"path": str(work / "outbox.db"), "resend_s": 10},
        "backoff": {"min_s": 0.1, "max_s": 0.5},
        **over,
    }
    return write_yaml(work / "bridge-mqtt.yaml", data)


def start_bridge(work: Path, cfg: Path) -> Proc:
    args = ["-m", "linevision", "bridge", "mqtt", "--config", str(cfg)]
    return Proc(args, work / "bridge.log").start(wait_ready=False)


def received_all(sub: Subscriber, journal: Path, n: int | None = None) -> bool:
    want = len(journal_rows(journal)) if n is None else n
    runs = dedupe(sub.verdicts())["runs"]
    return sum(len(v) for v in runs.values()) >= want


def report(name: str, acct: dict[str, Any], **extra: Any) -> None:
    items = " ".join(f"{k}={v}" for k, v in {**acct, **extra}.items())
    print(f"\nFIGURE mqtt fault {name}: {items}")


def assert_complete(acct: dict[str, Any], sent: int) -> None:
    assert acct["sent"] == sent
    assert acct["lost"] == 0
    assert acct["unknown"] == 0
    assert acct["wrong_cell"] == 0
    assert acct["in_order"]
    assert acct["received"] == sent + acct["duplicates_removed"]


class Line:
    """Broker, subscriber, an in-process daemon and the bridge as its own process."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.broker = Mosquitto(work / "broker").start()
        self.sub = Subscriber(self.broker.port).start()
        self.journal = work / "journal.db"
        self.daemon = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), self.journal).start()
        assert self.daemon.replay is not None
        self.cfg = bridge_yaml(
            work, self.daemon.publisher.endpoint, self.daemon.replay.endpoint, self.broker.port
        )
        self.bridge = start_bridge(work, self.cfg)
        wait_for(lambda: self.sub.of("state"), 20, "the bridge's birth")

    def close(self) -> None:
        self.bridge.terminate()
        self.sub.stop()
        self.daemon.stop()
        self.broker.stop()


def test_broker_killed_and_restarted_mid_stream(tmp_path):
    line = Line(tmp_path)
    try:
        line.daemon.stream(1, 400, rate_hz=200)
        wait_for(lambda: len(line.sub.verdicts()) >= 200, 20, "200 verdicts before the kill")
        line.broker.kill()
        line.daemon.stream(401, 400, rate_hz=200)
        line.broker.start()
        line.daemon.stream(801, 400, rate_hz=200)
        line.daemon.wait_sent(1200)
        wait_for(lambda: received_all(line.sub, line.journal, 1200), 60, "1200 verdicts")
        time.sleep(0.5)
    finally:
        line.close()
    acct = account(journal_rows(line.journal), line.sub.verdicts())
    report("broker-kill", acct, subscriber_connects=line.sub.connects)
    assert_complete(acct, 1200)
    assert line.sub.connects >= 2


def test_bridge_killed_and_restarted_mid_stream(tmp_path):
    line = Line(tmp_path)
    try:
        line.daemon.stream(1, 400, rate_hz=200)
        wait_for(lambda: len(line.sub.verdicts()) >= 150, 20, "150 verdicts before the kill")
        wills = [m for m in line.sub.of("state") if m.payload["status"] == "offline"]
        line.bridge.kill()
        line.daemon.stream(401, 400, rate_hz=200)
        line.bridge = start_bridge(tmp_path, line.cfg)
        line.daemon.stream(801, 400, rate_hz=200)
        line.daemon.wait_sent(1200)
        wait_for(lambda: received_all(line.sub, line.journal, 1200), 60, "1200 verdicts")
        wait_for(
            lambda: (
                len([m for m in line.sub.of("state") if m.payload["status"] == "offline"])
                > len(wills)
            ),
            10,
            "the Will",
        )
        time.sleep(0.5)
    finally:
        line.close()
    acct = account(journal_rows(line.journal), line.sub.verdicts())
    report("bridge-kill", acct)
    assert_complete(acct, 1200)
    will = next(m for m in line.sub.of("state") if m.payload["reason"] == "bridge_lost")
    assert will.payload["run_id"] == line.daemon.run_id
    assert will.payload["stations"]["pole_piece"]["model"]["sha256"] == "ab" * 32


def test_daemon_killed_and_restarted_mid_stream(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    sub = Subscriber(broker.port).start()
    publish, replay, journal = free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db"

    def daemon_proc(first: int, count: int) -> Proc:
        args = ["-m", "tests.bridges.daemon_sim", "--publish", publish, "--replay", replay]
        args += ["--journal", str(journal), "--first-cell", str(first), "--count", str(count)]
        args += ["--rate", "200"]
        return Proc(args, tmp_path / "daemon.log").start()

    # the bridge first: a bridge with an empty outbox starts with the live stream
    bridge = start_bridge(tmp_path, bridge_yaml(tmp_path, publish, replay, broker.port))
    wait_for(lambda: sub.of("state"), 20, "the bridge's birth")
    daemon = daemon_proc(1, 800)
    try:
        wait_for(lambda: len(sub.verdicts()) >= 200, 20, "200 verdicts before the kill")
        daemon.kill()
        time.sleep(0.3)
        daemon = daemon_proc(1001, 400)
        wait_for(lambda: any(m.payload["cell_id"] == 1400 for m in sub.verdicts()), 40, "cell 1400")
        wait_for(lambda: received_all(sub, journal), 30, "every journaled verdict")
        time.sleep(0.5)
    finally:
        bridge.terminate()
        daemon.terminate()
        sub.stop()
        broker.stop()
    rows = journal_rows(journal)
    acct = account(rows, sub.verdicts())
    runs = dedupe(sub.verdicts())["runs"]
    report(
        "daemon-kill", acct, runs=len(runs), never_journaled=800 - sum(r[3] <= 800 for r in rows)
    )
    assert len(runs) == 2
    assert_complete(acct, len(rows))
    for seqs in runs.values():
        assert seqs == list(range(1, len(seqs) + 1))


def test_broker_down_while_verdicts_flow(tmp_path):
    line = Line(tmp_path)
    rate = 100.0
    try:
        line.daemon.stream(1, 200, rate_hz=rate)
        wait_for(lambda: len(line.sub.verdicts()) >= 150, 20, "150 verdicts before the outage")
        line.broker.stop()
        during = round(OUTAGE_S * rate)
        t0 = time.monotonic()
        line.daemon.stream(201, during, rate_hz=rate)
        outage_s = time.monotonic() - t0
        line.broker.start()
        t_back = time.monotonic()
        line.daemon.stream(201 + during, 200, rate_hz=rate)
        total = 400 + during
        line.daemon.wait_sent(total)
        wait_for(lambda: received_all(line.sub, line.journal, total), 120, f"{total} verdicts")
        drained_s = time.monotonic() - t_back
        time.sleep(0.5)
    finally:
        line.close()
    acct = account(journal_rows(line.journal), line.sub.verdicts())
    report(
        "broker-down",
        acct,
        outage_s=round(outage_s, 1),
        backlog=during,
        drained_s=round(drained_s, 1),
    )
    assert_complete(acct, total)
