"""The configuration of the model's lifecycle (docs/lifecycle.md): sections of ``Config``.

Frozen pydantic models, no I/O (as ``config.py``, which includes them).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChallengeConfig(_Model):
    """When master samples go through the stations, and when a passed run no longer counts.

    A station is *verified* while its last run passed, on the model and recipe in force, and
    is not overdue: no pass since the last of the times ``at`` (local HH:MM) once
    ``grace_min`` has gone by, or older than ``max_age_h``. docs/lifecycle.md.
    """

    at: tuple[str, ...] = ()
    grace_min: float = Field(default=15.0, ge=0, le=24 * 60)
    max_age_h: float | None = Field(default=None, gt=0)
    on_start: bool = True
    """Run at the daemon's start for each station not verified then."""
    on_switch: bool = True
    """Run after a recipe switch or a model promotion (the new model is not verified)."""
    retries: int = Field(default=2, ge=0, le=10)
    """More tries of a sample whose verdict was a fail-safe NG (timeout, overload...)."""
    sample_timeout_s: float = Field(default=10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _times(self) -> ChallengeConfig:
        for t in self.at:
            if not re.match(HHMM, t):
                msg = f"challenge.at: {t!r} is not HH:MM"
                raise ValueError(msg)
        return self


class DriftConfig(_Model):
    """The drift monitor: OK cells' scores and image statistics against a baseline.

    Per station and recipe the last ``window`` OK cells are compared with the baseline every
    ``every`` cells once ``min_cells`` are in: a statistic whose population stability index
    reaches ``warning_psi`` raises ``drift_warning``, ``critical_psi`` ``drift_critical``
    (docs/lifecycle.md).
    """

    enabled: bool = True
    window: int = Field(default=200, ge=20, le=100_000)
    min_cells: int = Field(default=100, ge=10, le=100_000)
    every: int = Field(default=25, ge=1, le=10_000)
    warning_psi: float = Field(default=0.1, gt=0)
    critical_psi: float = Field(default=0.25, gt=0)
    baseline_cells: int = Field(default=500, ge=50, le=100_000)
    """OK cells ``linevision baseline capture`` takes by default."""
    queue_size: int = Field(default=256, ge=1, le=100_000)
    """Cells waiting for the monitor's thread; a full queue drops (and counts) the newest."""
    max_side: int = Field(default=512, ge=32, le=32768)
    """A larger picture is reduced to this before its statistics are taken."""

    @model_validator(mode="after")
    def _ordered(self) -> DriftConfig:
        if self.critical_psi <= self.warning_psi:
            msg = "drift.critical_psi must be above drift.warning_psi"
            raise ValueError(msg)
        if self.min_cells > self.window:
            msg = "drift.min_cells must not exceed drift.window"
            raise ValueError(msg)
        return self


class ShadowConfig(_Model):
    """A candidate model beside the active one (``linevision model shadow``)."""

    queue_size: int = Field(default=32, ge=1, le=10_000)
    """Frames waiting for the candidate; a frame that finds the queue full is skipped."""
    min_cells: int = Field(default=200, ge=0, le=10_000_000)
    """Cells the shadow must have compared before ``linevision model promote`` (without
    ``--force``) takes its candidate."""


class ReviewConfig(_Model):
    """Operator review of the archive's cells (docs/lifecycle.md).

    ``ok_below``: an OK cell whose confidence (pole_piece: the OK class's probability;
    seal_edge, six_view: 1 - P(NG)) is below this is a low-margin OK: the archive keeps its
    picture and the review page lists it. ``raw``: the archive also keeps, as PNG, what the
    model took of NG and low-margin OK cells (the frame; six_view: its six views; blue_film:
    1024 x 1024 tiles around an NG's defects), which ``linevision dataset export`` writes out.
    ``dir``: the reviews' database (default ``review/`` in the state folder; the HMI writes
    there).
    """

    dir: Path | None = None
    ok_below: float = Field(default=0.8, ge=0, le=1)
    raw: bool = True
