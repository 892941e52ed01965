"""Blue-film station: a line-scan frame arrives as strips; each is inspected as it comes.

The strips of a cell go through one :class:`FilmInspector` in order (the station is not
``parallel``): the first strip (part 0) starts a new frame, each strip is screened and its
flagged windows scored at once, and the last strip finishes the frame and decides. A strip
that is missing or out of order makes the cell NG ``bad_frame`` (never a frame stitched
from two cells); the next cell starts clean at its part 0. The verdict's picture is the
frame reduced 8 times, built strip by strip; its ``detail`` hands the archive the
full-resolution crops kept around each defect's mask, and shows the frame as a strip. An NG
carries ``tiles``: 1024 x 1024 full-resolution tiles around its first defects, with their
masks, which the archive keeps of a cell to review (for a dataset).
"""

from __future__ import annotations

from dataclasses import replace

from linevision.inference.film.inspector import THUMBNAIL, FilmInspector
from linevision.types import Decision, Detail, Frame, PreprocessError


class BlueFilmStation:
    """Two-stage film inspection (sources 003 + 004) of ``views`` strips per cell."""

    kind = "blue_film"
    parallel = False

    def __init__(
        self,
        name: str,
        inspector: FilmInspector,
        strips: int,
        assembly_ms: float,
        part_slack_ms: float = 0.0,
    ) -> None:
        self.name = name
        self.inspector = inspector
        self.model = inspector.ref
        self.views = strips
        self.assembly_ms = assembly_ms
        self.part_slack_ms = part_slack_ms
        """A strip before the last may wait this much longer for a thread (one strip period:
        it only has to be done before the next strip's work)."""
        self._cell: int | None = None
        self._next_part = 0
        self._broken: str | None = None

    def inspect(self, frame: Frame) -> Decision | None:
        if frame.part == 0 or frame.cell_id != self._cell:
            self.inspector.reset()
            self._cell, self._next_part, self._broken = frame.cell_id, 0, None
        if self._broken is None and frame.part != self._next_part:
            self._broken = f"strip {self._next_part} missing (strip {frame.part} came next)"
        self._next_part = frame.part + 1
        if self._broken is None:
            image = frame.image
            width = self.inspector.buffer.shape[1]
            if image.ndim != 3 or image.shape[1:] != (width, 3):
                self._broken = f"strip {frame.part}: shape {image.shape}, expected (n, {width}, 3)"
            else:
                self.inspector.add_strip(image)
        if frame.part < frame.parts - 1:
            return None
        self._cell = None
        if self._broken is not None:
            detail, self._broken = self._broken, None
            self.inspector.reset()
            raise PreprocessError(detail)
        result = self.inspector.finish()
        crops = result.crops
        return replace(
            result.decision,
            image=result.thumbnail,
            image_scale=1.0 / THUMBNAIL,
            tiles=result.tiles,
            detail=lambda: Detail(crops=crops, strip=True),
        )
