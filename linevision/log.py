"""structlog set-up: JSON lines to stdout (for journald), console rendering on a TTY."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Literal

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time of the write.

    A logger that captured the stdout object at configuration time would keep writing to it
    after it was replaced (and perhaps closed), e.g. by a test runner's capture.
    """

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def configure(
    level: Literal["debug", "info", "warning", "error"] = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
) -> None:
    """Configure structlog once per process; safe to call again (tests, reloads)."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStdout()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    _route_stdlib(renderer, _LEVELS[level])


class _StdlibHandler(logging.StreamHandler[_CurrentStdout]):
    """Marks the handler ``configure`` installs, so a second call replaces it."""


class _RateLimit(logging.Filter):
    """Warnings and errors of other libraries (e.g. uvicorn's ``Invalid HTTP request``, one
    per bad request) at most once per ``period_s`` per logger and message, with a count."""

    def __init__(self, period_s: float = 10.0) -> None:
        super().__init__()
        self._limit = RateLimitedLog(None, period_s)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        suppressed = self._limit._due(f"{record.name}:{record.msg}")  # noqa: SLF001  (same module)
        if suppressed is None:
            return False
        record.suppressed = suppressed
        return True


def _route_stdlib(renderer: Any, level: int) -> None:
    """Send the standard library's records (uvicorn, asyncio, ...) through the same renderer.

    A traceback becomes a field of one JSON line, never lines of text of its own.
    """
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(allow=("suppressed",)),
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = _StdlibHandler(_CurrentStdout())
    handler.setFormatter(formatter)
    handler.addFilter(_RateLimit())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(level, logging.INFO))


def get_logger(name: str) -> Any:
    """A bound logger; events are key-values: ``log.info("model_loaded", model=n, ms=dt)``."""
    return structlog.get_logger(name)


_MAX_KEYS = 1024


class RateLimitedLog:
    """Bad input from outside: counted always, logged at most once per ``period_s`` per event.

    A flood of garbage must not flood the log: the first occurrence of each event is logged,
    then at most one line per ``period_s``, carrying ``suppressed`` (how many were not logged
    since the last line) and ``count`` (all of them so far).
    ``count`` and ``counts`` are for metrics.
    """

    def __init__(self, logger: Any, period_s: float = 10.0) -> None:
        self._log = logger
        self.period_s = period_s
        self.count = 0
        self.counts: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def _due(self, event: str) -> int | None:
        """Count ``event``; the number suppressed since the last line if it is due, else None."""
        with self._lock:
            self.count += 1
            self.counts[event] = self.counts.get(event, 0) + 1
            now = time.monotonic()
            last = self._last.get(event)
            if last is not None and now - last < self.period_s:
                self._suppressed[event] = self._suppressed.get(event, 0) + 1
                return None
            self._last[event] = now
            if len(self._last) > _MAX_KEYS:
                self._forget_before(now - self.period_s)
            return self._suppressed.pop(event, 0)

    def _forget_before(self, t: float) -> None:
        """Bounded memory when keys vary (a library logging pre-formatted messages)."""
        for key in [k for k, at in self._last.items() if at < t]:
            del self._last[key]
            self.counts.pop(key, None)
            self._suppressed.pop(key, None)

    def warning(self, event: str, **kw: object) -> None:
        suppressed = self._due(event)
        if suppressed is not None:
            self._log.warning(event, suppressed=suppressed, count=self.counts[event], **kw)

    def exception(self, event: str, **kw: object) -> None:
        """Like ``warning`` at error level, with the current exception's traceback."""
        suppressed = self._due(event)
        if suppressed is not None:
            self._log.exception(event, suppressed=suppressed, count=self.counts[event], **kw)
