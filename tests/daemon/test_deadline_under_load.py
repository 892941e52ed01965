"""The deadline contract seen from outside, with the CPU taken by other processes.

The demo service runs pole_piece on its emulated camera with a short deadline while two
processes spin on both cores. An independent SUB socket records every verdict. What the
PLC relies on: no verdict but NG ``timeout`` carries a ``latency_ms`` above the station's
``deadline_ms``, and every triggered cell has exactly one verdict.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import zmq

from linevision.bus.wire import VerdictMessage, context, parse_message
from linevision.config import Config
from linevision.daemon import service as service_module
from linevision.daemon.service import Service
from linevision.tools import demo
from tests.helpers import free_tcp_endpoint

MODELS = Path(__file__).resolve().parents[2] / "models"
DEADLINE_MS = 30.0
RATE_HZ = 20.0
RUN_S = 10.0
HOGS = 2


def _config(images: Path, endpoint: str) -> Config:
    data = demo.demo_config(images, rate_hz=RATE_HZ).model_dump(mode="json")
    data["bus"]["publish"] = endpoint
    data["bus"]["heartbeat_s"] = 0.2
    data["stations"][0]["deadline_ms"] = DEADLINE_MS
    return Config.model_validate(data)


class _Auditor:
    """An independent subscriber: every verdict message, as received.

    ``joined`` is set by a heartbeat with ``seq`` 0: the subscription was in place before the
    first verdict, so nothing was missed at the start.
    """

    def __init__(self, endpoint: str) -> None:
        self.got: list[VerdictMessage] = []
        self.joined = threading.Event()
        self._stop = threading.Event()
        self._sock = context().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.connect(endpoint)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            topic, payload = self._sock.recv_multipart()
            msg = parse_message(topic, payload)
            if isinstance(msg, VerdictMessage):
                self.got.append(msg)
            elif msg.seq == 0:
                self.joined.set()

    def close(self, quiet_s: float = 0.5) -> list[VerdictMessage]:
        time.sleep(quiet_s)
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()
        return self.got


def _hogs() -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(HOGS)]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo.ensure_pole_piece_images(tmp_path_factory.mktemp("demo") / "pp", count=24)


def test_no_verdict_but_timeout_is_late_under_a_cpu_hog(
    images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = free_tcp_endpoint()
    cfg = _config(images, endpoint)
    # the first trigger waits long enough for the auditor to join, even on a busy machine
    monkeypatch.setattr(service_module, "TRIGGER_LEAD_S", 3.0)
    auditor = _Auditor(endpoint)
    service = Service(cfg, models_root=MODELS)
    hogs: list[subprocess.Popen[bytes]] = []
    hogs_ran = False
    try:
        service.start()
        assert auditor.joined.wait(3.0)
        hogs = _hogs()
        time.sleep(RUN_S)
        hogs_ran = bool(hogs) and all(h.poll() is None for h in hogs)
    finally:
        for h in hogs:
            h.kill()
        for h in hogs:
            h.wait(5.0)
        service.stop()
    got = auditor.close()

    late = [
        (m.cell_id, m.verdict, m.reason, m.latency_ms)
        for m in got
        if m.reason != "timeout" and m.latency_ms > DEADLINE_MS
    ]
    assert late == []
    # every triggered cell has exactly one verdict: ids 1..n, none twice, none missing
    cells = [m.cell_id for m in got]
    assert len(cells) == len(set(cells))
    assert sorted(cells) == list(range(1, len(cells) + 1))
    seqs = [m.seq for m in got]
    assert seqs == list(range(1, service.publisher.seq + 1))
    assert len(cells) >= 0.5 * RUN_S * RATE_HZ
    # the hogs spun through the whole run (whether they cost deadlines depends on the
    # machine: a fast idle one meets them all), and verdicts were decided in time
    assert hogs_ran
    reasons = Counter(str(m.reason) for m in got)
    assert reasons.total() > reasons["timeout"], reasons
