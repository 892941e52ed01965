"""``linevision bench --stations pole_piece --camera aravis``: frame -> verdict of the
pole-piece station on a GigE Vision camera against the pylon Camera Emulation, at the same
rates in the same run.

The GigE Vision camera is Aravis's fake camera (``arv-fake-gv-camera-0.8``), started on
loopback for the run: frames cross the kernel's UDP stack as GVSP packets and are assembled
by Aravis's stream thread. The emulator hands frames over in process (no network). Both run
free (one frame is one cell) at each rate with 224 x 224 Mono8 frames, the model's input
size, so both do the same work after acquisition; the latency is the verdict's
``latency_ms``: frame delivered to the host -> verdict decided. For the GigE camera the
bench also measures the network path before that, camera -> host: the fake stamps each
frame with the host's wall clock when it starts filling it, and the frame is taken off the
stream at a known wall-clock time.

CPU: the daemon's process (``cpu_percent``, the emulator's work included) and, for the
GigE run, the fake camera's process (``camera_cpu_percent``: work a real camera does).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from pathlib import Path

import numpy as np

from linevision.cameras.aravis import AravisDriver, answers
from linevision.config import AravisCamera, Config
from linevision.log import get_logger
from linevision.tools import bench, demo

log = get_logger(__name__)

RATES = (20.0, 100.0)
SIZE = 224
FAKE = "arv-fake-gv-camera-0.8"
_ADDRESS = "127.0.0.1"
_SERIAL = "LVBENCH1"
_TICKS = 100.0  # /proc/<pid>/stat counts CPU time in clock ticks of 1/100 s (USER_HZ)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@contextmanager
def fake_camera(address: str = _ADDRESS, serial: str = _SERIAL) -> Iterator[int]:
    """The fake camera for the run; yields its pid. A ValueError names what is missing."""
    binary = shutil.which(FAKE)
    if binary is None:
        msg = f"{FAKE} not found: apt-get install aravis-tools"
        raise ValueError(msg)
    if answers(IPv4Address(address)):
        msg = f"a GigE Vision device already answers at {address}: stop it first"
        raise ValueError(msg)
    proc = subprocess.Popen(  # noqa: S603  (a fixed binary found on PATH, fixed arguments)
        [binary, "-i", address, "-s", serial],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10.0
        while not answers(IPv4Address(address), 0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                msg = f"{FAKE} did not start at {address}"
                raise ValueError(msg)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)


def camera_entry(kind: str, rate_hz: float, images: Path) -> dict[str, object]:
    if kind == "aravis":
        return {
            "id": "pole_piece_cam",
            "backend": "aravis",
            "address": _ADDRESS,
            "device": {"serial": _SERIAL},
            "roi": {"width": SIZE, "height": SIZE},
            "exposure_us": 10000,
            "frame_rate_hz": rate_hz,
            # 0.3 s of frames: with 8 at 100/s a starved acquisition thread lost frames
            "buffers": max(8, round(rate_hz * 0.3)),
        }
    return {
        "id": "pole_piece_cam",
        "backend": "pylon",
        "device": {"serial": "0815-0000"},
        "emulation": {"image_path": str(images), "frame_period_us": 1e6 / rate_hz},
    }


def line_config(kind: str, rate_hz: float, images: Path, endpoint: str) -> Config:
    return Config.model_validate(
        {
            "cameras": [camera_entry(kind, rate_hz, images)],
            "stations": [
                {
                    "name": "pole_piece",
                    "type": "pole_piece",
                    "cameras": ["pole_piece_cam"],
                    "model": "pole_piece",
                    "queue_size": 16,
                }
            ],
            "bus": {"publish": endpoint},
            "archive": {"enabled": False},
            "metrics": {"enabled": False},
            "control": {"enabled": False},
        }
    )


def camera_to_host(rate_hz: float, frames: int) -> dict[str, float]:
    """Camera -> host of ``frames`` frames of the fake camera, straight from the driver."""
    cfg = AravisCamera.model_validate(camera_entry("aravis", rate_hz, Path()))
    driver = AravisDriver(cfg)
    driver.open()
    delays: list[float] = []
    try:
        while len(delays) < frames:
            raw = driver.grab(1.0)
            if raw is not None and raw.image is not None:
                delays.append((time.time_ns() - driver.last_timestamps[0]) / 1e6)
    finally:
        driver.close()
    a = np.asarray(delays)
    return {"p50_ms": _r(np.percentile(a, 50)), "p99_ms": _r(np.percentile(a, 99))}


def run(models_root: Path, duration_s: float, endpoint: str) -> dict[str, object]:
    """Per rate, the emulator then the GigE camera, each for ``duration_s`` measured."""
    demo.prepare_emulation(devices=1)
    images = demo.ensure_pole_piece_images(demo.cache_dir() / "pole_piece")
    runs: dict[str, dict[str, object]] = {}
    for rate in RATES:
        for kind in ("pylon", "aravis"):
            log.info("bench_camera", camera=kind, rate_hz=rate)
            cfg = line_config(kind, rate, images, endpoint)
            if kind == "pylon":
                result = bench.run_pipeline(cfg, models_root, duration_s)
            else:
                with fake_camera() as pid:
                    t0, cpu0 = time.monotonic(), _cpu_s(pid)
                    result = bench.run_pipeline(cfg, models_root, duration_s)
                    camera_cpu = 100.0 * (_cpu_s(pid) - cpu0) / (time.monotonic() - t0)
                    result["camera_cpu_percent"] = _r(camera_cpu)
                    result["camera_to_host"] = camera_to_host(rate, max(20, round(rate * 2)))
            stations = result.pop("stations")
            assert isinstance(stations, dict)
            result.update(stations.get("pole_piece", {}))
            runs[f"{kind}@{rate:g}"] = result
    ratios = {
        f"{rate:g}": _r(
            float(str(runs[f"aravis@{rate:g}"]["p50_ms"]))
            / float(str(runs[f"pylon@{rate:g}"]["p50_ms"]))
        )
        for rate in RATES
    }
    return {
        "runs": runs,
        "aravis_over_pylon_p50": ratios,
        "frame": f"{SIZE} x {SIZE} Mono8, free run",
        "duration_s": duration_s,
        "machine": bench.machine(),
    }


def _r(x: float) -> float:
    return round(float(x), 3)
