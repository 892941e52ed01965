"""Which cameras are attached: pylon devices, plus a GenTL producer's devices when given."""

from __future__ import annotations

from pathlib import Path

from linevision.cameras.base import DeviceInfo
from linevision.log import get_logger

log = get_logger(__name__)


def list_devices(cti: Path | None = None) -> list[DeviceInfo]:
    """pylon devices (emulated ones only with PYLON_CAMEMU set before the first pylon call),
    then the devices of the GenTL producer ``cti`` if one is given."""
    from linevision.cameras import genicam, pylon  # noqa: PLC0415

    devices: list[DeviceInfo] = []
    try:
        devices.extend(pylon.enumerate_devices())
    except Exception as exc:
        log.warning("pylon_enumerate_failed", error=repr(exc))
    if cti is not None:
        devices.extend(genicam.enumerate_devices(cti))
    return devices
