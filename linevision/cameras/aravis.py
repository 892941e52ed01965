"""GigE Vision cameras through Aravis (``backend: aravis``), by GObject introspection.

PyGObject (the ``aravis`` extra) and Debian's ``gir1.2-aravis-0.8`` are imported when the
first camera of this backend opens, so the daemon runs without them.

What the worker sees of each stream event:

- a buffer with status ``success``: its image, copied out of the buffer (into a bytes object
  the frame keeps) before the buffer goes back to the stream;
- any other status (``missing-packets``; ``timeout``, a frame still incomplete when its
  retention time ran out; ``size-mismatch``, ``wrong-packet-id``, ``aborted``...): a failed
  grab with the status in its detail, which the worker makes NG ``bad_frame``;
- no buffer within the timeout: ``None`` (no frame);
- ``control-lost`` (the camera stopped answering the heartbeat, or rebooted and forgot us),
  or a command that gets no answer: ``CameraError``, and the worker reconnects with back-off.

GigE Vision 1.x block ids are 16 bits and skip 0; :func:`unwrap` turns them into a counter
that keeps increasing, as the worker's frame matching needs.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import threading
import traceback
from ipaddress import IPv4Address
from typing import Any

import cv2
import numpy as np

from linevision.cameras.base import (
    CameraError,
    DeviceInfo,
    RawGrab,
    StreamStats,
    as_camera_error,
)
from linevision.config import AravisCamera
from linevision.log import get_logger
from linevision.types import Image

log = get_logger(__name__)

GVCP_PORT = 3956
_BLOCK_IDS = 65535
"""16-bit block ids run 1..65535, then 1 again (0 is never used)."""
_PROBE_TIMEOUT_S = 0.3
_SOCKET_BUFFER = 16 * 1024 * 1024
_USER_NAME_REGISTER = 0x00E8
"""GigE Vision bootstrap: the 16-byte user-defined name (``DeviceUserID``)."""
_PIXEL_FORMATS: dict[str, tuple[str, ...]] = {
    "Mono8": ("Mono8",),
    "BGR8": ("BGR8", "BGR8Packed", "RGB8", "RGB8Packed"),
    "RGB8": ("RGB8", "RGB8Packed", "BGR8", "BGR8Packed"),
}
_STREAM_INFOS = (
    "n_completed_buffers",
    "n_failures",
    "n_underruns",
    "n_timeouts",
    "n_missing_frames",
    "n_missing_packets",
    "n_resend_requests",
    "n_resent_packets",
)
"""Aravis's stream counters, in the order of :class:`StreamStats`'s fields."""
_STATUS_DETAIL = {
    "missing-packets": "missing packets (lost on the network, not resent in time)",
    "timeout": "incomplete frame: its retention time ran out before the last packet",
    "size-mismatch": "the frame is larger than the stream buffer",
    "wrong-packet-id": "a packet id out of the frame's range",
    "aborted": "acquisition aborted",
}


@functools.cache
def _gi() -> tuple[Any, Any, type[Exception]]:
    """Aravis, Gio and GLib.Error, imported once."""
    import gi  # noqa: PLC0415  (optional extra, imported only when an aravis camera is used)

    gi.require_version("Aravis", "0.8")
    from gi.repository import Aravis, Gio, GLib  # noqa: PLC0415

    return Aravis, Gio, GLib.Error


def load(camera_id: str = "aravis") -> tuple[Any, Any, type[Exception]]:
    """Aravis, Gio and GLib.Error; a CameraError naming what to install when they are absent."""
    try:
        return _gi()
    except (ImportError, ValueError) as exc:
        msg = (
            f"camera {camera_id!r}: the aravis backend needs PyGObject and Aravis 0.8 ({exc}): "
            "pip install 'linevision[aravis]' and apt-get install gir1.2-aravis-0.8"
        )
        raise CameraError(msg) from exc


def unwrap(last_id: int | None, last_counter: int, block_id: int) -> int:
    """The running frame counter of ``block_id``, given the previous block id and counter.

    16-bit block ids wrap from 65535 to 1; a step of more than half the range is a buffer
    older than the previous one. Extended (64-bit) ids never wrap.

    >>> unwrap(None, 0, 65534)
    65534
    >>> unwrap(65534, 65534, 65535), unwrap(65535, 65535, 1), unwrap(1, 65536, 4)
    (65535, 65536, 65539)
    >>> unwrap(2, 65537, 65535), unwrap(70000, 70000, 70002)
    (65535, 70002)
    """
    if last_id is None:
        return block_id
    if last_id > _BLOCK_IDS or block_id > _BLOCK_IDS:
        return last_counter + block_id - last_id
    step = (block_id - last_id) % _BLOCK_IDS
    return last_counter + (step if step <= _BLOCK_IDS // 2 else step - _BLOCK_IDS)


def answers(address: IPv4Address, timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
    """True when a GigE Vision device answers a register read (GVCP READREG of register 0,
    the protocol version) at ``address`` within ``timeout_s``: a quick check before Aravis,
    which waits 2.5 s for a camera that is not there."""
    req_id = os.getpid() & 0xFFFF or 1
    packet = struct.pack(">BBHHHI", 0x42, 0x01, 0x0080, 4, req_id, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendto(packet, (str(address), GVCP_PORT))
            reply = sock.recv(64)
        except OSError:
            return False
    return len(reply) >= 12 and struct.unpack(">HHHH", reply[:8])[1:4:2] == (0x0081, req_id)


def local_address(address: IPv4Address) -> str:
    """This host's address on the route to ``address`` (connecting a UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((str(address), GVCP_PORT))
        return str(sock.getsockname()[0])


def _info(aravis: Any, index: int) -> DeviceInfo:
    address = aravis.get_device_address(index)
    return DeviceInfo(
        backend="aravis",
        vendor=str(aravis.get_device_vendor(index) or ""),
        model=str(aravis.get_device_model(index) or ""),
        serial=str(aravis.get_device_serial_nbr(index) or ""),
        user_id="",
        name=f"{aravis.get_device_id(index)} at {address}",
    )


def enumerate_devices() -> list[tuple[str, DeviceInfo]]:
    """(Aravis device id, info) of every device a discovery finds. For GigE Vision that is a
    broadcast on every interface; Aravis's list does not carry the user-defined name."""
    aravis = load()[0]
    aravis.update_device_list()
    return [(aravis.get_device_id(i), _info(aravis, i)) for i in range(aravis.get_n_devices())]


def read_user_id(camera: Any) -> str:
    """The device's user-defined name (GigE Vision bootstrap register, else DeviceUserID)."""
    device = camera.get_device()
    if camera.is_gv_device():
        words = [device.read_register(_USER_NAME_REGISTER + 4 * k) for k in range(4)]
        raw = b"".join(int(w).to_bytes(4, "big") for w in words)
        return raw.split(b"\0", 1)[0].decode("ascii", "replace")
    if device.is_feature_available("DeviceUserID"):
        return str(device.get_string_feature_value("DeviceUserID"))
    return ""


class AravisDriver:
    """One GigE Vision (or other Aravis) camera, configured from an AravisCamera entry.

    ``device`` describes the opened device (None while closed).
    """

    def __init__(self, cfg: AravisCamera) -> None:
        self.cfg = cfg
        self.camera_id = cfg.id
        self.supports_software_trigger = False
        self.device: DeviceInfo | None = None
        self._camera: Any = None
        self._stream: Any = None
        self._lost = threading.Event()
        self._signal: tuple[Any, int] | None = None
        self._error: type[Exception] = Exception
        self._format = ""
        self._trigger_wait = False
        self._last_id: int | None = None
        self._counter = 0
        self.last_timestamps = (0, 0)
        """The last buffer's camera timestamp and Aravis's host timestamp (ns)."""

    def open(self) -> None:
        self.close()
        aravis, _, self._error = load(self.camera_id)
        self._last_id, self._counter = None, 0
        self._lost = threading.Event()
        try:
            self._camera = self._connect(aravis)
            self._configure(aravis, self._camera)
            self._start(aravis, self._camera)
        except BaseException as exc:
            # the frames of a kept traceback would hold the device (and its control) open
            traceback.clear_frames(exc.__traceback__)
            self.close()
            if isinstance(exc, self._error):
                raise as_camera_error(self.camera_id, "cannot open device", exc) from exc
            raise
        log.info(
            "camera_opened",
            camera=self.camera_id,
            serial=self.device.serial if self.device else "",
            pixel_format=self._format,
            packet_size=self._camera.gv_get_packet_size() if self._camera.is_gv_device() else 0,
        )

    def close(self) -> None:
        camera, stream, self._camera, self._stream = self._camera, self._stream, None, None
        self.device = None
        if self._signal is not None:
            device, handler = self._signal
            self._signal = None
            device.disconnect(handler)
        if camera is None:
            return
        if self._lost.is_set():
            # the camera is gone: Aravis would wait 2.5 s for each unanswered command
            # (stop, release control), so the last references go on a short-lived thread
            objects = [camera, stream]
            del camera, stream
            _release_later(objects)
            return
        try:
            camera.stop_acquisition()
        except Exception as exc:
            log.warning("camera_close_failed", camera=self.camera_id, error=str(exc))

    def trigger(self) -> bool:
        camera, _ = self._require_open()
        try:
            if self._trigger_wait and not camera.get_boolean("AcquisitionStatus"):
                return False  # still busy with the last trigger: this one would be lost
            camera.software_trigger()
        except self._error as exc:
            self._lost.set()
            # the exception's frames must not hold the lost device: its last reference goes
            # to close()'s release thread, or this thread would wait out Aravis's timeouts
            del camera
            raise as_camera_error(self.camera_id, "software trigger failed", exc) from exc
        return True

    def grab(self, timeout_s: float) -> RawGrab | None:
        _, stream = self._require_open()
        buffer = stream.timeout_pop_buffer(max(1, round(timeout_s * 1e6)))
        if buffer is None:
            del stream  # as in trigger(): no reference to the device in a raised frame
            self._require_open()
            return None
        try:
            return self._read(buffer)
        finally:
            stream.push_buffer(buffer)

    def stream_stats(self) -> StreamStats:
        _, stream = self._require_open()
        return StreamStats(*(int(stream.get_info_uint64_by_name(n)) for n in _STREAM_INFOS))

    def _require_open(self) -> tuple[Any, Any]:
        if self._camera is None:
            msg = f"camera {self.camera_id!r}: not open"
            raise CameraError(msg)
        if self._lost.is_set():
            msg = (
                f"camera {self.camera_id!r}: control lost (the heartbeat went unanswered, "
                "or the camera restarted)"
            )
            raise CameraError(msg)
        return self._camera, self._stream

    def _read(self, buffer: Any) -> RawGrab | None:
        block_id = int(buffer.get_frame_id())
        if block_id == 0:
            # 0 is no block id: Aravis sets a buffer's id from the leader packet, so a frame
            # whose leader was lost keeps the id of the buffer's last use, 0 on its first.
            # Its cell is faulted as lost when the next frame's id shows the gap.
            log.warning("buffer_without_block_id", camera=self.camera_id)
            return None
        counter = unwrap(self._last_id, self._counter, block_id)
        if self._last_id is not None and counter <= self._counter:
            # a second buffer for a frame already delivered (late packets of a frame Aravis
            # had given up on): never a new cell, never a frame out of order
            log.warning("stale_buffer", camera=self.camera_id, block_id=block_id)
            return None
        self._counter, self._last_id = counter, block_id
        self.last_timestamps = (int(buffer.get_timestamp()), int(buffer.get_system_timestamp()))
        stats = self.stream_stats()
        status = buffer.get_status().value_nick
        if status != "success":
            detail = f"buffer {status}: {_STATUS_DETAIL.get(status, 'failed')}"
            return RawGrab(self._counter, None, detail, stats)
        try:
            image = self._copy_image(buffer)
        except ValueError as exc:
            return RawGrab(self._counter, None, f"unusable buffer: {exc}", stats)
        return RawGrab(self._counter, image, stream=stats)

    def _copy_image(self, buffer: Any) -> Image:
        width, height = int(buffer.get_image_width()), int(buffer.get_image_height())
        bits = (int(buffer.get_image_pixel_format()) >> 16) & 0xFF
        channels = {8: 1, 24: 3}.get(bits)
        if channels is None:
            msg = f"{bits} bits per pixel, not 8-bit {self._format}"
            raise ValueError(msg)
        x_pad = int(buffer.get_image_padding()[0])
        row = width * channels
        data = np.frombuffer(buffer.get_image_data(), np.uint8)  # the one copy out
        if data.size < height * (row + x_pad) - x_pad:
            msg = f"{data.size} bytes for {width} x {height} x {channels}"
            raise ValueError(msg)
        rows = np.lib.stride_tricks.as_strided(data, (height, row), (row + x_pad, 1))
        pixels = rows.reshape(height, width, channels) if channels == 3 else rows
        if x_pad:
            pixels = np.ascontiguousarray(pixels)
        if channels == 3 and self._format[:3] != self.cfg.pixel_format[:3]:
            return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), dtype=np.uint8)
        return pixels

    def _connect(self, aravis: Any) -> Any:
        sel, address = self.cfg.device, self.cfg.address
        if address is not None:
            if not answers(address):
                msg = f"camera {self.camera_id!r}: no GigE Vision device answers at {address}"
                raise CameraError(msg)
            _, gio, _ = _gi()
            local = gio.InetAddress.new_from_string(local_address(address))
            remote = gio.InetAddress.new_from_string(str(address))
            camera = aravis.Camera.new_with_device(aravis.GvDevice.new(local, remote))
            self._check(camera, f"the device at {address}")
            return camera
        found = enumerate_devices()
        if not found:
            msg = f"camera {self.camera_id!r}: no Aravis device found"
            raise CameraError(msg)
        if sel.user_id is not None:
            return self._by_user_id(aravis, found)
        ids = [dev_id for dev_id, info in found if sel.serial in (None, info.serial)]
        if not ids:
            seen = ", ".join(info.serial for _, info in found)
            msg = f"camera {self.camera_id!r}: no Aravis device with serial {sel.serial!r} "
            raise CameraError(msg + f"(found: {seen})")
        camera = aravis.Camera.new(ids[0])
        self._check(camera, ids[0])
        return camera

    def _by_user_id(self, aravis: Any, found: list[tuple[str, DeviceInfo]]) -> Any:
        """Open each device in turn and read its user-defined name (Aravis's list lacks it)."""
        for dev_id, _ in found:
            camera = aravis.Camera.new(dev_id)
            if read_user_id(camera) == self.cfg.device.user_id:
                self._check(camera, dev_id)
                return camera
            del camera
        msg = (
            f"camera {self.camera_id!r}: no Aravis device with user id {self.cfg.device.user_id!r}"
        )
        raise CameraError(msg)

    def _check(self, camera: Any, where: str) -> None:
        """Refuse a device whose serial or user id is not the configured one."""
        sel = self.cfg.device
        serial, user_id = str(camera.get_device_serial_number() or ""), read_user_id(camera)
        for key, want, got in (("serial", sel.serial, serial), ("user id", sel.user_id, user_id)):
            if want is not None and got != want:
                msg = f"camera {self.camera_id!r}: {where} has {key} {got!r}, not {want!r}"
                raise CameraError(msg)
        self.device = DeviceInfo(
            backend="aravis",
            vendor=str(camera.get_vendor_name() or ""),
            model=str(camera.get_model_name() or ""),
            serial=serial,
            user_id=user_id,
            name=str(camera.get_device_id() or where),
        )

    def _configure(self, aravis: Any, camera: Any) -> None:
        cfg = self.cfg
        camera.stop_acquisition()  # a camera left streaming by a process that died
        if camera.is_gv_device():
            if cfg.packet_size is None:
                camera.gv_auto_packet_size()
            else:
                camera.gv_set_packet_size(cfg.packet_size)
        available = tuple(camera.dup_available_pixel_formats_as_strings() or ())
        self._format = next((f for f in _PIXEL_FORMATS[cfg.pixel_format] if f in available), "")
        if not self._format:
            msg = (
                f"camera {self.camera_id!r}: pixel format {cfg.pixel_format!r} not supported "
                f"(device offers: {', '.join(available) or 'none'})"
            )
            raise CameraError(msg)
        camera.set_pixel_format_from_string(self._format)
        if cfg.roi is not None:
            roi = cfg.roi
            for name, value in (
                ("OffsetX", 0),
                ("OffsetY", 0),
                ("Width", roi.width),
                ("Height", roi.height),
                ("OffsetX", roi.offset_x),
                ("OffsetY", roi.offset_y),
            ):
                camera.set_integer(name, value)
            got = tuple(camera.get_region())
            want = (roi.offset_x, roi.offset_y, roi.width, roi.height)
            if got != want:
                msg = f"camera {self.camera_id!r}: roi (x, y, w, h) {want} became {got}"
                raise CameraError(msg)
        if cfg.exposure_us is not None:
            if camera.is_exposure_auto_available():
                camera.set_exposure_time_auto(aravis.Auto.OFF)
            camera.set_exposure_time(cfg.exposure_us)
        if cfg.frame_rate_hz is not None:
            camera.set_frame_rate(cfg.frame_rate_hz)
        self._configure_trigger(camera)
        camera.set_acquisition_mode(aravis.AcquisitionMode.CONTINUOUS)

    def _configure_trigger(self, camera: Any) -> None:
        mode = self.cfg.trigger.mode
        self.supports_software_trigger = bool(camera.is_software_trigger_supported())
        # SFNC's trigger-ready flag, where the device has it (the fake camera has not)
        self._trigger_wait = camera.is_feature_available("AcquisitionStatus") and (
            "FrameTriggerWait"
            in (camera.dup_available_enumerations_as_strings("AcquisitionStatusSelector") or ())
        )
        if self._trigger_wait:
            camera.set_string("AcquisitionStatusSelector", "FrameTriggerWait")
        if mode == "off":
            if camera.is_feature_available("TriggerMode"):
                camera.clear_triggers()
            return
        source = "Software" if mode == "software" else self.cfg.trigger.source
        sources = tuple(camera.dup_available_trigger_sources() or ())
        if source not in sources:
            msg = (
                f"camera {self.camera_id!r}: trigger source {source!r} not offered "
                f"(device offers: {', '.join(sources) or 'none'})"
            )
            raise CameraError(msg)
        camera.set_trigger(source)

    def _start(self, aravis: Any, camera: Any) -> None:
        if camera.is_gv_device():
            # the ordinary UDP socket, which an unprivileged service gets anyway (a packet
            # socket needs CAP_NET_RAW): the same path as root and as the service user
            camera.gv_set_stream_options(aravis.GvStreamOption.PACKET_SOCKET_DISABLED)
        stream = camera.create_stream(None, None)
        if stream is None:
            msg = f"camera {self.camera_id!r}: cannot create the stream"
            raise CameraError(msg)
        payload = int(camera.get_payload())
        for _ in range(self.cfg.buffers):
            stream.push_buffer(aravis.Buffer.new_allocate(payload))
        if camera.is_gv_device():
            # room for a few frames while the stream thread waits for a core (Aravis's
            # default is one frame); the kernel caps it at net.core.rmem_max
            stream.set_property("socket-buffer", aravis.GvStreamSocketBuffer.FIXED)
            stream.set_property("socket-buffer-size", max(_SOCKET_BUFFER, 4 * payload))
        device = camera.get_device()
        lost = self._lost
        self._signal = (device, device.connect("control-lost", lambda *_: lost.set()))
        self._stream = stream
        camera.start_acquisition()


def _release_later(objects: list[Any]) -> None:
    def release() -> None:
        objects.clear()

    threading.Thread(target=release, name="aravis-release", daemon=True).start()
