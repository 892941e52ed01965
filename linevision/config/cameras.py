"""The camera entries of the configuration file (``cameras:``): one model per backend."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from linevision.config.base import _Model


class DeviceSelector(_Model):
    """Which physical device a camera entry means. Empty selects the first device found."""

    serial: str | None = None
    user_id: str | None = None

    @model_validator(mode="after")
    def _one_key(self) -> DeviceSelector:
        if self.serial is not None and self.user_id is not None:
            msg = "give either serial or user_id, not both"
            raise ValueError(msg)
        return self


class Roi(_Model):
    width: int = Field(gt=0, le=32768)
    height: int = Field(gt=0, le=32768)
    offset_x: int = Field(default=0, ge=0)
    offset_y: int = Field(default=0, ge=0)


class Trigger(_Model):
    """How frames are started.

    ``off``: free run, one frame is one cell. ``hardware``: the line (PLC, encoder) triggers
    on ``source``. ``software``: the worker fires a software trigger at ``rate_hz`` (line
    simulation and tests); the trigger count is the cell id.
    """

    mode: Literal["off", "hardware", "software"] = "off"
    source: str = "Line1"
    rate_hz: float = Field(default=10.0, gt=0, le=1000)
    offset_ms: float = Field(default=0.0, ge=0, le=60000)
    """``software`` in a service: this camera's slots come this long after the shared
    grid's (a camera further down the line sees the cell later)."""


class LineScan(_Model):
    """A line-scan camera: each buffer is a strip of ``roi.height`` lines, a cell is
    ``strips_per_cell`` consecutive buffers. With a software trigger, ``trigger.rate_hz`` is
    the cell rate and the strips of a cell are triggered ``roi.height / line_rate_hz`` apart.
    """

    strips_per_cell: int = Field(ge=1, le=10000)
    line_rate_hz: float = Field(default=40000.0, gt=0, le=1_000_000)
    mm_per_line: float | None = Field(default=None, gt=0, le=1000)
    """The film's travel per line (the resolution along it): the page shows where a defect
    lies in metres. None: lines only."""


class _CameraBase(_Model):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    pixel_format: Literal["Mono8", "BGR8", "RGB8"] = "Mono8"
    roi: Roi | None = None
    trigger: Trigger = Trigger()
    exposure_us: float | None = Field(default=None, gt=0)
    grab_timeout_ms: int = Field(default=1000, gt=0, le=60000)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)
    line_scan: LineScan | None = None

    @model_validator(mode="after")
    def _line_scan_fits(self) -> Self:
        ls = self.line_scan
        if ls is None:
            return self
        if self.roi is None:
            msg = "line_scan needs roi (its height is the lines per strip)"
            raise ValueError(msg)
        cell_s = ls.strips_per_cell * self.roi.height / ls.line_rate_hz
        if self.trigger.mode == "software" and cell_s * self.trigger.rate_hz > 1.0:
            msg = (
                f"a cell of {ls.strips_per_cell} strips takes {cell_s:.3f} s at "
                f"{ls.line_rate_hz} lines/s: more than 1 / trigger.rate_hz"
            )
            raise ValueError(msg)
        return self

    def strip_period_s(self) -> float:
        """Seconds between strips of one cell (line-scan), else between cells."""
        if self.line_scan is None or self.roi is None:
            return 1.0 / self.trigger.rate_hz
        return self.roi.height / self.line_scan.line_rate_hz


class PylonEmulation(_Model):
    """Basler Camera Emulation: serve image files instead of the test pattern."""

    image_path: Path
    frame_period_us: float = Field(default=10000.0, gt=0)


class PylonCamera(_CameraBase):
    backend: Literal["pylon"]
    device: DeviceSelector = DeviceSelector()
    max_buffers: int = Field(default=8, ge=1, le=256)
    emulation: PylonEmulation | None = None


class HarvestersCamera(_CameraBase):
    backend: Literal["harvesters"]
    device: DeviceSelector = DeviceSelector()
    cti: Path
    frame_rate_hz: float | None = Field(default=None, gt=0)


class ReplayCamera(_CameraBase):
    backend: Literal["replay"]
    path: Path
    rate_hz: float = Field(default=10.0, gt=0, le=10000)
    loop: bool = True


class AravisCamera(_CameraBase):
    """A GigE Vision camera through Aravis; ``address`` skips discovery (docs/cameras.md)."""

    backend: Literal["aravis"]
    device: DeviceSelector = DeviceSelector()
    address: ipaddress.IPv4Address | None = None
    packet_size: int | None = Field(default=None, ge=576, le=16384)
    frame_rate_hz: float | None = Field(default=None, gt=0, le=10000)
    buffers: int = Field(default=8, ge=2, le=256)

    @model_validator(mode="after")
    def _usable(self) -> Self:
        if (a := self.address) and (a.is_multicast or a.is_unspecified or a.is_reserved):
            msg = f"address {a} is not a camera's address (multicast, broadcast or 0.0.0.0)"
            raise ValueError(msg)
        if self.frame_rate_hz is not None and self.trigger.mode == "software":
            msg = "frame_rate_hz paces free run: with trigger.mode software use trigger.rate_hz"
            raise ValueError(msg)
        return self


CameraConfig = Annotated[
    PylonCamera | HarvestersCamera | ReplayCamera | AravisCamera, Field(discriminator="backend")
]
