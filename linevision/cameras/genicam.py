"""Any GenTL producer (.cti) through harvesters.

A producer loaded by a second ``Harvester`` in the same process lists no devices, and
``Harvester.update()`` destroys every image acquirer already created; so all drivers of one
.cti share one Harvester, refreshed only while none of its devices is open.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from genicam import genapi, gentl
from harvesters.core import Callback, Harvester, ImageAcquirer

from linevision.cameras.base import CameraError, DeviceInfo, RawGrab, as_camera_error
from linevision.config import HarvestersCamera
from linevision.log import get_logger
from linevision.types import Image

log = get_logger(__name__)

_GENICAM_ERRORS = (genapi.GenericException, gentl.GenericException)

_PIXEL_FORMATS: dict[str, tuple[str, ...]] = {
    "Mono8": ("Mono8",),
    "BGR8": ("BGR8", "BGR8Packed", "RGB8", "RGB8Packed", "BGRa8", "RGBa8"),
    "RGB8": ("RGB8", "RGB8Packed", "BGR8", "BGR8Packed", "RGBa8", "BGRa8"),
}
_CONVERSIONS: dict[tuple[str, str], int] = {
    ("BGR8", "RGB8"): cv2.COLOR_RGB2BGR,
    ("BGR8", "RGB8Packed"): cv2.COLOR_RGB2BGR,
    ("BGR8", "BGRa8"): cv2.COLOR_BGRA2BGR,
    ("BGR8", "RGBa8"): cv2.COLOR_RGBA2BGR,
    ("RGB8", "BGR8"): cv2.COLOR_BGR2RGB,
    ("RGB8", "BGR8Packed"): cv2.COLOR_BGR2RGB,
    ("RGB8", "RGBa8"): cv2.COLOR_RGBA2RGB,
    ("RGB8", "BGRa8"): cv2.COLOR_BGRA2RGB,
}


@dataclass
class _Shared:
    harvester: Any
    users: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_REGISTRY: dict[str, _Shared] = {}
_REGISTRY_LOCK = threading.Lock()


def _acquire(cti: Path) -> _Shared:
    key = str(cti.resolve())
    with _REGISTRY_LOCK:
        shared = _REGISTRY.get(key)
        if shared is None:
            harvester = Harvester()
            harvester.add_file(key, check_existence=True)
            shared = _REGISTRY[key] = _Shared(harvester=harvester)
        if shared.users == 0:
            shared.harvester.update()
        shared.users += 1
        return shared


def _release(cti: Path) -> None:
    key = str(cti.resolve())
    with _REGISTRY_LOCK:
        shared = _REGISTRY.get(key)
        if shared is None:
            return
        shared.users -= 1
        if shared.users <= 0:
            del _REGISTRY[key]
            shared.harvester.reset()


def _text(value: object) -> str:
    return "" if value is None else str(value)


def enumerate_devices(cti: Path) -> list[DeviceInfo]:
    """Every device the GenTL producer ``cti`` lists."""
    try:
        shared = _acquire(cti)
    except (OSError, *_GENICAM_ERRORS) as exc:
        log.warning("gentl_enumerate_failed", cti=str(cti), error=str(exc))
        return []
    try:
        with shared.lock:
            infos = [d.property_dict for d in shared.harvester.device_info_list]
    finally:
        _release(cti)
    return [
        DeviceInfo(
            backend="harvesters",
            vendor=_text(p.get("vendor")),
            model=_text(p.get("model")),
            serial=_text(p.get("serial_number")),
            user_id=_text(p.get("user_defined_name")),
            name=_text(p.get("display_name")),
        )
        for p in infos
    ]


class HarvestersDriver:
    """One GenTL device, configured from a HarvestersCamera entry."""

    def __init__(self, cfg: HarvestersCamera) -> None:
        self.cfg = cfg
        self.camera_id = cfg.id
        self.supports_software_trigger = False
        self._shared: _Shared | None = None
        self._ia: Any = None
        self._device_format = ""
        self._counter = 0
        self._incomplete = _IncompleteCounter()

    def open(self) -> None:
        self.close()
        self._incomplete.count = 0
        try:
            self._shared = _acquire(self.cfg.cti)
        except (OSError, *_GENICAM_ERRORS) as exc:
            raise as_camera_error(
                self.camera_id, f"cannot load producer {self.cfg.cti}", exc
            ) from exc
        try:
            self._ia = self._create()
            self._configure()
            self._ia.add_callback(ImageAcquirer.Events.INCOMPLETE_BUFFER, self._incomplete)
            self._ia.start()
        except CameraError:
            self.close()
            raise
        except (ValueError, *_GENICAM_ERRORS) as exc:
            self.close()
            raise as_camera_error(self.camera_id, "cannot open device", exc) from exc
        log.info("camera_opened", camera=self.camera_id, pixel_format=self._device_format)

    def close(self) -> None:
        ia, self._ia = self._ia, None
        shared, self._shared = self._shared, None
        if ia is not None and shared is not None:
            with shared.lock:
                try:
                    ia.destroy()
                except Exception as exc:
                    log.warning("camera_close_failed", camera=self.camera_id, error=str(exc))
                if ia in shared.harvester.image_acquirers:
                    shared.harvester.image_acquirers.remove(ia)
        if shared is not None:
            try:
                _release(self.cfg.cti)
            except Exception as exc:
                log.warning("producer_release_failed", camera=self.camera_id, error=str(exc))

    def trigger(self) -> bool:
        msg = f"camera {self.camera_id!r}: the device has no software trigger"
        raise CameraError(msg)

    def grab(self, timeout_s: float) -> RawGrab | None:
        if self._ia is None:
            msg = f"camera {self.camera_id!r}: not open"
            raise CameraError(msg)
        try:
            buffer = self._ia.try_fetch(timeout=max(timeout_s, 0.001))
        except _GENICAM_ERRORS as exc:
            raise as_camera_error(self.camera_id, "fetch failed", exc) from exc
        if buffer is None:
            if self._incomplete.count:
                self._incomplete.count -= 1
                self._counter += 1
                return RawGrab(self._counter, None, "incomplete buffer discarded by the producer")
            return None
        try:
            with buffer:
                counter = self._frame_id(buffer)
                try:
                    image = self._copy_image(buffer.payload.components[0])
                except (ValueError, IndexError, AttributeError, *_GENICAM_ERRORS) as exc:
                    return RawGrab(counter, None, f"unusable buffer: {exc}")
        except _GENICAM_ERRORS as exc:
            raise as_camera_error(self.camera_id, "cannot read buffer", exc) from exc
        return RawGrab(counter, image)

    def _frame_id(self, buffer: Any) -> int:
        try:
            self._counter = int(buffer.frame_id)
        except (AttributeError, *_GENICAM_ERRORS):
            self._counter += 1
        return self._counter

    def _create(self) -> Any:
        assert self._shared is not None
        sel = self.cfg.device
        key: dict[str, str] | None = None
        if sel.serial is not None:
            key = {"serial_number": sel.serial}
        elif sel.user_id is not None:
            key = {"user_defined_name": sel.user_id}
        with self._shared.lock:
            if not self._shared.harvester.device_info_list:
                msg = f"camera {self.camera_id!r}: no device from producer {self.cfg.cti}"
                raise CameraError(msg)
            in_main = threading.current_thread() is threading.main_thread()
            previous = signal.getsignal(signal.SIGINT) if in_main else None
            try:
                return self._shared.harvester.create(key)
            except ValueError as exc:
                raise as_camera_error(self.camera_id, f"no device matches {key}", exc) from exc
            finally:
                if previous is not None:
                    signal.signal(signal.SIGINT, previous)

    def _configure(self) -> None:
        cfg = self.cfg
        nm = self._ia.remote_device.node_map
        self._device_format = self._choose_format(nm)
        self._write(nm, "PixelFormat", self._device_format)
        if cfg.roi is not None:
            for name, value in (("OffsetX", 0), ("OffsetY", 0)):
                if nm.has_node(name):
                    self._write(nm, name, value)
            self._write(nm, "Width", cfg.roi.width)
            self._write(nm, "Height", cfg.roi.height)
            for name, value in (("OffsetX", cfg.roi.offset_x), ("OffsetY", cfg.roi.offset_y)):
                if value or nm.has_node(name):
                    self._write(nm, name, value)
        if cfg.frame_rate_hz is not None:
            self._write(nm, "AcquisitionFrameRate", cfg.frame_rate_hz)
        if cfg.exposure_us is not None:
            self._write(nm, "ExposureTime", cfg.exposure_us)
        self._configure_trigger(nm)

    def _configure_trigger(self, nm: Any) -> None:
        has_trigger = nm.has_node("TriggerMode") and nm.has_node("TriggerSource")
        self.supports_software_trigger = has_trigger and "Software" in self._symbolics(
            nm, "TriggerSource"
        )
        mode = self.cfg.trigger.mode
        if mode == "off":
            if nm.has_node("TriggerMode"):
                self._write(nm, "TriggerMode", "Off")
            return
        if not has_trigger:
            msg = (
                f"camera {self.camera_id!r}: trigger mode {mode!r} needs the TriggerMode and "
                "TriggerSource features, which this device does not have"
            )
            raise CameraError(msg)
        if nm.has_node("TriggerSelector"):
            self._write(nm, "TriggerSelector", "FrameStart")
        self._write(nm, "TriggerMode", "On")
        self._write(
            nm, "TriggerSource", "Software" if mode == "software" else self.cfg.trigger.source
        )

    def _choose_format(self, nm: Any) -> str:
        available = self._symbolics(nm, "PixelFormat")
        for name in _PIXEL_FORMATS[self.cfg.pixel_format]:
            if name in available:
                return name
        msg = (
            f"camera {self.camera_id!r}: pixel format {self.cfg.pixel_format!r} not supported "
            f"(device offers: {', '.join(available) or 'none'})"
        )
        raise CameraError(msg)

    def _symbolics(self, nm: Any, name: str) -> tuple[str, ...]:
        return tuple(nm.get_node(name).symbolics) if nm.has_node(name) else ()

    def _write(self, nm: Any, name: str, value: object) -> None:
        if not nm.has_node(name):
            msg = f"camera {self.camera_id!r}: the device has no feature {name}"
            raise CameraError(msg)
        try:
            nm.get_node(name).value = value
        except _GENICAM_ERRORS as exc:
            raise as_camera_error(self.camera_id, f"cannot set {name} to {value!r}", exc) from exc

    def _copy_image(self, component: Any) -> Image:
        width, height = int(component.width), int(component.height)
        channels = round(component.num_components_per_pixel)
        data = component.data
        if data is None or data.dtype != np.uint8:
            msg = f"not an 8-bit image ({component.data_format})"
            raise ValueError(msg)
        shape = (height, width) if channels == 1 else (height, width, channels)
        pixels = data[: height * width * channels].reshape(shape)
        conversion = _CONVERSIONS.get((self.cfg.pixel_format, self._device_format))
        if conversion is not None:
            return np.asarray(cv2.cvtColor(pixels, conversion), dtype=np.uint8)
        return np.array(pixels, dtype=np.uint8, copy=True)


class _IncompleteCounter(Callback):  # type: ignore[misc]  # harvesters is untyped
    """Counts the incomplete buffers harvesters discards inside ``try_fetch``."""

    def __init__(self) -> None:
        self.count = 0

    def emit(self, context: object = None) -> None:
        del context
        self.count += 1
