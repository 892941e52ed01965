"""Aravis's fake GigE Vision camera as a child process, and a network namespace joined to this
one by a veth pair (imported by tests; not a test module).

``arv-fake-gv-camera-0.8`` answers GVCP on port 3956 of one interface address, so two fakes
cannot share an address: a file lock per address serialises the test runs that use it.
With ``-d stream-thread:3`` the fake logs every frame it sends and every packet it drops on
purpose (``-r``), which is the ground truth the loss tests compare with.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Self

import numpy as np
import numpy.typing as npt

from linevision.cameras.aravis import answers

FAKE = shutil.which("arv-fake-gv-camera-0.8")
_SENT = re.compile(r"Send frame (\d+)")
_DROPPED = re.compile(r"Drop GVSP \w+ packet frame: ?(\d+)")


@contextlib.contextmanager
def address_lock(address: str, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold the machine-wide lock of one fake camera address (or one test subnet)."""
    path = Path(tempfile.gettempdir()) / f"linevision-gige-{address}.lock"
    with path.open("a") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    msg = f"{path} stayed locked for {timeout_s} s"
                    raise TimeoutError(msg) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class FakeGigE:
    """One fake camera: ``start`` waits until it answers, ``kill`` is a pulled cable or a
    crash, ``stop`` ends it; its log is kept in ``log_path``."""

    def __init__(
        self,
        serial: str,
        log_path: Path,
        address: str = "127.0.0.1",
        lost_per_thousand: int = 0,
        netns: str | None = None,
    ) -> None:
        assert FAKE is not None, "arv-fake-gv-camera-0.8 is missing: apt-get install aravis-tools"
        self.serial, self.address, self.log_path = serial, address, log_path
        self.lost_per_thousand, self.netns = lost_per_thousand, netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 20.0) -> None:
        assert self.proc is None
        if self.netns is None and answers(IPv4Address(self.address)):
            msg = f"another GigE Vision device answers at {self.address}:3956"
            raise RuntimeError(msg)
        # GLib logs to stdout: line-buffered, so a killed fake's log is complete
        cmd = ["stdbuf", "-oL", FAKE or "", "-i", self.address, "-s", self.serial]
        cmd += ["-d", os.environ.get("LV_FAKE_DEBUG", "stream-thread:3")]
        if self.lost_per_thousand:
            cmd += ["-r", str(self.lost_per_thousand)]
        if self.netns is not None:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"=== start {self.starts}\n")
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not answers(IPv4Address(self.address), 0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                msg = f"the fake camera did not answer at {self.address}: {self.log_tail()}"
                raise RuntimeError(msg)

    def kill(self) -> None:
        """SIGKILL: no goodbye on the wire, as when the cable is pulled or the camera dies."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 800) -> str:
        return self.log_text()[-n:]

    def sent_frames(self, start: int | None = None) -> list[int]:
        """The frame ids the fake sent, in order (of one start, 1-based, or of all)."""
        return [int(m) for m in _SENT.findall(self._section(start))]

    def damaged_frames(self, start: int | None = None) -> set[int]:
        """Frame ids of which the fake dropped at least one packet (leader, data or trailer)."""
        return {int(m) for m in _DROPPED.findall(self._section(start))}

    def _section(self, start: int | None) -> str:
        text = self.log_text()
        if start is None:
            return text
        return text.split(f"=== start {start}\n", 1)[1].split("=== start ", 1)[0]


def ramp(frame_id: int, height: int, width: int, scale: float = 1.0) -> npt.NDArray[np.uint8]:
    """The fake's Mono8 test pattern (arvfakecamera.c, ``arv_fake_camera_diagonal_ramp``):
    ``(x + y + frame_id) % 255`` times ``1 + gain + log10(exposure_us / 10000)``, clamped
    and truncated to 8 bits; x and y count from the ROI's corner."""
    y, x = np.mgrid[0:height, 0:width]
    value = ((x + y + frame_id) % 255).astype(np.float64) * scale
    return np.clip(value, 0, 255).astype(np.uint8)


def jet(index: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The fake's 256-entry jet colour map (RGB) as the piecewise-linear ramps it tabulates."""
    i = index.astype(np.int32)
    r = np.minimum(4 * i - 380, 1148 - 4 * i)
    g = np.minimum(4 * i - 124, 892 - 4 * i)
    b = np.minimum(4 * i + 132, 636 - 4 * i)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def is_root() -> bool:
    return os.geteuid() == 0


class VethNamespace:
    """A network namespace and a veth pair: ``host_ip`` on the end left in this namespace,
    ``camera_ip`` on the end inside it, both with ``mtu``. Created by the test and deleted
    with it (deleting the namespace deletes the pair); the machine's own interfaces are
    never touched."""

    SUBNET = "192.168.77"

    def __init__(self, mtu: int = 9000) -> None:
        tag = f"{os.getpid() % 100000}"
        self.name = f"lvgige{tag}"
        self.host_if, self.camera_if = f"lvh{tag}", f"lvc{tag}"
        self.host_ip, self.camera_ip = f"{self.SUBNET}.1", f"{self.SUBNET}.2"
        self.mtu = mtu

    def __enter__(self) -> Self:
        self._delete()
        try:
            n, mtu = self.name, str(self.mtu)
            for cmd in (
                ["ip", "netns", "add", n],
                ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.camera_if],
                ["ip", "link", "set", self.camera_if, "netns", n],
                ["ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if],
                ["ip", "link", "set", self.host_if, "mtu", mtu, "up"],
                ["ip", "-n", n, "addr", "add", f"{self.camera_ip}/24", "dev", self.camera_if],
                ["ip", "-n", n, "link", "set", self.camera_if, "mtu", mtu, "up"],
                ["ip", "-n", n, "link", "set", "lo", "up"],
            ):
                subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        except BaseException:
            self._delete()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._delete()

    def exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def _delete(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
