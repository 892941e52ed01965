"""What the lifecycle needs of the daemon it runs in (the daemon implements :class:`Host`)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from linevision.config import CameraConfig, StationConfig
from linevision.scheduler.worker import StationWorker
from linevision.stations import BuiltStation


@dataclass(frozen=True, slots=True)
class LiveStation:
    """A station as it runs now."""

    config: StationConfig
    """Its configuration with the active recipe applied."""
    cameras: tuple[CameraConfig, ...]
    """Its cameras, in view order."""
    worker: StationWorker
    """The live worker: frames submitted to it go the way the line's frames go."""
    recipe: str | None
    model_dir: Path
    """The folder of the model in force."""


class Host(Protocol):
    state_dir: Path
    archive_dir: Path

    @property
    def run_id(self) -> str:
        """The daemon's run (as on its verdicts)."""

    def station_names(self) -> tuple[str, ...]: ...

    def live(self, station: str) -> LiveStation:
        """KeyError for a station the daemon does not have."""

    def twin(self, station: str) -> StationWorker:
        """A second instance of the live station (same configuration, model and code) in
        the same scheduler: for a station whose frames must come in order (line-scan), so
        that master samples never fall between the strips of a cell on the line."""

    def send(self, topic: str, payload: bytes) -> None:
        """Publish a message on the verdict bus, in order with the verdicts."""

    def raise_alarm(self, code: str, **detail: object) -> None: ...

    def clear_alarm(self, code: str, **detail: object) -> None: ...

    def build(self, station: str, model_dir: Path) -> BuiltStation:
        """The live station's configuration with another model, loaded, checked and warmed
        (off the hot path: the line goes on meanwhile)."""

    def use(self, built: BuiltStation) -> None:
        """Inspect the station's cells registered from now on with ``built`` (as a recipe
        switch does: cells in flight finish on the model they started with)."""

    def watch(self, threads: Iterable[threading.Thread]) -> None:
        """Supervise long-lived threads (a death is an alarm)."""

    def unwatch(self, threads: Iterable[threading.Thread]) -> None:
        """Stop supervising threads about to end on purpose."""
