"""A real Mosquitto for the tests (Debian's ``mosquitto``), and an independent MQTT subscriber.

``Mosquitto(work).start()`` runs the broker on a free loopback port with a temporary config,
persistence on (saved every second), no limit on the messages queued for a client; ``kill()``
is ``kill -9``; ``start()`` again restarts it on the same port with the same store.

``Subscriber`` is plain paho-mqtt, no project code: a persistent session (clean start off,
a session expiry), QoS 1, every message recorded with the time it arrived.
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.bridges.harness import free_port, wait_for

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def need_mosquitto() -> None:
    if not Path(MOSQUITTO).exists():
        pytest.skip("Debian's mosquitto is not installed (.ci/run installs it)")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    def __init__(self, work: Path, secure: list[str] | None = None) -> None:
        """``secure``: options of a second listener on ``secure_port`` (TLS, passwords);
        the first listener stays plain and anonymous for the test's own subscriber."""
        need_mosquitto()
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.secure_port = free_port()
        self.conf = work / "mosquitto.conf"
        self.log = work / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.secure_port_used = secure is not None
        lines = [
            # run as whoever runs the test (as root mosquitto would switch to its own user,
            # which cannot write the test's private folders)
            f"user {getpass.getuser()}",
            "persistence true",
            f"persistence_location {work}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if secure is not None:
            lines.append("per_listener_settings true")
        lines += [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if secure is not None:
            lines += [f"listener {self.secure_port} 127.0.0.1", *secure]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 15.0) -> Mosquitto:
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while not port_open(self.port) or (
            self.secure_port_used and not port_open(self.secure_port)
        ):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"mosquitto exited: {err} {self.log_text()[-2000:]}")
            assert time.monotonic() < deadline, "mosquitto did not listen"
            time.sleep(0.05)
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """``kill -9``: no clean shutdown, no last save."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


@dataclass
class Received:
    topic: str
    payload: dict[str, Any]
    retain: bool
    user: dict[str, str]
    t_ns: int
    expiry_s: int | None = None
    qos: int = 1


@dataclass
class Subscriber:
    """An independent consumer: plain paho, persistent session, QoS 1."""

    port: int
    client_id: str = "test-consumer"
    topic: str = "linevision/#"
    messages: list[Received] = field(default_factory=list)
    connects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Subscriber:
        from paho.mqtt.client import Client  # noqa: PLC0415
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: PLC0415
        from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
        from paho.mqtt.properties import Properties  # noqa: PLC0415

        c = Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        c.reconnect_delay_set(0.2, 1)

        def on_connect(client, _u, flags, reason, _p):
            self.connects += 1
            if not flags.session_present:
                client.subscribe(self.topic, qos=1)

        def on_message(_c, _u, msg):
            user = dict(getattr(msg.properties, "UserProperty", []) or [])
            body = json.loads(msg.payload)
            expiry = getattr(msg.properties, "MessageExpiryInterval", None)
            got = Received(msg.topic, body, bool(msg.retain), user, time.time_ns(), expiry, msg.qos)
            with self.lock:
                self.messages.append(got)

        c.on_connect = on_connect
        c.on_message = on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect_async("127.0.0.1", self.port, keepalive=5, clean_start=False, properties=props)
        c.loop_start()
        self.client = c
        wait_for(lambda: self.connects >= 1, 15, "the subscriber's connection")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def verdicts(self) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic.endswith("/verdict")]

    def of(self, kind: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic.endswith("/" + kind)]


def dedupe(received: list[Received]) -> dict[str, Any]:
    """Every verdict once per (run_id, seq), in arrival order; duplicates and order per run."""
    seen: set[tuple[str, int]] = set()
    kept: dict[str, list[int]] = defaultdict(list)
    dupes = 0
    for m in received:
        key = (m.payload["run_id"], m.payload["seq"])
        if key in seen:
            dupes += 1
            continue
        seen.add(key)
        kept[key[0]].append(key[1])
    in_order = all(seqs == sorted(seqs) for seqs in kept.values())
    return {
        "received": len(received),
        "duplicates": dupes,
        "runs": dict(kept),
        "in_order": in_order,
    }


def account(published: list[tuple[str, int, str, int]], received: list[Received]) -> dict[str, Any]:
    """``published``: journal rows (run_id, seq, station, cell_id); lost: never received."""
    d = dedupe(received)
    got = {(run, s) for run, seqs in d["runs"].items() for s in seqs}
    want = {(run, seq) for run, seq, _, _ in published}
    cells = Counter((m.payload["run_id"], m.payload["seq"], m.payload["cell_id"]) for m in received)
    wrong_cell = sum(
        1 for run, seq, _, cell in published if (run, seq) in got and (run, seq, cell) not in cells
    )
    return {
        "sent": len(want),
        "received": d["received"],
        "duplicates_removed": d["duplicates"],
        "lost": len(want - got),
        "unknown": len(got - want),
        "in_order": d["in_order"],
        "wrong_cell": wrong_cell,
    }
