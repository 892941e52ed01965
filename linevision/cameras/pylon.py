"""Basler cameras (and the pylon Camera Emulation) through pypylon's InstantCamera.

``PYLON_CAMEMU`` must be in the environment before the first ``TlFactory.GetInstance()``
for emulated devices to appear; this module never sets it.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from pypylon import genicam, pylon

from linevision.cameras.base import CameraError, DeviceInfo, RawGrab, as_camera_error
from linevision.config import PylonCamera
from linevision.log import get_logger

log = get_logger(__name__)

_PIXEL_FORMATS: dict[str, tuple[str, ...]] = {
    "Mono8": ("Mono8",),
    "BGR8": ("BGR8", "BGR8Packed"),
    "RGB8": ("RGB8", "RGB8Packed"),
}
_TRIGGER_READY_WAIT_MS = 50
_FACTORY_LOCK = threading.Lock()


def _factory() -> Any:
    with _FACTORY_LOCK:
        return pylon.TlFactory.GetInstance()


def _device_info(info: Any) -> DeviceInfo:
    return DeviceInfo(
        backend="pylon",
        vendor=str(info.GetVendorName()),
        model=str(info.GetModelName()),
        serial=str(info.GetSerialNumber()),
        user_id=str(info.GetUserDefinedName()),
        name=str(info.GetFriendlyName()),
    )


def enumerate_devices() -> list[DeviceInfo]:
    """Every device pylon sees (emulated ones only when PYLON_CAMEMU was set in time)."""
    return [_device_info(info) for info in _factory().EnumerateDevices()]


class PylonDriver:
    """One pylon device, configured from a PylonCamera entry, grabbing OneByOne.

    ``device`` describes the opened device (None while closed).
    """

    supports_software_trigger: bool = True

    def __init__(self, cfg: PylonCamera) -> None:
        self.cfg = cfg
        self.camera_id = cfg.id
        self.device: DeviceInfo | None = None
        self._camera: Any = None
        self._ready_wait_ms = max(1, min(_TRIGGER_READY_WAIT_MS, round(500 / cfg.trigger.rate_hz)))

    def open(self) -> None:
        self.close()
        try:
            factory = _factory()
            info = self._select_device(factory.EnumerateDevices())
            camera = pylon.InstantCamera(factory.CreateDevice(info))
        except genicam.GenericException as exc:
            raise as_camera_error(self.camera_id, "cannot create device", exc) from exc
        self._camera = camera
        try:
            camera.Open()
        except genicam.GenericException as exc:
            self.close()
            raise as_camera_error(self.camera_id, "cannot open device", exc) from exc
        try:
            self._configure()
            camera.MaxNumBuffer.SetValue(self.cfg.max_buffers)
            camera.StartGrabbing(pylon.GrabStrategy_OneByOne)
        except CameraError:
            self.close()
            raise
        except genicam.GenericException as exc:
            self.close()
            raise as_camera_error(self.camera_id, "cannot configure device", exc) from exc
        self.device = _device_info(info)
        log.info(
            "camera_opened",
            camera=self.camera_id,
            serial=self.device.serial,
            model=self.device.model,
        )

    def close(self) -> None:
        camera, self._camera = self._camera, None
        self.device = None
        if camera is None:
            return
        for step in ("StopGrabbing", "Close", "DestroyDevice"):
            try:
                getattr(camera, step)()
            except Exception as exc:
                log.warning(
                    "camera_close_step_failed", camera=self.camera_id, step=step, error=str(exc)
                )

    def trigger(self) -> bool:
        camera = self._require_open()
        try:
            if not camera.WaitForFrameTriggerReady(
                self._ready_wait_ms, pylon.TimeoutHandling_Return
            ):
                self._check_present(camera)
                return False
            camera.ExecuteSoftwareTrigger()
        except genicam.GenericException as exc:
            self._check_present(camera)
            raise as_camera_error(self.camera_id, "software trigger failed", exc) from exc
        return True

    def grab(self, timeout_s: float) -> RawGrab | None:
        camera = self._require_open()
        timeout_ms = max(0, round(timeout_s * 1000))
        try:
            result = camera.RetrieveResult(timeout_ms, pylon.TimeoutHandling_Return)
        except genicam.GenericException as exc:
            raise as_camera_error(self.camera_id, "grab failed", exc) from exc
        try:
            if not result.IsValid():
                self._check_present(camera)
                return None
            counter = int(result.BlockID)
            if not result.GrabSucceeded():
                self._check_present(camera)
                detail = str(result.GetErrorDescription()) or "grab failed"
                return RawGrab(frame_counter=counter, image=None, detail=detail)
            with result.GetArrayZeroCopy() as view:
                image = np.array(view, dtype=np.uint8, copy=True)
            return RawGrab(frame_counter=counter, image=image)
        except genicam.GenericException as exc:
            raise as_camera_error(self.camera_id, "cannot read grab result", exc) from exc
        finally:
            if result.IsValid():
                result.Release()

    def _check_present(self, camera: Any) -> None:
        """Raise when the device is gone. Asked only after a trigger or grab that did not
        succeed: a removed device shows there first, and the query costs ~0.5 ms a frame."""
        if camera.IsCameraDeviceRemoved():
            msg = f"camera {self.camera_id!r}: device removed"
            raise CameraError(msg)

    def force_failed_buffers(self, count: int) -> None:
        """Emulator only: the next ``count`` buffers fail as "incompletely grabbed"."""
        camera = self._require_open()
        camera.ForceFailedBufferCount.SetValue(count)
        camera.ForceFailedBuffer.Execute()

    def emulate_device_removal(self) -> None:
        """Emulator only: fire the device-removal notification, as an unplugged camera does."""
        camera = self._require_open()
        camera.FirePnPCallbackValue.SetValue(0)
        camera.FirePnPCallback.Execute()

    def _require_open(self) -> Any:
        if self._camera is None:
            msg = f"camera {self.camera_id!r}: not open"
            raise CameraError(msg)
        return self._camera

    def _select_device(self, devices: Any) -> Any:
        sel = self.cfg.device
        found = list(devices)
        if not found:
            msg = f"camera {self.camera_id!r}: no pylon device found"
            raise CameraError(msg)
        if sel.serial is not None:
            matches = [d for d in found if str(d.GetSerialNumber()) == sel.serial]
            wanted = f"serial {sel.serial!r}"
        elif sel.user_id is not None:
            matches = [d for d in found if str(d.GetUserDefinedName()) == sel.user_id]
            wanted = f"user id {sel.user_id!r}"
        else:
            return found[0]
        if not matches:
            seen = ", ".join(str(d.GetSerialNumber()) for d in found)
            msg = f"camera {self.camera_id!r}: no pylon device with {wanted} (found: {seen})"
            raise CameraError(msg)
        return matches[0]

    def _configure(self) -> None:
        cfg = self.cfg
        self._set_enum("PixelFormat", _PIXEL_FORMATS[cfg.pixel_format])
        if cfg.roi is not None:
            self._set_roi()
        if cfg.emulation is not None:
            self._set("TestImageSelector", "Off")
            self._set("ImageFileMode", "On")
            self._set("ImageFilename", str(cfg.emulation.image_path))
            self._set("ExposureTimeAbs", cfg.emulation.frame_period_us)
        elif cfg.exposure_us is not None:
            if self._node("ExposureAuto").IsValid():
                self._set("ExposureAuto", "Off")
            name = "ExposureTimeAbs" if self._node("ExposureTimeAbs").IsValid() else "ExposureTime"
            self._set(name, cfg.exposure_us)
        self._configure_trigger()

    def _configure_trigger(self) -> None:
        mode = self.cfg.trigger.mode
        has_trigger = self._node("TriggerMode").IsValid()
        if mode == "off" and not has_trigger:
            return
        self._set("TriggerSelector", "FrameStart")
        if mode == "off":
            self._set("TriggerMode", "Off")
            return
        self._set("TriggerMode", "On")
        self._set("TriggerSource", "Software" if mode == "software" else self.cfg.trigger.source)

    def _set_roi(self) -> None:
        roi = self.cfg.roi
        assert roi is not None
        for axis, size in (
            ("Width", roi.width + roi.offset_x),
            ("Height", roi.height + roi.offset_y),
        ):
            limit = self._node(f"{axis}Max")
            if limit.IsValid() and limit.IsWritable() and limit.GetValue() < size:
                limit.SetValue(size)
        self._set("OffsetX", 0)
        self._set("OffsetY", 0)
        self._set("Width", roi.width)
        self._set("Height", roi.height)
        self._set("OffsetX", roi.offset_x)
        self._set("OffsetY", roi.offset_y)

    def _node(self, name: str) -> Any:
        return self._camera.GetNodeMap().GetNode(name)

    def _set(self, name: str, value: object) -> None:
        node = self._node(name)
        if not node.IsValid():
            msg = f"camera {self.camera_id!r}: the device has no feature {name}"
            raise CameraError(msg)
        if node.IsReadable() and node.GetValue() == value:
            return
        if not node.IsWritable():
            msg = f"camera {self.camera_id!r}: feature {name} is not writable now"
            raise CameraError(msg)
        try:
            node.SetValue(value)
        except genicam.GenericException as exc:
            raise as_camera_error(self.camera_id, f"cannot set {name} to {value!r}", exc) from exc

    def _set_enum(self, name: str, candidates: tuple[str, ...]) -> None:
        node = self._node(name)
        available = tuple(node.GetSymbolics()) if node.IsValid() else ()
        for value in candidates:
            if value in available:
                self._set(name, value)
                return
        msg = (
            f"camera {self.camera_id!r}: {name} {candidates[0]!r} not supported "
            f"(device offers: {', '.join(available) or 'none'})"
        )
        raise CameraError(msg)
