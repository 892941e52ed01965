"""Shared parts of the lifecycle tests: master samples, a daemon run in the test's process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import zmq

from linevision.bus.wire import context
from linevision.config import Config
from linevision.daemon.operations import Operations
from tests.daemon.parts import ops_config

PATIENT_MS = 3000.0
"""The lifecycle tests' station deadline: they check what the lifecycle does, and the shared,
loaded test machine must not turn their cells into fail-safe NGs (the deadline's own tests
are elsewhere)."""


def lifecycle_config(tmp: Path, frames: Path, rate_hz: float = 50.0, **sections: object) -> Config:
    """``ops_config`` (one pole_piece station on the folder camera) with a patient deadline."""
    cfg = ops_config(tmp, frames, rate_hz=rate_hz, **sections)
    station = cfg.stations[0].model_copy(update={"deadline_ms": PATIENT_MS})
    return cfg.model_copy(update={"stations": (station,)})


ROOT = Path(__file__).resolve().parents[2]


def master_folder(folder: Path, ok: int = 3, ng: int = 3, ng_level: int = 200) -> Path:
    """A pole_piece challenge folder: dark Normal masters, bright Long masters (labels.csv)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,label"]
    for i in range(ok + ng):
        bad = i >= ok
        img = np.full((48, 64), ng_level if bad else 40, np.uint8)
        cv2.circle(img, (16 + 5 * i, 24), 6, 90 if bad else 120, -1)
        name = f"{'ng' if bad else 'ok'}_{i}.png"
        assert cv2.imwrite(str(folder / name), img)
        rows.append(f"{name},{'Long' if bad else 'Normal'}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


class BusLog:
    """Every message on the daemon's bus, from before the daemon starts to ``stop``."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.messages: list[tuple[str, bytes]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        sock = context().socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.endpoint)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if sock.poll(50):
                    topic, payload = sock.recv_multipart()
                    self.messages.append((topic.decode(), payload))
        finally:
            sock.close(0)

    def start(self) -> BusLog:
        self._thread.start()
        self._ready.wait(5)
        time.sleep(0.3)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def topics(self, prefix: str) -> list[bytes]:
        return [p for t, p in list(self.messages) if t.startswith(prefix)]


@contextmanager
def running_daemon(cfg: Config, models: Path) -> Iterator[Operations]:
    """The daemon as ``linevision run`` runs it (operations, service, ready), then stopped."""
    ops = Operations(cfg, models)
    svc = ops.make_service()
    stop = threading.Event()
    try:
        ops.start()
        svc.start()
        assert ops.ready(stop, camera_timeout_s=20)
        yield ops
    finally:
        stop.set()
        ops.stopping()
        svc.stop()
        ops.close()


def cli(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "linevision", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        cwd=ROOT,
    )


def wait_for(pred: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
