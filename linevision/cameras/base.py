"""What every camera driver offers the acquisition worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from linevision.types import Image

Backend = Literal["pylon", "harvesters", "replay"]


class CameraError(Exception):
    """The device is lost, cannot be opened or cannot be configured.

    The message names the camera id and the cause.
    """


@dataclass(frozen=True, slots=True)
class RawGrab:
    """One buffer as the camera delivered it.

    ``image`` owns its memory (copied out of the camera buffer); ``None`` means the buffer
    failed or was incomplete, and ``detail`` says why.
    """

    frame_counter: int
    image: Image | None
    detail: str = ""


@dataclass(frozen=True)
class DeviceInfo:
    """One attached device as a backend lists it (no slots: ``vars()`` gives the fields)."""

    backend: Backend
    vendor: str
    model: str
    serial: str
    user_id: str
    name: str


class CameraDriver(Protocol):
    """One camera. Only the acquisition worker's thread calls it, except the test helpers."""

    camera_id: str
    supports_software_trigger: bool

    def open(self) -> None:
        """Open, configure and start grabbing. Raises CameraError."""

    def close(self) -> None:
        """Stop grabbing and release the device. Idempotent, never raises."""

    def trigger(self) -> bool:
        """Fire one software trigger. Returns False when the camera was not ready for it
        (the trigger was not sent, so no frame will come). Raises CameraError."""

    def grab(self, timeout_s: float) -> RawGrab | None:
        """The next buffer, or None when nothing arrived within ``timeout_s``.

        Raises CameraError when the device is lost.
        """


def as_camera_error(camera_id: str, action: str, cause: object) -> CameraError:
    """A CameraError whose message names the camera, what failed and why."""
    text = str(cause).strip() or type(cause).__name__
    msg = f"camera {camera_id!r}: {action}: {text}"
    return CameraError(msg)
