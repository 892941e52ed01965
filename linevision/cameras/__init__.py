"""Acquisition: camera drivers behind one protocol, and the per-camera worker thread."""

from __future__ import annotations

from linevision.cameras.base import CameraDriver, CameraError, DeviceInfo, RawGrab
from linevision.config import (
    AravisCamera,
    CameraConfig,
    HarvestersCamera,
    PylonCamera,
    ReplayCamera,
)

__all__ = ["CameraDriver", "CameraError", "DeviceInfo", "RawGrab", "open_driver"]


def open_driver(cfg: CameraConfig) -> CameraDriver:
    """A driver for ``cfg``'s backend, not yet opened (the worker opens it).

    pypylon, harvesters and Aravis (gi) are imported only when a camera of that backend is
    configured.
    """
    if isinstance(cfg, PylonCamera):
        from linevision.cameras.pylon import PylonDriver  # noqa: PLC0415

        return PylonDriver(cfg)
    if isinstance(cfg, HarvestersCamera):
        from linevision.cameras.genicam import HarvestersDriver  # noqa: PLC0415

        return HarvestersDriver(cfg)
    if isinstance(cfg, AravisCamera):
        from linevision.cameras.aravis import AravisDriver  # noqa: PLC0415

        return AravisDriver(cfg)
    if isinstance(cfg, ReplayCamera):
        from linevision.cameras.files import ReplayDriver  # noqa: PLC0415

        return ReplayDriver(cfg)
    msg = f"camera {cfg.id!r}: unknown backend"
    raise CameraError(msg)
