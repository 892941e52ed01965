"""systemd's notify protocol, and the watchdog that pings only while the pipeline moves.

``Type=notify`` units get ``$NOTIFY_SOCKET`` (a unix datagram socket, ``@`` for the abstract
namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC``. The daemon sends ``READY=1`` once
its models are warm and every camera is open, then ``WATCHDOG=1`` at half the watchdog period
for as long as :func:`pipeline_problems` finds nothing wrong. A station thread stuck in its
loop, or any supervised thread that died (:mod:`linevision.daemon.supervisor`: bus, deadlines,
pool workers, cameras, replay, control, archive, metrics, HMI), withholds the ping and systemd
restarts the service.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from linevision.log import get_logger

log = get_logger(__name__)

DEFAULT_STALL_S = 5.0


def notify(message: str, socket_path: str | None = None) -> bool:
    """Send one sd_notify datagram; False when there is no socket (not under systemd)."""
    path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(1.0)
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("sd_notify_failed", socket=path, error=str(exc))
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """The ping interval systemd asked for (half of ``WatchdogSec``), or None.

    >>> watchdog_interval_s({"WATCHDOG_USEC": "2000000"})
    1.0
    >>> watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    True
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2e6


class _Alive(Protocol):
    def is_alive(self) -> bool: ...


class _StationLike(_Alive, Protocol):
    @property
    def last_loop_mono(self) -> float: ...


class _Supervised(Protocol):
    def problems(self) -> list[str]: ...


class PipelineLike(Protocol):
    """What the watchdog looks at: :class:`linevision.daemon.service.Service` fits."""

    @property
    def stations(self) -> Mapping[str, _StationLike]: ...
    @property
    def cameras(self) -> Mapping[str, _Alive]: ...
    @property
    def publisher(self) -> _Alive: ...
    @property
    def arbiter(self) -> _Alive: ...
    @property
    def supervisor(self) -> _Supervised: ...


def pipeline_problems(service: PipelineLike, stall_s: float = DEFAULT_STALL_S) -> list[str]:
    """Why the pipeline is not moving; empty when every loop is alive and recent."""
    now = time.monotonic()
    problems: list[str] = []
    for name, worker in service.stations.items():
        if not worker.is_alive():
            problems.append(f"station {name}: thread ended")
        elif now - worker.last_loop_mono > stall_s:
            problems.append(f"station {name}: loop stalled {now - worker.last_loop_mono:.1f} s")
    problems.extend(
        f"camera {cam_id}: thread ended"
        for cam_id, cam in service.cameras.items()
        if not cam.is_alive()
    )
    if not service.publisher.is_alive():
        problems.append("bus: publisher thread ended")
    if not service.arbiter.is_alive():
        problems.append("arbiter: deadline thread ended")
    problems.extend(service.supervisor.problems())
    return problems


class Watchdog:
    """Sends ``WATCHDOG=1`` every ``interval_s`` while ``check()`` returns no problems."""

    def __init__(
        self,
        check: Callable[[], list[str]],
        interval_s: float,
        send: Callable[[str], bool] = notify,
    ) -> None:
        self._check = check
        self._interval = interval_s
        self._send = send
        self._stop = threading.Event()
        self.withheld = 0
        self._thread = threading.Thread(target=self._loop, name="sd-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        last: list[str] = []
        while not self._stop.wait(self._interval):
            try:
                problems = self._check()
            except Exception as exc:
                problems = [f"check failed: {exc!r}"]
            if problems:
                self.withheld += 1
                if problems != last:
                    log.error("watchdog_withheld", problems=problems)
                    self._send("STATUS=pipeline stalled: " + "; ".join(problems)[:400])
            else:
                if last:
                    log.info("watchdog_resumed")
                    self._send("STATUS=running")
                self._send("WATCHDOG=1")
            last = problems


def wait_cameras_open(
    states: Callable[[], dict[str, str]], timeout_s: float, stop: threading.Event
) -> list[str]:
    """Wait until every camera reports ``running``; return those that are not (empty: all)."""
    deadline = time.monotonic() + timeout_s
    while True:
        waiting = sorted(cam for cam, state in states().items() if state != "running")
        if not waiting or time.monotonic() >= deadline or stop.wait(0.05):
            return waiting
