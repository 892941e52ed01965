"""The challenge: master samples with known verdicts through the live stations.

A run sends every sample of a station's challenge folder through the live station as a
challenge cell (:mod:`linevision.lifecycle.inject`) and passes when every sample got its
expected verdict from the model (a fail-safe NG such as ``timeout`` proves nothing and is
tried again, up to ``challenge.retries`` times). Runs start from ``linevision challenge run``
(control ``challenge.run``), at the configured times (``challenge.at``), at the daemon's start
and after a switch of recipe or model (``on_start``, ``on_switch``), and on the PLC's request
(the PLC bridge asks the control socket).

A station is *verified* while its last run passed, on the model and recipe in force, and is
not overdue (:func:`linevision.lifecycle.schedule.overdue`). The heartbeat carries, per
station, ``verified`` and ``challenge`` (``none``, ``pending``, ``passed``, ``failed``,
``overdue``), which the PLC bridge turns into the "vision verified" status bit; a failed or an
overdue station raises the daemon alarm ``challenge_failed`` or ``challenge_overdue``. Every
run is published on ``challenge.<station>`` and kept as a JSON file in the archive
(``challenge/<date>/<station>-<time>-<id>.json``); the last run of each station is kept in the
state folder (``challenge.json``), so a restart keeps a station verified.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from linevision.bus.lifecycle import (
    CHALLENGE_PREFIX,
    ChallengeRunMessage,
    SampleResult,
    Trigger,
)
from linevision.bus.wire import SCHEMA, WireModel
from linevision.lifecycle.host import Host, LiveStation
from linevision.lifecycle.inject import Injector, worker_for
from linevision.lifecycle.jobs import JobThread
from linevision.lifecycle.samples import MasterSample, SampleError, check_masters, load_samples
from linevision.lifecycle.schedule import overdue, slot_crossed
from linevision.lifecycle_config import ChallengeConfig
from linevision.log import get_logger
from linevision.scheduler.worker import StationWorker
from linevision.types import FAULT_REASONS

log = get_logger(__name__)

STATE_FILE = "challenge.json"
ARCHIVE = "challenge"


def write_json(path: Path, data: object) -> None:
    """Atomically: a crash leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)


def _local_now() -> datetime:
    return datetime.now()  # noqa: DTZ005  (the plant's times are local)


def _local(t_ns: int) -> datetime:
    return datetime.fromtimestamp(t_ns / 1e9)  # noqa: DTZ006  (the plant's times are local)


class ChallengeManager(Collector):
    """Challenge runs of every station of one daemon, and whether each is verified."""

    def __init__(
        self, host: Host, cfg: ChallengeConfig, injector: Injector, jobs: JobThread
    ) -> None:
        self.host = host
        self.cfg = cfg
        self.injector = injector
        self.jobs = jobs
        self._lock = threading.Lock()
        self._state_path = host.state_dir / STATE_FILE
        self._last = self._load()
        self._records: dict[str, dict[str, object]] = {}
        self._queued: dict[str, str] = {}
        self._running: dict[str, list[object]] = {}
        self._seen: dict[str, tuple[str, str | None]] = {}
        self._since: dict[str, int] = {}
        self._alarms: dict[str, list[str]] = {}
        self._started = False
        self._last_tick: datetime | None = None
        self.runs: Counter[tuple[str, str]] = Counter()
        self.clock: Callable[[], datetime] = _local_now
        """The plant's local time (the schedule's clock)."""
        jobs.add_tick(self.tick)

    # -- requests -----------------------------------------------------------------------

    def configured(self, station: str) -> bool:
        return self.host.live(station).config.challenge is not None

    def request(
        self, station: str | None, trigger: Trigger, user: str | None = None
    ) -> dict[str, str]:
        """Queue a run of ``station`` (None: every station with a challenge folder); the
        run id per station (a run already queued or running is not queued twice)."""
        names = self.host.station_names()
        if station is not None and station not in names:
            msg = f"station: unknown station {station!r} (stations: {', '.join(names)})"
            raise ValueError(msg)
        if station is not None and not self.configured(station):
            msg = (
                f"station {station!r} has no challenge folder "
                "(stations.challenge in the configuration, or challenge in the recipe)"
            )
            raise ValueError(msg)
        wanted = [station] if station is not None else [n for n in names if self.configured(n)]
        if not wanted:
            msg = "no station has a challenge folder"
            raise ValueError(msg)
        ids: dict[str, str] = {}
        with self._lock:
            for name in wanted:
                running = self._running.get(name)
                existing = self._queued.get(name) or (None if running is None else str(running[0]))
                if existing is not None:
                    ids[name] = existing
                    continue
                run_id = uuid.uuid4().hex
                self._queued[name] = run_id
                ids[name] = run_id
                self.jobs.submit(functools.partial(self._run, name, run_id, trigger, user))
        log.info("challenge_requested", stations=wanted, trigger=trigger, user=user)
        return ids

    # -- state --------------------------------------------------------------------------

    def state_of(self, station: str, now: datetime | None = None) -> str:
        """``none``, ``pending``, ``passed``, ``failed`` or ``overdue`` (see the module)."""
        live = self.host.live(station)
        if live.config.challenge is None:
            return "none"
        now = now or self.clock()
        key = (live.worker.station.model.sha256, live.recipe)
        last = self._last.get(station)
        current = last is not None and (last.get("model_sha256"), last.get("recipe")) == key
        grace = timedelta(minutes=self.cfg.grace_min)
        if last is None or not current:
            since = self._since.get(station)
            late = since is not None and now - _local(since) > grace
            return "overdue" if late else "pending"
        if not last.get("passed"):
            return "failed"
        max_age = None if self.cfg.max_age_h is None else timedelta(hours=self.cfg.max_age_h)
        if overdue(_local(int(str(last["t_ns"]))), now, self.cfg.at, grace, max_age):
            return "overdue"
        return "passed"

    def station_fields(self) -> dict[str, dict[str, object]]:
        """Per station, for the heartbeat: ``verified``, ``challenge``, ``challenge_running``."""
        out: dict[str, dict[str, object]] = {}
        now = self.clock()
        with self._lock:
            running = set(self._running)
        for name in self.host.station_names():
            state = self.state_of(name, now)
            out[name] = {
                "verified": state == "passed",
                "challenge": state,
                "challenge_running": name in running,
            }
        return out

    def status(self, station: str | None = None) -> dict[str, object]:
        """What ``linevision challenge status`` shows (and ``run`` polls)."""
        names = self.host.station_names() if station is None else (station,)
        out: dict[str, object] = {}
        for name in names:
            state = self.state_of(name)
            with self._lock:
                running = self._running.get(name)
                out[name] = {
                    "state": state,
                    "verified": state == "passed",
                    "queued": self._queued.get(name),
                    "running": None if running is None else running[0],
                    "progress": None if running is None else running[1:],
                    "last": self._last.get(name),
                    "record": self._records.get(name),
                }
        return {"stations": out}

    # -- the periodic check (on the lifecycle thread) ------------------------------------

    def tick(self) -> None:
        now = self.clock()
        if not self.host.station_names():
            return
        names = [n for n in self.host.station_names() if self.configured(n)]
        self._check_switches(names)
        if not self._started:
            self._started = True
            if self.cfg.on_start:
                for name in names:
                    if self.state_of(name, now) != "passed":
                        self._request_quietly(name, "start")
        if self._last_tick is not None and slot_crossed(self._last_tick, now, self.cfg.at):
            for name in names:
                self._request_quietly(name, "schedule")
        self._last_tick = now
        states = {n: self.state_of(n, now) for n in names}
        self._alarm("challenge_failed", sorted(n for n, s in states.items() if s == "failed"))
        self._alarm("challenge_overdue", sorted(n for n, s in states.items() if s == "overdue"))

    def _check_switches(self, names: list[str]) -> None:
        """A new model or recipe in force: it is not verified; run it (``on_switch``)."""
        for name in names:
            live = self.host.live(name)
            key = (live.worker.station.model.sha256, live.recipe)
            seen = self._seen.get(name)
            if seen != key:
                self._seen[name] = key
                self._since[name] = time.time_ns()
                if seen is not None and self.cfg.on_switch:
                    self._request_quietly(name, "switch")

    def _request_quietly(self, station: str, trigger: Trigger) -> None:
        try:
            self.request(station, trigger)
        except ValueError as exc:
            log.warning("challenge_not_started", station=station, trigger=trigger, error=str(exc))

    def _alarm(self, code: str, stations: list[str]) -> None:
        if stations == self._alarms.get(code, []):
            return
        self._alarms[code] = stations
        if stations:
            self.host.raise_alarm(code, stations=stations)
        else:
            self.host.clear_alarm(code)

    # -- a run (on the lifecycle thread) -------------------------------------------------

    def _run(self, station: str, run_id: str, trigger: Trigger, user: str | None) -> None:
        with self._lock:
            self._queued.pop(station, None)
            self._running[station] = [run_id, 0, 0]
        try:
            msg = self._challenge(station, run_id, trigger, user)
        finally:
            with self._lock:
                self._running.pop(station, None)
        self._finish(msg)

    def _progress(self, station: str, done: int, total: int) -> None:
        with self._lock:
            running = self._running.get(station)
            if running is not None:
                running[1:] = [done, total]

    def _challenge(
        self, station: str, run_id: str, trigger: Trigger, user: str | None
    ) -> ChallengeRunMessage:
        live = self.host.live(station)
        model = live.worker.station.model
        folder = live.config.challenge
        started = time.time_ns()
        results: list[SampleResult] = []
        shas: set[str] = set()
        error: str | None = None
        log.info("challenge_started", station=station, id=run_id, trigger=trigger, user=user)
        try:
            assert folder is not None
            samples = load_samples(folder, live.config, live.cameras)
            check_masters(folder, samples)
            worker = worker_for(self.host, live)
        except (SampleError, OSError, ValueError, RuntimeError) as exc:
            error = str(exc)[:1000]
            samples = []
        for i, sample in enumerate(samples):
            if self.jobs.stopping.is_set():
                error = "the daemon stopped during the run"
                break
            self._progress(station, i, len(samples))
            result, sha = self._sample(worker, live, sample)
            results.append(result)
            shas.update(sha)
        if error is None and shas - {model.sha256}:
            error = f"the model changed during the run ({', '.join(sorted(s[:12] for s in shas))})"
        return ChallengeRunMessage(
            schema_=SCHEMA,
            run_id=self.host.run_id,
            id=run_id,
            station=station,
            recipe=live.recipe,
            trigger=trigger,
            user=user,
            model=WireModel(name=model.name, version=model.version, sha256=model.sha256),
            folder=str(folder),
            started_ns=started,
            finished_ns=time.time_ns(),
            passed=error is None and bool(results) and all(r.passed for r in results),
            error=error,
            samples=results,
        )

    def _sample(
        self, worker: StationWorker, live: LiveStation, sample: MasterSample
    ) -> tuple[SampleResult, set[str]]:
        cam = live.cameras[0]
        attempts = 0
        while True:
            attempts += 1
            v = self.injector.inspect(
                worker,
                sample.views,
                tuple(c.id for c in live.cameras),
                line_scan=cam.line_scan is not None,
                strip_period_s=cam.strip_period_s(),
                timeout_s=self.cfg.sample_timeout_s,
            )
            fault = v is None or v.decision.reason in FAULT_REASONS
            if not fault or attempts > self.cfg.retries:
                break
        d = None if v is None else v.decision
        latency = None
        if v is not None and v.stages is not None:
            latency = round((v.stages.decided_mono_ns - v.t_frame_mono_ns) / 1e6, 3)
        result = SampleResult(
            sample=sample.name,
            sha256=sample.sha256,
            expected=sample.expected,
            verdict=None if d is None else d.verdict,
            reason=None if d is None else d.reason,
            label=None if d is None else d.label,
            score=None if d is None else d.score,
            latency_ms=latency,
            attempts=attempts,
            passed=d is not None and not fault and d.verdict == sample.expected,
        )
        sha = set() if d is None or d.model is None or fault else {d.model.sha256}
        return result, sha

    def _finish(self, msg: ChallengeRunMessage) -> None:
        record = msg.model_dump(mode="json", by_alias=True)
        day = _local(msg.started_ns).strftime("%Y-%m-%d")
        stamp = _local(msg.started_ns).strftime("%H%M%S")
        path = self.host.archive_dir / ARCHIVE / day / f"{msg.station}-{stamp}-{msg.id[:8]}.json"
        try:
            write_json(path, record)
        except OSError as exc:
            log.exception("challenge_archive_failed", path=str(path), error=str(exc))
        self.host.send(CHALLENGE_PREFIX + msg.station, msg.model_dump_json(by_alias=True).encode())
        summary: dict[str, object] = {
            "id": msg.id,
            "t_ns": msg.finished_ns,
            "passed": msg.passed,
            "model_sha256": None if msg.model is None else msg.model.sha256,
            "recipe": msg.recipe,
            "trigger": msg.trigger,
            "archive": str(path),
        }
        with self._lock:
            self._last[msg.station] = summary
            self._records[msg.station] = record
            last = dict(self._last)
        self.runs[(msg.station, "passed" if msg.passed else "failed")] += 1
        try:
            write_json(self._state_path, last)
        except OSError as exc:
            log.exception("challenge_state_unwritable", path=str(self._state_path), error=str(exc))
        failed = [r.sample for r in msg.samples if not r.passed]
        event = "challenge_passed" if msg.passed else "challenge_failed"
        log.info(event, station=msg.station, id=msg.id, failed=failed, error=msg.error)

    def _load(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self._state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.exception("challenge_state_unreadable", path=str(self._state_path), error=str(exc))
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, dict) and "t_ns" in v}

    # -- metrics ------------------------------------------------------------------------

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        verified = GaugeMetricFamily(
            "linevision_challenge_verified",
            "1 while the station's last challenge passed on the model in force, in time",
            labels=["station"],
        )
        for name, fields in self.station_fields().items():
            verified.add_metric([name], 1.0 if fields["verified"] else 0.0)
        runs = CounterMetricFamily(
            "linevision_challenge_runs", "Challenge runs", labels=["station", "result"]
        )
        for (name, result), n in sorted(self.runs.items()):
            runs.add_metric([name, result], n)
        yield from (verified, runs)
