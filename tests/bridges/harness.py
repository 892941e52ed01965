"""Helpers for the bridge tests: bridges on a thread, processes, accounting, free ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import yaml
import zmq
import zmq.asyncio

from linevision.bridges.alarms import parse_report
from linevision.bridges.plc_link import run_tag
from linevision.bus.wire import context
from tests.helpers import free_tcp_endpoint

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    return int(free_tcp_endpoint().rsplit(":", 1)[1])


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(step_s)


class BridgeThread:
    """``asyncio.run(factory(stop))`` on a thread; ``stop()`` returns what it returned."""

    def __init__(self, factory: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> None:
        self._factory = factory
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            self.result = await self._factory(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def start(self) -> BridgeThread:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def stop(self, timeout_s: float = 10.0) -> Any:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            # the bridge may return and close its loop in between: nothing left to stop
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "bridge did not stop"
        if self.error is not None:
            raise self.error
        return self.result


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


class Proc:
    """A child process that prints ``ready ...`` once it is up; killed at ``stop``."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self.popen: subprocess.Popen[str] | None = None
        self.first_line = ""

    def start(self, wait_ready: bool = True, timeout_s: float = 20.0) -> Proc:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self._log = self.log_path.open("a")
        self.popen = subprocess.Popen(
            [sys.executable, *self.args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE if wait_ready else self._log,
            stderr=self._log,
            text=True,
        )
        if wait_ready:
            assert self.popen.stdout is not None
            ready = threading.Event()
            threading.Thread(target=self._drain, args=(ready,), daemon=True).start()
            assert ready.wait(timeout_s), f"{self.args} did not start"
        return self

    def _drain(self, ready: threading.Event) -> None:
        assert self.popen is not None
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if not ready.is_set() and line.startswith("ready"):
                self.first_line = line.strip()
                ready.set()
            elif not self._log.closed:
                self._log.write(line)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def terminate(self, timeout_s: float = 10.0) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()
        return int(self.popen.returncode)


def journal_rows(path: Path) -> list[tuple[str, int, str, int]]:
    """``(run_id, seq, station, cell_id)`` of every journaled verdict, in journal order."""
    db = sqlite3.connect(str(path))
    try:
        return list(db.execute("SELECT run_id, seq, station, cell_id FROM verdicts ORDER BY pos"))
    finally:
        db.close()


def read_records(path: Path) -> list[dict[str, int]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def account(
    published: list[tuple[str, int, str, int]], applied: list[dict[str, int]]
) -> dict[str, int]:
    """Every published verdict must be applied by the PLC exactly once."""
    times = Counter((r["tag"], r["seq"]) for r in applied)
    keys = {(run_tag(run), seq): cell for run, seq, _, cell in published}
    lost = sum(1 for k in keys if times[k] == 0)
    twice = sum(1 for k in keys if times[k] > 1)
    unknown = sum(1 for k in times if k not in keys)
    wrong_cell = sum(
        1
        for r in applied
        if (r["tag"], r["seq"]) in keys and keys[(r["tag"], r["seq"])] != r["cell_id"]
    )
    return {
        "published": len(keys),
        "applied": len(applied),
        "lost": lost,
        "applied_twice": twice,
        "unknown": unknown,
        "wrong_cell": wrong_cell,
    }


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100.0 * (len(s) - 1)))]


async def collect_reports(endpoint: str, out: list[Any], stop: asyncio.Event, kind: type) -> None:
    """Validated bridge reports of one kind (AlarmMessage or RejectReport) until ``stop``."""
    sock = zmq.asyncio.Context(context()).socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    try:
        while not stop.is_set():
            if await sock.poll(50):
                topic, payload = await sock.recv_multipart()
                msg = parse_report(topic, payload)
                if isinstance(msg, kind):
                    out.append(msg)
    finally:
        sock.close(0)
