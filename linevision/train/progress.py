"""Training progress: a bar with ETA on a terminal, JSON log lines otherwise.

The bar goes to stderr and is redrawn in place; without a terminal (systemd, CI, a pipe)
progress becomes structlog events (``train_progress`` at most every ``LOG_EVERY_S``
seconds and ``epoch_done`` after each epoch), so journald and log parsers get key-values.
Each epoch gives one line (``epoch_done``) with the epoch, the best epoch so far and its
score, and the ETA of the run's end. The total of steps may be unknown (0: the run ends by
its time budget, not an epoch count) or re-planned as the run measures its step time; the
ETA is then the time left in the budget.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Final

from linevision.log import get_logger

log = get_logger(__name__)

LOG_EVERY_S: Final = 30.0


def format_duration(seconds: float) -> str:
    """``seconds`` as ``m:ss`` or ``h:mm:ss``.

    >>> format_duration(65.4), format_duration(3725)
    ('1:05', '1:02:05')
    """
    total = max(round(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def eta_seconds(
    done: int, total: int, elapsed: float, until_deadline: float | None = None
) -> float | None:
    """Time left at the current rate, capped by the deadline; None before the first step.

    >>> eta_seconds(25, 100, 10.0)
    30.0
    >>> eta_seconds(25, 100, 10.0, until_deadline=12.0)
    12.0
    """
    if done <= 0 or elapsed <= 0 or total <= 0:
        return until_deadline
    left = (total - done) * elapsed / done
    return max(0.0, left if until_deadline is None else min(left, until_deadline))


def format_bar(  # noqa: PLR0913  (every argument is one field of the line)
    done: int,
    total: int,
    *,
    epoch: int,
    epochs: int | None,
    loss: float | None,
    eta: float | None,
    width: int = 24,
) -> str:
    """One progress line.

    >>> format_bar(5, 10, epoch=1, epochs=4, loss=0.5, eta=90.0, width=10)
    'epoch 1/4 [#####.....]  50% step 5/10 loss 0.5000 ETA 1:30'
    """
    fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
    filled = round(fraction * width)
    bar = "#" * filled + "." * (width - filled)
    loss_text = "-" if loss is None else f"{loss:.4f}"
    eta_text = "-" if eta is None else format_duration(eta)
    epoch_text = f"{epoch}" if epochs is None else f"{epoch}/{epochs}"
    total_text = f"{total}" if total > 0 else "?"
    return (
        f"epoch {epoch_text} [{bar}] {fraction * 100:3.0f}% step {done}/{total_text} "
        f"loss {loss_text} ETA {eta_text}"
    )


class Progress:
    """Reports training steps; ``total_steps`` (0: unknown) may be re-planned during the run."""

    def __init__(
        self,
        total_steps: int,
        epochs: int | None,
        deadline: float | None = None,
        *,
        stream: IO[str] | None = None,
        tty: bool | None = None,
    ) -> None:
        self.total_steps = max(total_steps, 0)
        self.epochs = epochs
        self.deadline = deadline
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.log_every_s = LOG_EVERY_S
        self.started = time.monotonic()
        self._last_log = self.started
        self._line_open = False

    def _eta(self, done: int) -> float | None:
        now = time.monotonic()
        until = None if self.deadline is None else max(self.deadline - now, 0.0)
        return eta_seconds(done, self.total_steps, now - self.started, until)

    def step(self, done: int, epoch: int, loss: float | None) -> None:
        """Called after each optimiser step with the steps done so far."""
        eta = self._eta(done)
        if self.tty:
            line = format_bar(
                done, self.total_steps, epoch=epoch, epochs=self.epochs, loss=loss, eta=eta
            )
            self.stream.write("\r" + line)
            self.stream.flush()
            self._line_open = True
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            log.info(
                "train_progress",
                epoch=epoch,
                step=done,
                steps=self.total_steps,
                loss=None if loss is None else round(loss, 4),
                eta_s=None if eta is None else round(eta, 1),
            )

    def epoch_done(self, **entry: object) -> None:
        """One line per epoch: a log event, printed under the bar on a terminal."""
        if self.tty:
            if self._line_open:
                self.stream.write("\n")
                self._line_open = False
            fields = " ".join(f"{k}={v}" for k, v in entry.items())
            self.stream.write(f"epoch done: {fields}\n")
            self.stream.flush()
            return
        log.info("epoch_done", **entry)

    def close(self) -> None:
        if self.tty and self._line_open:
            self.stream.write("\n")
            self.stream.flush()
            self._line_open = False
