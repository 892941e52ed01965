"""Where the bench's CPU goes: per thread, per stage and per job (``linevision bench``).

Per thread: user + system time of every thread of the process (``/proc/self/task``), read
at the start and the end of the measured window, named by their Python thread name where
they have one (``camera-<id>``, ``infer-<n>``, ``bus-publisher``, ``deadlines``...) and
by their kernel name otherwise (the runtimes' worker threads, the camera emulator's). One
core = 100.

Per stage: ``acquisition_copy`` is the camera threads (trigger, grab, copy out of the camera
buffer); ``inference`` the time spent inside the sessions' ``run`` on the pool threads
(``inference.session.CLOCKS``) plus the runtimes' own worker threads; ``preprocessing`` the
rest of the pool threads' time (resize, normalise, registration, residual, screening,
decisions) plus the film's screen thread; ``publish`` the bus thread and ZeroMQ's I/O
thread; ``emulation`` the
camera emulator's threads (a frame grabber's DMA on a line PC); ``other`` the rest (the
deadline thread, the supervisor, the bench's own subscriber).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from linevision.inference import session as sessions

TICK_S: Final = 1.0 / os.sysconf("SC_CLK_TCK")
POOL_PREFIX: Final = "infer-"
CAMERA_PREFIX: Final = "camera-"


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Every thread of this process: tid -> (kernel name, CPU seconds so far)."""
    out: dict[int, tuple[str, float]] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text(encoding="ascii")
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) * TICK_S)
    return out


def _python_names() -> dict[int, str]:
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


def _group(name: str) -> str:
    """Numbered siblings together: ``Thread-12 (run)`` -> ``Thread (run)``."""
    return re.sub(r"-\d+(?= |$)", "", name) if name.startswith("Thread-") else name


@dataclass
class CpuWindow:
    """CPU of every thread between ``start`` and ``stop``."""

    t0: float = 0.0
    wall_s: float = 0.0
    before: dict[int, tuple[str, float]] = field(default_factory=dict)
    per_thread_s: dict[str, float] = field(default_factory=dict)
    run_cpu_s: float = 0.0
    names: dict[int, str] = field(default_factory=dict)

    def start(self) -> None:
        self.names = _python_names()
        self.before = thread_cpu()
        self._run0 = _run_cpu()
        self.t0 = time.monotonic()

    def stop(self) -> None:
        self.wall_s = time.monotonic() - self.t0
        after = thread_cpu()
        self.run_cpu_s = _run_cpu() - self._run0
        self.names.update(_python_names())
        per: dict[str, float] = {}
        for tid, (kernel_name, cpu) in after.items():
            spent = cpu - self.before.get(tid, (kernel_name, 0.0))[1]
            name = _group(self.names.get(tid, f"{kernel_name} (runtime or emulator)"))
            per[name] = per.get(name, 0.0) + spent
        self.per_thread_s = per

    def percent(self, seconds: float) -> float:
        return round(100.0 * seconds / self.wall_s, 2) if self.wall_s > 0 else 0.0

    def figures(self) -> dict[str, object]:
        """``threads`` and ``stages`` in percent of one core."""
        per = self.per_thread_s
        python = set(self.names.values())
        pool = sum(s for n, s in per.items() if n.startswith(POOL_PREFIX))
        cameras = sum(s for n, s in per.items() if n.startswith(CAMERA_PREFIX))
        publish = sum(s for n, s in per.items() if n == "bus-publisher" or n.startswith("ZMQ"))
        screen = sum(s for n, s in per.items() if n.startswith("film-screen"))
        foreign = {
            n: s for n, s in per.items() if n not in python and not n.startswith(("Thread", "ZMQ"))
        }
        runtime = sum(s for n, s in foreign.items() if _is_runtime(n))
        emulation = sum(s for n, s in foreign.items() if not _is_runtime(n))
        inference = min(self.run_cpu_s, pool) + runtime
        preprocessing = pool - min(self.run_cpu_s, pool) + screen
        total = sum(per.values())
        other = total - cameras - publish - inference - preprocessing - emulation
        stages = {
            "acquisition_copy": cameras,
            "preprocessing": preprocessing,
            "inference": inference,
            "publish": publish,
            "emulation": emulation,
            "other": max(other, 0.0),
        }
        ranked = sorted(per.items(), key=lambda kv: -kv[1])
        return {
            "stages": {k: self.percent(v) for k, v in stages.items()},
            "threads": {n: self.percent(s) for n, s in ranked if self.percent(s) > 0},
            "total": self.percent(total),
        }


def _is_runtime(kernel_name: str) -> bool:
    """The runtimes' worker threads as the kernel names them (onnxruntime inherits the
    process name; OpenVINO's TBB workers too): anything but the pylon emulator's."""
    return not kernel_name.lower().startswith(("pylon", "gxi", "genicam", "cam"))


def _run_cpu() -> float:
    return sum(c.cpu_s for c in sessions.CLOCKS.values())


def job_costs(jobs: dict[str, tuple[int, float]], parts: dict[str, int]) -> dict[str, object]:
    """Per station: CPU ms of its pool jobs per job (an image, a view, a strip) and per
    inspected cell (``parts`` jobs: 1, 6 views, or a frame's strips)."""
    out: dict[str, object] = {}
    for name, (n, cpu_s) in jobs.items():
        per_job = 1000.0 * cpu_s / n if n else None
        out[name] = {
            "jobs": n,
            "cpu_ms_per_job": round(per_job, 3) if per_job is not None else None,
            "cpu_ms_per_cell": round(per_job * parts.get(name, 1), 3) if per_job else None,
        }
    return out
