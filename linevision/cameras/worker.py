"""One thread per camera: open, trigger, grab, assign cell ids, reconnect; never blocks.

Every cell the worker knows of ends in the sink exactly once: as a ``Frame`` or as a
``FrameFault`` with its reason (fail-safe NG), never silently skipped.

Cell ids: with trigger ``off``/``hardware`` they are a running count kept across reconnects,
and a jump of k in the camera's frame counter faults the k-1 cells whose frames were lost.
With ``software`` the n-th trigger slot is cell n; slots keep counting while the device is
down. A frame is matched to its trigger through the camera counter relative to the first
frame after each (re)start, so a late frame is dropped rather than given to the next cell.

Line-scan cameras (``line_scan``): each buffer is a strip; buffers are counted as above and
strip n is part ``n % strips_per_cell`` of cell ``n // strips_per_cell`` (counting from 1).
A fault on any strip faults its cell once. With a software trigger the strips of a cell are
triggered one strip period apart, and cells ``1 / rate_hz`` apart.

Frame time: a frame's ``t_mono_ns`` and ``t_wall_ns`` are its capture instant, the one instant
its cell's deadline and its verdict's ``latency_ms`` count from. With a software trigger that
is when the trigger was sent (taken just before sending it). With a hardware trigger or
free-run it is when the buffer arrived: the camera's own timestamp counts on the camera's
clock, not the host's (and pypylon's emulator leaves it 0).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from types import TracebackType
from typing import Literal, Self

from linevision.cameras.base import CameraDriver, CameraError, RawGrab, StreamStats
from linevision.config import CameraConfig
from linevision.log import get_logger
from linevision.types import Backoff, Frame, FrameFault, Reason, now_ns

log = get_logger(__name__)

State = Literal["starting", "running", "reconnecting", "stopped"]
Sink = Callable[[Frame | FrameFault], None]

_MAX_SKIPPED = 10_000
_MIN_GRAB_S = 0.001
_FAULT_COUNTER: dict[Reason, str] = {
    "bad_frame": "bad_frames",
    "timeout": "timeouts",
    "camera_error": "camera_errors",
    "overload": "trigger_overruns",
}


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """A snapshot of one worker's counters.

    ``bad_frames``, ``timeouts``, ``camera_errors`` and ``trigger_overruns`` count cells
    faulted for that reason; ``device_errors`` counts device failures (lost or failed to
    open); ``late_frames`` counts frames dropped because their cell had already been faulted.
    ``stream``: a network camera's stream counters, summed over reconnects (else None).
    """

    state: State = "starting"
    frames: int = 0
    bad_frames: int = 0
    timeouts: int = 0
    camera_errors: int = 0
    trigger_overruns: int = 0
    reconnects: int = 0
    device_errors: int = 0
    triggers: int = 0
    late_frames: int = 0
    unexpected_errors: int = 0
    sink_errors: int = 0
    stream: StreamStats | None = None


@dataclass(frozen=True, slots=True)
class _Pending:
    cell_id: int
    t_trigger: float
    t_capture_mono_ns: int
    """The capture instant: taken just before the trigger was sent (monotonic ns)."""
    t_capture_wall_ns: int


class AcquisitionWorker:
    """Acquires one camera on its own thread and hands Frames and FrameFaults to ``sink``.

    ``sink`` must not block (it is the scheduler's submit). ``stop`` may be shared by
    several workers; ``stop()`` sets it. ``epoch`` (monotonic s) puts software trigger slots
    on a grid shared with other workers (see ``_first_slot``).
    """

    def __init__(
        self,
        cfg: CameraConfig,
        driver_factory: Callable[[], CameraDriver],
        sink: Sink,
        stop: threading.Event | None = None,
        epoch: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.camera_id = cfg.id
        self._factory = driver_factory
        self._sink = sink
        self._stop = stop if stop is not None else threading.Event()
        self._epoch = epoch
        self._software = cfg.trigger.mode == "software"
        self._period = 1.0 / cfg.trigger.rate_hz
        self._parts = cfg.line_scan.strips_per_cell if cfg.line_scan is not None else 1
        self._strip_period = cfg.strip_period_s()
        # a line-scan strip is taken over its lines: its last line when the scan ends
        self._scan_ns = int(self._strip_period * 1e9) if cfg.line_scan is not None else 0
        self._slot_no = 0
        self._faulted_cell = 0
        self._grab_timeout = cfg.grab_timeout_ms / 1000.0
        self._lock = threading.Lock()
        self._stats = WorkerStats()
        self._thread = threading.Thread(target=self._run, name=f"camera-{cfg.id}", daemon=True)
        self._driver: CameraDriver | None = None
        self._ever_opened = False
        self._backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._next_open = 0.0
        self._last_cell = 0
        self._next_slot: float | None = None
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._base: int | None = None
        self._last_counter: int | None = None
        self._stream_before = StreamStats()
        """Stream counters of the drivers closed before the current one."""
        self._stream_now: StreamStats | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,)

    def stats(self) -> WorkerStats:
        with self._lock:
            return self._stats

    def snapshot(self) -> dict[str, object]:
        """The counters and state as a plain dict (for heartbeats and metrics)."""
        return asdict(self.stats())

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.join(self._grab_timeout + 1.0)

    def _run(self) -> None:
        log.info("camera_state", camera=self.camera_id, state="starting")
        while not self._stop.is_set():
            try:
                if self._driver is None:
                    self._step_down()
                else:
                    self._step_up()
            except Exception as exc:
                self._bump("unexpected_errors")
                log.exception("acquisition_error", camera=self.camera_id, error=repr(exc))
                try:
                    self._lose(f"unexpected error: {exc!r}")
                except Exception as inner:
                    log.exception("acquisition_error", camera=self.camera_id, error=repr(inner))
                    self._stop.wait(self._backoff.delay_s)
        self._shutdown()

    def _step_down(self) -> None:
        now = time.monotonic()
        self._fault_due_slots(now)
        if now < self._next_open:
            wait = self._next_open - now
            if self._next_slot is not None:
                wait = min(wait, max(self._next_slot - now, 0.0))
            self._stop.wait(wait)
            return
        self._open()

    def _new_driver(self) -> CameraDriver:
        driver = self._factory()
        try:
            driver.open()
        except BaseException:
            driver.close()
            raise
        if self._software and not driver.supports_software_trigger:
            driver.close()
            msg = f"camera {self.camera_id!r}: the device has no software trigger"
            raise CameraError(msg)
        return driver

    def _open(self) -> None:
        try:
            driver = self._new_driver()
        except Exception as exc:
            if not isinstance(exc, CameraError):
                self._bump("unexpected_errors")
            retry = self._backoff.failed()
            self._next_open = time.monotonic() + retry
            log.warning(
                "camera_open_failed", camera=self.camera_id, error=str(exc), retry_in_s=retry
            )
            self._set_state("reconnecting", str(exc), bump="device_errors")
            return
        now = time.monotonic()
        self._fault_due_slots(now)
        self._driver = driver
        self._backoff.reset()
        self._seq = 0
        self._pending.clear()
        self._base = None
        self._last_counter = None
        if self._ever_opened:
            self._bump("reconnects")
        self._ever_opened = True
        if self._software and self._next_slot is None:
            self._first_slot(now)
        self._set_state("running")

    def _step_up(self) -> None:
        driver = self._driver
        assert driver is not None
        timeout = self._grab_timeout
        if self._software:
            if not self._fire_due_slots(driver):
                return
            now = time.monotonic()
            self._expire_pending(now)
            assert self._next_slot is not None
            timeout = min(timeout, self._next_slot - now)
            if self._pending:
                oldest = min(p.t_trigger for p in self._pending.values())
                timeout = min(timeout, oldest + self._grab_timeout - now)
        try:
            raw = driver.grab(max(timeout, _MIN_GRAB_S))
        except CameraError as exc:
            self._lose(str(exc))
            return
        t_mono, t_wall = now_ns()
        if raw is not None:
            self._deliver(raw, t_mono, t_wall)

    def _fire_due_slots(self, driver: CameraDriver) -> bool:
        """Fire the trigger slot that is due, if any; False when the device was lost doing so.

        Slots more than one period old were missed (the loop was late): their cells are
        faulted as overload instead of being triggered in a burst. The strips of a line-scan
        cell whose first strip was triggered are triggered late rather than missed.
        """
        assert self._next_slot is not None
        now = time.monotonic()
        while self._next_slot + self._gap() <= now and self._slot_no % self._parts == 0:
            # a late strip of a started line-scan cell is still triggered (its lines were
            # scanned); a cell whose first strip is late is missed as a whole
            for _ in range(self._parts):
                self._advance_slot()
                detail = "trigger slot missed: acquisition was late"
                self._fault(self._new_cell(), "overload", detail)
        if self._next_slot > now:
            return True
        self._advance_slot()
        cell = self._new_cell()
        t_mono, t_wall = now_ns()
        try:
            accepted = driver.trigger()
        except CameraError as exc:
            self._fault(cell, "camera_error", str(exc))
            self._lose(str(exc))
            return False
        if accepted:
            self._pending[self._seq] = _Pending(cell, time.monotonic(), t_mono, t_wall)
            self._seq += 1
            self._bump("triggers")
        else:
            self._fault(cell, "overload", "camera not ready for the trigger")
        return True

    def _fault_due_slots(self, now: float) -> None:
        if self._next_slot is None:
            return
        while self._next_slot <= now:
            self._advance_slot()
            self._fault(self._new_cell(), "camera_error", "camera down when the cell was triggered")

    def _first_slot(self, now: float) -> None:
        """Without an epoch, the first slot is now and is cell 1. With one, slots lie on the
        epoch's grid of cell periods and slot k is cell k + 1, so cameras of one station that
        share the epoch and the rate trigger together and agree on cell ids (as cameras on
        one hardware trigger line do); the cells before this camera opened are not its.
        ``trigger.offset_ms`` shifts this camera's slots along the grid."""
        if self._epoch is None:
            self._next_slot = now
            return
        start = self._epoch + self.cfg.trigger.offset_ms / 1000.0
        k = max(0, math.ceil((now - start) / self._period))
        self._next_slot = start + k * self._period
        self._slot_no = self._last_cell = k * self._parts

    def _gap(self) -> float:
        """Seconds from the current trigger slot to the next one."""
        if self._parts == 1:
            return self._period
        if self._slot_no % self._parts < self._parts - 1:
            return self._strip_period
        return self._period - (self._parts - 1) * self._strip_period

    def _advance_slot(self) -> None:
        assert self._next_slot is not None
        self._next_slot += self._gap()
        self._slot_no += 1

    def _expire_pending(self, now: float) -> None:
        for seq, pending in sorted(self._pending.items()):
            if now - pending.t_trigger >= self._grab_timeout:
                del self._pending[seq]
                self._fault(pending.cell_id, "timeout", "no frame within grab_timeout_ms")

    def _deliver(self, raw: RawGrab, t_mono: int, t_wall: int) -> None:
        if raw.stream is not None:
            self._stream_now = raw.stream
            with self._lock:
                total = self._stream_before.plus(raw.stream)
                self._stats = replace(self._stats, stream=total)
        if self._software:
            if self._base is None and self._pending:
                self._base = raw.frame_counter
            seq = None if self._base is None else raw.frame_counter - self._base
            pending = None if seq is None else self._pending.pop(seq, None)
            if pending is None:
                self._bump("late_frames")
                log.warning(
                    "frame_unmatched",
                    camera=self.camera_id,
                    frame_counter=raw.frame_counter,
                    base=self._base,
                )
                return
            if t_mono * 1e-9 - pending.t_trigger > self._grab_timeout:
                self._bump("late_frames")
                self._fault(pending.cell_id, "timeout", "frame arrived after grab_timeout_ms")
                return
            cell = pending.cell_id
            # the frame was taken when it was triggered, not when it reached us; a strip when
            # its scan ended, or when it reached us if that was sooner (an emulated strip)
            taken = min(self._scan_ns, t_mono - pending.t_capture_mono_ns)
            t_mono, t_wall = pending.t_capture_mono_ns, pending.t_capture_wall_ns
            t_mono, t_wall = t_mono + max(taken, 0), t_wall + max(taken, 0)
        else:
            last = self._last_counter
            skipped = raw.frame_counter - last - 1 if last is not None else 0
            if skipped > _MAX_SKIPPED:
                log.warning("frame_counter_resync", camera=self.camera_id, last=last)
                skipped = 0
            for _ in range(max(skipped, 0)):
                detail = f"frame lost: camera counter jumped from {last} to {raw.frame_counter}"
                self._fault(self._new_cell(), "bad_frame", detail)
            self._last_counter = raw.frame_counter
            cell = self._new_cell()
        if raw.image is None:
            self._fault(cell, "bad_frame", raw.detail or "failed buffer")
            return
        frame = Frame(
            camera_id=self.camera_id,
            cell_id=cell,
            frame_counter=raw.frame_counter,
            t_mono_ns=t_mono,
            t_wall_ns=t_wall,
            image=raw.image,
        )
        self._bump("frames")
        self._emit(frame)

    def _lose(self, detail: str) -> None:
        for seq in sorted(self._pending):
            self._fault(self._pending[seq].cell_id, "camera_error", detail)
        self._pending.clear()
        self._close_driver()
        retry = self._backoff.failed()
        self._next_open = time.monotonic() + retry
        log.warning("camera_lost", camera=self.camera_id, error=detail, retry_in_s=retry)
        self._set_state("reconnecting", detail, bump="device_errors")

    def _shutdown(self) -> None:
        try:
            self._drain()
        except Exception as exc:
            log.exception("acquisition_error", camera=self.camera_id, error=repr(exc))
        for seq in sorted(self._pending):
            detail = "acquisition stopped before the frame arrived"
            self._fault(self._pending[seq].cell_id, "timeout", detail)
        self._pending.clear()
        self._close_driver()
        self._set_state("stopped")

    def _drain(self) -> None:
        """Give triggered cells their remaining grab timeout to arrive, triggering no more."""
        while self._driver is not None and self._pending:
            now = time.monotonic()
            self._expire_pending(now)
            if not self._pending:
                return
            oldest = min(p.t_trigger for p in self._pending.values())
            try:
                raw = self._driver.grab(max(oldest + self._grab_timeout - now, _MIN_GRAB_S))
            except CameraError:
                return
            t_mono, t_wall = now_ns()
            if raw is not None:
                self._deliver(raw, t_mono, t_wall)

    def _close_driver(self) -> None:
        driver, self._driver = self._driver, None
        if self._stream_now is not None:
            self._stream_before = self._stream_before.plus(self._stream_now)
            self._stream_now = None
        if driver is not None:
            try:
                driver.close()
            except Exception as exc:
                log.warning("camera_close_failed", camera=self.camera_id, error=repr(exc))

    def _new_cell(self) -> int:
        self._last_cell += 1
        return self._last_cell

    def _fault(self, cell_id: int, reason: Reason, detail: str) -> None:
        t_mono, t_wall = now_ns()
        counter = _FAULT_COUNTER.get(reason)
        if counter is not None:
            self._bump(counter)
        fault = FrameFault(
            camera_id=self.camera_id,
            cell_id=cell_id,
            reason=reason,
            detail=detail,
            t_mono_ns=t_mono,
            t_wall_ns=t_wall,
        )
        self._emit(fault)

    def _emit(self, item: Frame | FrameFault) -> None:
        if self._parts > 1:
            cell, part = divmod(item.cell_id - 1, self._parts)
            if isinstance(item, FrameFault):
                if cell + 1 == self._faulted_cell:
                    return
                self._faulted_cell = cell + 1
                item = replace(item, cell_id=cell + 1, detail=f"strip {part}: {item.detail}")
            else:
                item = replace(item, cell_id=cell + 1, part=part, parts=self._parts)
        try:
            self._sink(item)
        except Exception as exc:
            self._bump("sink_errors")
            log.exception("sink_failed", camera=self.camera_id, error=repr(exc))

    def _bump(self, name: str) -> None:
        with self._lock:
            self._stats = replace(self._stats, **{name: getattr(self._stats, name) + 1})

    def _set_state(self, state: State, detail: str = "", bump: str | None = None) -> None:
        """Change the state; ``bump`` names a counter raised in the same step, so a reader
        never sees the counter without the state it leads to."""
        with self._lock:
            changed = self._stats.state != state
            counts = {bump: getattr(self._stats, bump) + 1} if bump else {}
            self._stats = replace(self._stats, state=state, **counts)
        if changed:
            extra = {"detail": detail} if detail else {}
            log.info("camera_state", camera=self.camera_id, state=state, **extra)
