"""The Station protocol: what the scheduler and the daemon may ask of any station."""

from __future__ import annotations

from typing import Protocol

from linevision.types import Decision, Frame, ModelRef


class Station(Protocol):
    """Frames of a cell -> its Decision.

    ``views`` frames (one per camera, or one per strip of a line-scan frame) make a cell;
    ``inspect`` is called for each as it arrives and returns None until the cell is complete.
    """

    name: str
    kind: str
    views: int
    assembly_ms: float
    """How much longer than its deadline a cell may wait for its last view."""
    parallel: bool
    """True: frames of this station may be inspected on several threads at once (``inspect``
    is thread-safe); False: one at a time, in the order they came."""
    part_slack_ms: float
    """A part before the last of a cell (a strip) may wait this much longer for a thread:
    it only has to be done before the next part's work, not before the verdict."""
    model: ModelRef
    """The model the station decides with; verdicts of faults (timeout, overload) name it."""

    def inspect(self, frame: Frame) -> Decision | None: ...
