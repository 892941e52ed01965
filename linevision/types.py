"""Small types shared by every part of the pipeline (and the one back-off rule)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt

Reason = Literal["defect", "timeout", "bad_frame", "camera_error", "model_error", "overload"]
"""Why a verdict is NG. ``defect`` is a model decision; every other reason is a fail-safe NG."""

FAULT_REASONS: tuple[Reason, ...] = (
    "timeout",
    "bad_frame",
    "camera_error",
    "model_error",
    "overload",
)

VerdictValue = Literal["OK", "NG"]

Image = npt.NDArray[np.uint8]


def now_ns() -> tuple[int, int]:
    """Return ``(monotonic_ns, wall_clock_ns)`` taken back to back."""
    return time.monotonic_ns(), time.time_ns()


@dataclass(frozen=True, slots=True)
class Frame:
    """One image owned by the pipeline (already copied out of the camera buffer).

    ``frame_counter`` is the camera's own counter (pylon BlockID, GenTL frame_id);
    ``cell_id`` identifies the inspected cell (trigger count, or supplied by the source).
    A line-scan camera delivers a cell in ``parts`` strips of lines; ``part`` is this
    strip's place (0 = the cell's first lines). ``t_mono_ns``/``t_wall_ns`` are the capture
    instant (the software trigger, else the buffer's arrival): a cell's deadline and its
    verdict's ``latency_ms`` count from it.

    ``challenge``: a master sample sent through the live station (``linevision.lifecycle``),
    not a cell on the line: its verdict goes to the challenge, never to the verdict bus, so
    it is never counted in the yield nor seen by the PLC or the reject actuator.
    """

    camera_id: str
    cell_id: int
    frame_counter: int
    t_mono_ns: int
    t_wall_ns: int
    image: Image
    part: int = 0
    parts: int = 1
    challenge: bool = False

    @property
    def view_key(self) -> str:
        """What makes this frame one of its cell's views: the camera, and the strip."""
        return self.camera_id if self.parts == 1 else f"{self.camera_id}#{self.part}"


@dataclass(frozen=True, slots=True)
class FrameFault:
    """A cell whose frame could not be acquired: it must become an NG verdict."""

    camera_id: str
    cell_id: int
    reason: Reason
    detail: str
    t_mono_ns: int
    t_wall_ns: int


@dataclass(frozen=True, slots=True)
class ModelRef:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Defect:
    """A located defect, in frame pixel coordinates."""

    kind: str
    score: float
    x: int = 0
    y: int = 0
    w: int = 0
    h: int = 0


@dataclass(frozen=True, slots=True)
class Crop:
    """Full-resolution pixels around a located defect, taken while the frame was at hand (a
    line-scan frame's buffer is reused, and the verdict keeps only a reduced copy)."""

    x: int
    y: int
    """The crop's top-left corner in frame pixels."""
    pixels: Image
    mask: Image | None = None
    """The defect's mask (0/255), the crop's size."""


@dataclass(frozen=True, slots=True)
class Detail:
    """What an NG shows besides its verdict, worked out off the hot path (on the archive's
    writer thread, when the verdict's picture is written).

    ``image``: the picture to show instead of the verdict's (the view of a multi-view cell
    that failed), ``defects`` in its pixels; ``view``/``views``: that view's name and how
    many the cell has. ``crops``: full-resolution crops (``defects`` then stay in frame
    pixels). ``strip``: a line-scan frame, shown with its lines running left to right.
    """

    image: Image | None = None
    defects: tuple[Defect, ...] = ()
    crops: tuple[Crop, ...] = ()
    view: str | None = None
    views: int = 1
    strip: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What a station concluded about one cell, before the fail-safe arbitration."""

    verdict: VerdictValue
    reason: Reason | None
    label: str | None
    score: float | None
    defects: tuple[Defect, ...] = ()
    model: ModelRef | None = None
    infer_ms: float | None = None
    image: Image | None = None
    """The picture of the cell for the archive and the HMI, when it is not the frame itself
    (a line-scan station gives a reduced copy of its frame)."""
    image_scale: float = 1.0
    """``image`` pixels per frame pixel (the defects stay in frame coordinates)."""
    detail: Callable[[], Detail] | None = None
    """Works out the :class:`Detail` of this decision; called off the hot path, at most once."""
    views: tuple[Image, ...] = ()
    """A multi-view cell's frames in view order, as its cameras gave them (the picture is
    one of them): what the archive keeps of a cell an operator may review, for a dataset."""
    tiles: tuple[Crop, ...] = ()
    """A line-scan frame's full-resolution tiles around its first defects, with their masks
    (the frame itself is not kept): what the archive keeps of it for a dataset."""

    @classmethod
    def fault(
        cls, reason: Reason, detail: str | None = None, model: ModelRef | None = None
    ) -> Decision:
        """An NG that no model produced: the cell was not (fully) inspected."""
        return cls(verdict="NG", reason=reason, label=detail, score=None, model=model)


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Monotonic instants (ns) of one cell's way through the pipeline, for stage latencies.

    ``queued``: the frame was registered and handed to the station queue; ``started``: the
    station thread took it (None for a cell that never reached a station); ``decided``: the
    arbiter chose the verdict and handed it to the bus (what the wire's ``latency_ms`` counts
    to); ``sent``: the bus thread sent it (set by the publisher).
    """

    queued_mono_ns: int
    started_mono_ns: int | None
    decided_mono_ns: int
    sent_mono_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The one verdict a cell gets, as it goes out on the bus."""

    station: str
    cell_id: int
    decision: Decision
    t_frame_ns: int
    """Wall clock (``time.time_ns()``) when the cell's last frame was taken."""
    t_frame_mono_ns: int
    """The same instant on the monotonic clock, for latency."""
    image: Image | None = None
    """The inspected frame (for the NG archive and the HMI); None for faults."""
    image_scale: float = 1.0
    """``image`` pixels per frame pixel (1 unless the station gave a reduced picture)."""
    extra: dict[str, object] = field(default_factory=dict)
    recipe: str | None = None
    """The product recipe in force when the cell was registered (None: no recipes)."""
    stages: StageTimes | None = None
    challenge: bool = False
    """A master sample's verdict (see ``Frame.challenge``): never published as a verdict."""


class PreprocessError(ValueError):
    """A frame that cannot be turned into the model's input (empty, wrong channels...)."""


class Backoff:
    """Exponential back-off between retries: ``min_s``, then doubling up to ``max_s``.

    :meth:`failed` counts a failure and returns the wait before the next try; :meth:`reset`
    after a success starts again at ``min_s``. The first wait is ``min_s`` even when it is
    above ``max_s``; every later wait is capped. Stateful doubling never overflows, however
    long the link stays down.

    >>> b = Backoff(0.5, 3.0)
    >>> [b.failed() for _ in range(5)], b.failures
    ([0.5, 1.0, 2.0, 3.0, 3.0], 5)
    >>> b.reset(); b.failed()
    0.5
    """

    __slots__ = ("_next_s", "failures", "max_s", "min_s")

    def __init__(self, min_s: float, max_s: float) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.failures = 0
        """Failures since the last reset."""
        self._next_s = min_s

    @property
    def delay_s(self) -> float:
        """The wait the next failure gets (without counting one)."""
        return self._next_s

    def failed(self) -> float:
        """Count a failure; the wait before the next try."""
        self.failures += 1
        delay = self._next_s
        self._next_s = min(delay * 2.0, self.max_s)
        return delay

    def reset(self) -> None:
        self.failures = 0
        self._next_s = self.min_s


def shift_start(t: datetime, starts: tuple[str, ...]) -> datetime:
    """The start of the shift ``t`` (local, naive) falls in; ``starts`` are ``HH:MM``.

    The operator page and the MQTT bridge count a shift's yield from the same starts.

    >>> shift_start(datetime(2026, 5, 1, 3, 0), ("06:00", "14:00", "22:00"))
    datetime.datetime(2026, 4, 30, 22, 0)
    >>> shift_start(datetime(2026, 5, 1, 14, 0), ("06:00", "14:00", "22:00"))
    datetime.datetime(2026, 5, 1, 14, 0)
    """
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    minutes = sorted(int(s[:2]) * 60 + int(s[3:]) for s in starts) or [0]
    candidates = [day + timedelta(minutes=m) for m in minutes]
    candidates = [c - timedelta(days=1) for c in candidates] + candidates
    return max(c for c in candidates if c <= t)
