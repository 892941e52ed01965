"""The daemon's publishing side without cameras: VerdictPublisher + journal + replay server.

In-process: ``Daemon(...).start()``. As a process (killed with SIGKILL by the fault tests):
``python -m tests.bridges.daemon_sim --publish E --replay E --journal F --first-cell N
--count N --rate HZ``; it prints ``ready <run_id>`` once bound and ``done`` after the last cell.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

import structlog

from linevision import log
from linevision.bus import curve as keys
from linevision.bus.journal import Journal
from linevision.bus.publisher import VerdictPublisher
from linevision.bus.replay import ReplayServer
from linevision.types import Decision, ModelRef, Verdict, now_ns

MODEL = ModelRef("pole_piece", "1", "ab" * 32)
STATION = "pole_piece"


def is_ng(cell: int) -> bool:
    return cell % 7 == 3


def verdict(cell: int, station: str = STATION, t_frame_ns: int | None = None) -> Verdict:
    """``t_frame_ns``: the wall-clock capture time (default: now)."""
    mono, wall = now_ns()
    if t_frame_ns is not None:
        wall = t_frame_ns
    d = (
        Decision("NG", "defect", "Long", 0.9, model=MODEL, infer_ms=1.0)
        if is_ng(cell)
        else Decision("OK", None, "Normal", 0.99, model=MODEL, infer_ms=1.0)
    )
    return Verdict(station, cell, d, wall, mono)


class Daemon:
    def __init__(
        self,
        publish: str,
        replay: str | None,
        journal: Path,
        heartbeat_s: float = 0.2,
        key_dir: Path | None = None,
    ) -> None:
        self.journal = Journal(journal, 100_000, shared=True)
        self.publisher = VerdictPublisher(publish, heartbeat_s=heartbeat_s)
        self.auth = None
        curve = None
        if key_dir is not None:
            curve = keys.load_pair(key_dir / "server.key_secret")
            from linevision.bus.wire import context  # noqa: PLC0415

            self.auth = keys.start_authenticator(context(), key_dir / "authorized")
        self.publisher.use_delivery(self.journal, curve)
        self.replay = (
            ReplayServer(replay, journal, self.publisher.current, curve=curve)
            if replay is not None
            else None
        )

    @property
    def run_id(self) -> str:
        return self.publisher.run_id

    def start(self) -> Daemon:
        self.publisher.start()
        if self.replay is not None:
            self.replay.start()
        return self

    def stream(
        self,
        first: int,
        count: int,
        rate_hz: float | None,
        station: str = STATION,
        capture_age_s: float = 0.0,
    ) -> None:
        """Publish cells ``first..first+count-1`` at ``rate_hz`` (None: as fast as possible),
        stamped as captured ``capture_age_s`` before they are sent."""
        t0 = time.monotonic()
        age_ns = int(capture_age_s * 1e9)
        for i in range(count):
            if rate_hz is not None:
                wait = t0 + i / rate_hz - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            self.publisher.publish(verdict(first + i, station, time.time_ns() - age_ns))

    def wait_sent(self, seq: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.publisher.seq < seq:
            assert time.monotonic() < deadline, f"publisher stuck at seq {self.publisher.seq}"
            time.sleep(0.005)

    def stop(self) -> None:
        self.publisher.stop()
        if self.replay is not None:
            self.replay.stop()
        self.journal.close()
        if self.auth is not None:
            self.auth.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--publish", required=True)
    p.add_argument("--replay", required=True)
    p.add_argument("--journal", type=Path, required=True)
    p.add_argument("--first-cell", type=int, default=1)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--capture-age-s", type=float, default=0.0)
    args = p.parse_args()
    log.configure("info", "json")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    d = Daemon(args.publish, args.replay, args.journal).start()
    print("ready", d.run_id, flush=True)
    time.sleep(0.3)
    d.stream(args.first_cell, args.count, args.rate, capture_age_s=args.capture_age_s)
    d.wait_sent(args.count)
    print("done", flush=True)
    stop.wait(60)
    d.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
