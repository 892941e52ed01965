"""Which cameras are attached: pylon devices, a GenTL producer's devices when given, and the
devices an Aravis discovery finds when asked (a GigE Vision broadcast on every interface)."""

from __future__ import annotations

from pathlib import Path

from linevision.cameras.base import CameraError, DeviceInfo
from linevision.log import get_logger

log = get_logger(__name__)


def list_devices(cti: Path | None = None, *, aravis: bool = False) -> list[DeviceInfo]:
    """pylon devices (emulated ones only with PYLON_CAMEMU set before the first pylon call),
    then the devices of the GenTL producer ``cti`` if one is given, then with ``aravis`` the
    devices Aravis finds (a backend that cannot be loaded is logged and skipped)."""
    from linevision.cameras import genicam, pylon  # noqa: PLC0415

    devices: list[DeviceInfo] = []
    try:
        devices.extend(pylon.enumerate_devices())
    except Exception as exc:
        log.warning("pylon_enumerate_failed", error=repr(exc))
    if cti is not None:
        devices.extend(genicam.enumerate_devices(cti))
    if aravis:
        from linevision.cameras import aravis as gige  # noqa: PLC0415

        try:
            devices.extend(info for _, info in gige.enumerate_devices())
        except CameraError as exc:
            log.warning("aravis_enumerate_failed", error=str(exc))
    return devices
