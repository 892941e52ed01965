"""Thread supervision: a long-lived thread of the daemon never dies in silence.

Every component that owns a thread hands it to :meth:`Supervisor.watch_all` (it exposes
``threads()``). A watched thread that raises, or that ends while the daemon runs, is dead:

- the ``thread_dead`` alarm goes out on the bus (``alarm.daemon``, the bridges' alarm schema),
  and is sent again every ``period_s`` while the daemon runs: alarms are state, so a
  subscriber that joins late still sees it within one period;
- the heartbeat's ``threads`` entry for it says ``alive: false`` (with the error), and so does
  the ``linevision_thread_alive`` metric;
- :meth:`problems` names it, and the systemd watchdog stops pinging: systemd restarts the
  daemon. A dead thread is never restarted in place (its component's state is unknown).

An uncaught exception is seen at once (``threading.excepthook``); a thread that returns
is seen by the poll, within ``poll_s``. The bus thread reports its own death through the
publisher's ``on_death`` hook, so its alarm is sent before its socket closes.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Callable
from typing import Literal, Protocol

from linevision.bus.wire import DAEMON_ALARM_TOPIC, SCHEMA
from linevision.log import get_logger

log = get_logger(__name__)

POLL_S = 0.1
ALARM_PERIOD_S = 1.0
THREAD_DEAD = "thread_dead"
SOURCE = "daemon"

SendFn = Callable[[str, bytes], None]
Severity = Literal["info", "warning", "error"]


class Threaded(Protocol):
    def threads(self) -> tuple[threading.Thread, ...]: ...


def alarm_payload(code: str, severity: Severity, active: bool, detail: dict[str, object]) -> bytes:  # noqa: FBT001
    """An ``alarm.daemon`` body: the schema of ``linevision.bridges.alarms.AlarmMessage``."""
    body = {
        "schema": SCHEMA,
        "source": SOURCE,
        "alarm": code,
        "severity": severity,
        "active": active,
        "detail": detail,
        "t_ns": time.time_ns(),
    }
    return json.dumps(body, separators=(",", ":"), default=str).encode()


class Supervisor:
    """Watches threads, owns the daemon's active alarms and sends them through ``send``."""

    def __init__(
        self, send: SendFn, period_s: float = ALARM_PERIOD_S, poll_s: float = POLL_S
    ) -> None:
        self._send = send
        self._period = period_s
        self._poll = poll_s
        self._lock = threading.Lock()
        self._watched: dict[str, threading.Thread] = {}
        self._dead: dict[str, str] = {}
        self.active: dict[str, dict[str, object]] = {}
        """Raised alarm codes and their detail; re-sent every ``period_s``."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)

    def watch(self, thread: threading.Thread, name: str | None = None) -> None:
        with self._lock:
            self._watched[name or thread.name] = thread

    def unwatch(self, thread: threading.Thread) -> None:
        """A thread that is about to end on purpose (a shadow model stopped)."""
        with self._lock:
            for name in [n for n, t in self._watched.items() if t is thread]:
                del self._watched[name]

    def watch_all(self, component: Threaded) -> None:
        for thread in component.threads():
            self.watch(thread)

    def start(self) -> None:
        _install_excepthook(self)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Before an orderly shutdown: threads that end from now on are not deaths."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def on_death(self, name: str, exc: BaseException) -> None:
        """A watched thread reports that ``exc`` ends it (the bus thread's hook)."""
        self._died(name, repr(exc))

    def threads(self) -> dict[str, dict[str, object]]:
        """Per watched thread: ``alive`` and, once dead, ``error`` (the heartbeat entry)."""
        with self._lock:
            out: dict[str, dict[str, object]] = {}
            for name in sorted(self._watched):
                error = self._dead.get(name)
                out[name] = {"alive": True} if error is None else {"alive": False, "error": error}
            return out

    def problems(self) -> list[str]:
        """Why the daemon must be restarted; empty while every watched thread lives."""
        with self._lock:
            out = [f"thread {name}: dead ({error})" for name, error in sorted(self._dead.items())]
        running = self._thread.ident is not None and not self._stop.is_set()
        if running and not self._thread.is_alive():
            out.append("supervisor: thread ended")
        return out

    def raise_alarm(self, code: str, severity: Severity = "error", **detail: object) -> None:
        """Raise (or update) a lasting condition; it is re-sent until ``clear_alarm``."""
        self._raise(code, severity, detail)

    def _raise(self, code: str, severity: Severity, detail: dict[str, object]) -> None:
        with self._lock:
            self.active[code] = detail
        self._emit(code, severity, True, detail)  # noqa: FBT003

    def clear_alarm(self, code: str, **detail: object) -> None:
        with self._lock:
            if self.active.pop(code, None) is None:
                return
        self._emit(code, "info", False, detail)  # noqa: FBT003

    def repeat(self) -> None:
        """Send every active alarm again, marked ``repeat`` (for late subscribers)."""
        with self._lock:
            active = list(self.active.items())
        for code, detail in active:
            self._emit(code, "error", True, {**detail, "repeat": True}, quiet=True)  # noqa: FBT003

    def check(self) -> None:
        """Find watched threads that ended since the last check."""
        with self._lock:
            ended = [
                name
                for name, t in self._watched.items()
                if name not in self._dead and t.ident is not None and not t.is_alive()
            ]
        for name in ended:
            if not self._stop.is_set():
                self._died(name, "thread ended")

    def _uncaught(self, args: threading.ExceptHookArgs) -> bool:
        """``threading.excepthook`` for our threads: log as JSON and record the death."""
        with self._lock:
            names = [n for n, t in self._watched.items() if t is args.thread]
        if not names:
            return False
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
        log.error("thread_exception", thread=names[0], exc_info=exc_info)
        if not self._stop.is_set():
            self._died(names[0], repr(args.exc_value))
        return True

    def _died(self, name: str, error: str) -> None:
        with self._lock:
            if name in self._dead:
                return
            self._dead[name] = error
            detail: dict[str, object] = {
                "threads": sorted(self._dead),
                "errors": dict(sorted(self._dead.items())),
            }
        log.error("thread_dead", thread=name, error=error)
        self._raise(THREAD_DEAD, "error", detail)

    def _emit(
        self,
        code: str,
        severity: Severity,
        active: bool,  # noqa: FBT001
        detail: dict[str, object],
        *,
        quiet: bool = False,
    ) -> None:
        if not quiet:
            log.warning("alarm", source=SOURCE, alarm=code, active=active, **detail)
        try:
            self._send(DAEMON_ALARM_TOPIC, alarm_payload(code, severity, active, detail))
        except Exception as exc:
            log.exception("alarm_send_failed", alarm=code, error=repr(exc))

    def _loop(self) -> None:
        next_repeat = time.monotonic() + self._period
        while not self._stop.wait(self._poll):
            self.check()
            if time.monotonic() >= next_repeat:
                next_repeat = time.monotonic() + self._period
                self.repeat()


_SUPERVISORS: weakref.WeakSet[Supervisor] = weakref.WeakSet()
_previous_hook: Callable[[threading.ExceptHookArgs], object] | None = None


def _excepthook(args: threading.ExceptHookArgs) -> None:
    claimed = False
    for sup in list(_SUPERVISORS):
        claimed = sup._uncaught(args) or claimed  # noqa: SLF001  (this module's own hook)
    if not claimed and _previous_hook is not None:
        _previous_hook(args)


def _install_excepthook(sup: Supervisor) -> None:
    """Chain one process-wide hook in front of whatever was there (once)."""
    global _previous_hook  # noqa: PLW0603  (one hook per process, installed once)
    _SUPERVISORS.add(sup)
    if threading.excepthook is not _excepthook:
        _previous_hook = threading.excepthook
        threading.excepthook = _excepthook
