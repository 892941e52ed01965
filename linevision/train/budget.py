"""The time budget that drives a training run: when to stop, the schedule's progress, the ETA.

A run trains until the first of: the budget (``--minutes``) is spent, the validation metric
has not improved for ``patience`` epochs, or the optional epoch cap (``--epochs``) is
reached. The learning-rate schedule is planned from the measured time: after each epoch the
planned number of steps is re-estimated as the steps done plus the steps that fit in the
time left at the measured cost per step (validation included), so the schedule's progress
``steps / planned`` reaches 1 at the end of the budget, or at the cap when that comes first.

``interruptible`` makes Ctrl-C (SIGINT) raise ``KeyboardInterrupt`` in the training loop
even when the process was started with SIGINT ignored, so the loop can keep its best
epoch and the trainer can export it.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

DEFAULT_PATIENCE: Final = 8
STOP_BUDGET: Final = "budget"
STOP_PATIENCE: Final = "patience"
STOP_EPOCHS: Final = "epochs"
STOP_INTERRUPTED: Final = "interrupted"
EXIT_INTERRUPTED: Final = 130


@dataclass
class Budget:
    """Stop rules and schedule of one run; ``started`` and ``deadline`` are monotonic times.

    >>> b = Budget(started=0.0, deadline=100.0, epochs=None, patience=2)
    >>> b.replan(steps=10, now=20.0)  # 10 steps in 20 s: 40 more fit in the 80 s left
    50
    >>> round(b.progress(25, now=20.0), 2)
    0.5
    >>> [b.epoch_done(e, improved=(e == 1)) for e in (1, 2, 3)]
    ['', '', 'patience']
    """

    started: float
    deadline: float
    epochs: int | None = None
    patience: int | None = DEFAULT_PATIENCE
    steps_per_epoch: int = 1
    planned_steps: int = 0
    best_epoch: int = 0
    stop_reason: str = ""

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            msg = f"--epochs must be at least 1 (or left out for no cap), got {self.epochs}"
            raise ValueError(msg)
        if self.patience is not None and self.patience < 1:
            msg = f"--patience must be at least 1 epoch, got {self.patience}"
            raise ValueError(msg)
        self.steps_per_epoch = max(self.steps_per_epoch, 1)
        if self.planned_steps <= 0:
            self.planned_steps = self._cap_steps() or 0

    def _cap_steps(self) -> int | None:
        return None if self.epochs is None else self.epochs * self.steps_per_epoch

    def replan(self, steps: int, now: float | None = None) -> int:
        """Re-estimate the planned steps from the cost per step measured so far."""
        now = time.monotonic() if now is None else now
        elapsed = now - self.started
        if steps <= 0 or elapsed <= 0:
            return self.planned_steps
        left = max(self.deadline - now, 0.0)
        planned = steps + math.floor(left * steps / elapsed)
        cap = self._cap_steps()
        self.planned_steps = max(planned if cap is None else min(planned, cap), steps, 1)
        return self.planned_steps

    def progress(self, steps: int, now: float | None = None) -> float:
        """The schedule's position in [0, 1]: steps over planned steps, or time, the larger.

        Before the first ``replan`` (no step time measured yet) only time and the cap count.
        """
        now = time.monotonic() if now is None else now
        by_time = (now - self.started) / max(self.deadline - self.started, 1e-9)
        by_steps = steps / self.planned_steps if self.planned_steps > 0 else 0.0
        return min(max(by_steps, by_time, 0.0), 1.0)

    def epoch_done(self, epoch: int, *, improved: bool) -> str:
        """Record an epoch; the stop reason (``"patience"``, ``"epochs"``) or ``""``."""
        if improved:
            self.best_epoch = epoch
        if self.epochs is not None and epoch >= self.epochs:
            self.stop_reason = STOP_EPOCHS
        elif self.patience is not None and epoch - self.best_epoch >= self.patience:
            self.stop_reason = STOP_PATIENCE
        return self.stop_reason

    def eta(self, epoch: int, now: float | None = None) -> float:
        """Seconds until the run is expected to stop: the deadline, or the cap if sooner."""
        now = time.monotonic() if now is None else now
        left = max(self.deadline - now, 0.0)
        if self.epochs is not None and epoch > 0:
            per_epoch = (now - self.started) / epoch
            left = min(left, max(self.epochs - epoch, 0) * per_epoch)
        return left


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGINT raises ``KeyboardInterrupt`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_interruptibly(train: Callable[[], Mapping[str, object]], out: object) -> int:
    """A trainer's exit code around ``train`` (which returns the manifest's ``training``).

    Ctrl-C that stopped training early (``stop_reason`` "interrupted") still wrote the best
    epoch: say so on stderr and return 0. Ctrl-C before an epoch was validated, or during
    export, leaves no model: say so and return 130 (the shell's code for SIGINT).
    """
    try:
        training = train()
    except KeyboardInterrupt:
        sys.stderr.write(
            "interrupted before a model was written (no epoch validated yet, or during export)\n"
        )
        return EXIT_INTERRUPTED
    if training.get("stop_reason") == STOP_INTERRUPTED:
        sys.stderr.write(
            f"interrupted: exported the best epoch so far (epoch {training.get('best_epoch')} "
            f"of {training.get('epochs_run')}) to {out}\n"
        )
    return 0
