"""What every camera driver offers the acquisition worker."""

from __future__ import annotations

from dataclasses import astuple, dataclass
from typing import Literal, Protocol

from linevision.types import Image

Backend = Literal["pylon", "harvesters", "replay", "aravis"]


class CameraError(Exception):
    """The device is lost, cannot be opened or cannot be configured.

    The message names the camera id and the cause.
    """


@dataclass(frozen=True, slots=True)
class StreamStats:
    """A network camera's stream counters since its stream was created (GigE Vision).

    ``completed`` buffers delivered whole, ``failures`` delivered incomplete or failed,
    ``underruns`` frames dropped for want of a free buffer, ``timeouts`` buffers given up at
    the frame retention time, ``missing_frames`` frames of which no packet arrived,
    ``missing_packets`` packets never received (after resends), ``resend_requests`` packets
    asked for again, ``resent_packets`` packets that came on such a request.
    """

    completed: int = 0
    failures: int = 0
    underruns: int = 0
    timeouts: int = 0
    missing_frames: int = 0
    missing_packets: int = 0
    resend_requests: int = 0
    resent_packets: int = 0

    def plus(self, other: StreamStats) -> StreamStats:
        """Field-wise sum (counters of successive streams of one camera).

        >>> StreamStats(completed=2, failures=1).plus(StreamStats(completed=3)).completed
        5
        """
        return StreamStats(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True, slots=True)
class RawGrab:
    """One buffer as the camera delivered it.

    ``image`` owns its memory (copied out of the camera buffer); ``None`` means the buffer
    failed or was incomplete, and ``detail`` says why. ``stream``: the driver's stream
    counters after this buffer, for backends that have them.
    """

    frame_counter: int
    image: Image | None
    detail: str = ""
    stream: StreamStats | None = None


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
