"""Small frozen types shared by every part of the pipeline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
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
    strip's place (0 = the cell's first lines).
    """

    camera_id: str
    cell_id: int
    frame_counter: int
    t_mono_ns: int
    t_wall_ns: int
    image: Image
    part: int = 0
    parts: int = 1

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
    arbiter chose the verdict and handed it to the bus.
    """

    queued_mono_ns: int
    started_mono_ns: int | None
    decided_mono_ns: int


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
