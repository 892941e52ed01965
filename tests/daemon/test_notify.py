"""systemd notify protocol: READY after cameras and models, WATCHDOG pings, a stall stops them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from linevision.daemon.notify import notify, watchdog_interval_s
from linevision.daemon.operations import Operations
from tests.daemon.parts import ops_config


class NotifySocket:
    """The systemd end: a unix datagram socket that records every message with its time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, text: str, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for t, m in list(self.messages):
                if text in m.splitlines():
                    return t
            time.sleep(0.02)
        return None

    def wait_for_prefix(self, prefix: str, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(m.startswith(prefix) for _, m in list(self.messages)):
                return time.monotonic()
            time.sleep(0.05)
        return float("inf")

    def count(self, text: str, since: float, until: float | None = None) -> int:
        end = until if until is not None else float("inf")
        return sum(
            1 for t, m in list(self.messages) if since <= t <= end and text in m.splitlines()
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_notify_reaches_path_and_abstract_sockets(tmp_path):
    ns = NotifySocket(tmp_path / "n.sock")
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind(f"\0linevision-test-{os.getpid()}")
    abstract.settimeout(2)
    try:
        assert notify("READY=1", str(tmp_path / "n.sock"))
        assert ns.wait_for("READY=1", 2) is not None
        assert notify("WATCHDOG=1", f"@linevision-test-{os.getpid()}")
        assert abstract.recv(100) == b"WATCHDOG=1"
        assert not notify("READY=1", "")
    finally:
        abstract.close()
        ns.close()
    assert (
        watchdog_interval_s({"WATCHDOG_USEC": "300000", "WATCHDOG_PID": str(os.getpid())}) == 0.15
    )
    assert watchdog_interval_s({}) is None


def test_ready_after_cameras_watchdog_pings_and_stall_stops_them(
    tmp_path, models, frames, monkeypatch
):
    ns = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(ns.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    cfg = ops_config(tmp_path, frames, metrics={"enabled": False})
    ops = Operations(cfg, models, stall_s=0.6)
    svc = ops.make_service()
    stop = threading.Event()
    release = threading.Event()
    try:
        ops.start()
        svc.start()
        assert ns.count("READY=1", 0) == 0
        assert ops.ready(stop, camera_timeout_s=10)
        t_ready = ns.wait_for("READY=1", 2)
        assert t_ready is not None
        assert {c.stats().state for c in svc.cameras.values()} == {"running"}
        assert all(b.warm_up_ms > 0 for b in svc.built.values())

        time.sleep(1.0)
        pings = ns.count("WATCHDOG=1", t_ready)
        assert pings >= 6, ns.messages

        worker = svc.stations["pole_piece"]
        real_inspect = worker.station.inspect

        def stuck(frame):
            release.wait(10)
            return real_inspect(frame)

        worker.station.inspect = stuck
        t_stall = time.monotonic()
        t_withheld = ns.wait_for_prefix("STATUS=pipeline stalled", 5)
        assert t_withheld - t_stall < 3
        stalled = [m for _, m in ns.messages if "pipeline stalled" in m]
        assert "station pole_piece: loop stalled" in stalled[0]
        time.sleep(1.0)
        assert ns.count("WATCHDOG=1", t_withheld + 0.05) == 0
        assert ops.watchdog is not None
        assert ops.watchdog.withheld >= 3

        worker.station.inspect = real_inspect
        release.set()
        t_release = time.monotonic()
        time.sleep(1.0)
        assert ns.count("WATCHDOG=1", t_release) >= 3
    finally:
        release.set()
        ops.stopping()
        svc.stop()
        ops.close()
        ns.close()
    assert any(m == "STOPPING=1" for _, m in ns.messages)


def test_run_command_notifies_reloads_on_sighup_and_stops(tmp_path, models, frames):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "a.yaml").write_text("name: a\nstations:\n  pole_piece:\n    model: tiny\n")
    (recipes / "b.yaml").write_text("name: b\nstations:\n  pole_piece:\n    model: tiny_inv\n")
    cfg = ops_config(tmp_path, frames, recipes={"dir": str(recipes), "active": "a"})
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    ns = NotifySocket(tmp_path / "notify.sock")
    state = tmp_path / "state"
    env = dict(
        os.environ,
        NOTIFY_SOCKET=str(ns.path),
        WATCHDOG_USEC="400000",
        STATE_DIRECTORY=str(state),
    )
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "linevision",
            "run",
            "--config",
            str(cfg_file),
            "--models",
            str(models),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t_ready = ns.wait_for("READY=1", 30)
        assert t_ready is not None, ns.messages
        time.sleep(0.6)
        assert ns.count("WATCHDOG=1", t_ready) >= 2
        state.mkdir(exist_ok=True)
        (state / "active_recipe").write_text("b\n")
        proc.send_signal(signal.SIGHUP)
        assert ns.wait_for("RELOADING=1", 10) is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("recipe b" in m for _, m in ns.messages):
            time.sleep(0.05)
        assert any("READY=1" in m and "recipe b" in m for _, m in ns.messages), ns.messages
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert '"event": "recipe_switched"' in out
        assert ns.wait_for("STOPPING=1", 1) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
        ns.close()
