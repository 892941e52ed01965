"""``linevision bench``: the real pipeline under rated load, and the straightforward baseline.

The pipeline run uses emulated pylon cameras in file mode (software trigger at the rated
rate), the shipped models and the real ZeroMQ bus on loopback; latencies are read from the
verdicts as a subscriber receives them (last frame grabbed -> published). The baseline runs
the same images through the straightforward path in the same process: one thread, default
onnxruntime session, sequential read -> preprocess -> infer -> decide.
"""

from __future__ import annotations

import itertools
import os
import platform
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from linevision import demo
from linevision.bus import VerdictMessage, subscribe
from linevision.config import Config
from linevision.inference.classifier import decide, preprocess, softmax
from linevision.inference.manifest import load_manifest
from linevision.log import get_logger
from linevision.service import Service

log = get_logger(__name__)

RATED_HZ = {"pole_piece": 20.0}
"""Rated load on the 2-core reference machine, per station (frames or cells per second)."""


@dataclass
class StationFigures:
    latencies_ms: list[float] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    verdicts: int = 0
    first_t: float | None = None
    last_t: float | None = None

    def summary(self, dropped: int) -> dict[str, object]:
        lat = np.asarray(self.latencies_ms or [np.nan])
        inf = np.asarray(self.infer_ms or [np.nan])
        span = (self.last_t or 0.0) - (self.first_t or 0.0)
        return {
            "n": self.verdicts,
            "p50_ms": _r(np.percentile(lat, 50)),
            "p99_ms": _r(np.percentile(lat, 99)),
            "max_ms": _r(lat.max()),
            "infer_p50_ms": _r(np.percentile(inf, 50)),
            "infer_p99_ms": _r(np.percentile(inf, 99)),
            "throughput_per_s": _r((self.verdicts - 1) / span) if span > 0 else 0.0,
            "ng_reasons": dict(self.reasons),
            "dropped": dropped,
        }


def _r(x: float) -> float:
    return round(float(x), 3)


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values or [np.nan])
    return {
        "p50_ms": _r(np.percentile(a, 50)),
        "p99_ms": _r(np.percentile(a, 99)),
        "max_ms": _r(a.max()),
    }


def bench_config(images: Path, endpoint: str, rate_hz: float) -> Config:
    data = demo.demo_config(images, rate_hz=rate_hz).model_dump(mode="json")
    data["bus"]["publish"] = endpoint
    return Config.model_validate(data)


def run_pipeline(
    cfg: Config, models_root: Path, duration_s: float, warmup_s: float = 1.0
) -> dict[str, object]:
    """Run the service for ``duration_s`` and gather what a subscriber sees."""
    figures: dict[str, StationFigures] = {}
    seqs: list[int] = []
    started = threading.Event()
    stop_at = [float("inf")]

    def reader() -> None:
        gen = subscribe(cfg.bus.publish, ("verdict.",), timeout_s=5.0)
        started.set()
        for m in gen:
            now = time.monotonic()
            if now > stop_at[0]:
                gen.close()
                return
            if not isinstance(m, VerdictMessage):
                continue
            seqs.append(m.seq)
            if now < stop_at[0] - duration_s:
                continue
            f = figures.setdefault(m.station, StationFigures())
            f.verdicts += 1
            f.first_t = now if f.first_t is None else f.first_t
            f.last_t = now
            f.latencies_ms.append(m.latency_ms)
            if m.infer_ms is not None:
                f.infer_ms.append(m.infer_ms)
            if m.verdict == "NG":
                f.reasons[m.reason or "none"] += 1

    service = Service(cfg, models_root=models_root)
    cpu0 = time.process_time()
    t0 = time.monotonic()
    service.start()
    try:
        thread = threading.Thread(target=reader, name="bench-reader", daemon=True)
        thread.start()
        started.wait(5.0)
        stop_at[0] = time.monotonic() + warmup_s + duration_s
        thread.join(warmup_s + duration_s + 10.0)
    finally:
        dropped = {name: w.counters["dropped"] for name, w in service.stations.items()}
        service.stop()
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    gaps = sum(b - a - 1 for a, b in itertools.pairwise(seqs) if b - a > 1)
    dups = len(seqs) - len(set(seqs))
    return {
        "stations": {n: f.summary(dropped.get(n, 0)) for n, f in figures.items()},
        "seq_gaps": gaps,
        "seq_duplicates": dups,
        "cpu_percent": _r(100.0 * cpu / wall),
    }


def run_baseline(model_dir: Path, images: Path, count: int) -> dict[str, object]:
    """The straightforward path: read file -> preprocess -> default fp32 session, 1 thread."""
    manifest, onnx_path = load_manifest(model_dir)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"]
    )
    files = sorted(images.glob("*.png"))
    times: list[float] = []
    for i in range(count):
        t0 = time.perf_counter()
        img = cv2.imread(str(files[i % len(files)]), cv2.IMREAD_GRAYSCALE)
        if img is None:
            msg = f"cannot read {files[i % len(files)]}"
            raise ValueError(msg)
        x = preprocess(np.asarray(img, np.uint8), manifest.input, manifest.normalisation)
        logits = session.run([manifest.output], {manifest.input.name: x[None]})[0]
        decide(
            softmax(np.asarray(logits, np.float32))[0], manifest.classes, manifest.ok_labels, 0.0
        )
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"pole_piece": {"n": count, **_percentiles(times)}}


def machine() -> dict[str, object]:
    flags = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        flags = next((ln for ln in cpuinfo.splitlines() if ln.startswith("flags")), "")
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "avx512": "avx512f" in flags,
        "vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
        "onnxruntime": ort.__version__,
    }


def run(
    models_root: Path, duration_s: float, endpoint: str, stations: tuple[str, ...]
) -> dict[str, object]:
    unknown = [s for s in stations if s not in RATED_HZ]
    if unknown:
        msg = f"no bench load defined for stations {unknown}; available: {sorted(RATED_HZ)}"
        raise ValueError(msg)
    demo.prepare_emulation(devices=1)
    images = demo.ensure_pole_piece_images(demo.cache_dir() / "pole_piece")
    cfg = bench_config(images, endpoint, RATED_HZ["pole_piece"])
    log.info("bench_pipeline", stations=list(stations), duration_s=duration_s)
    result = run_pipeline(cfg, models_root, duration_s)
    log.info("bench_baseline")
    n = int(RATED_HZ["pole_piece"] * duration_s)
    baseline = run_baseline(models_root / "pole_piece", images, max(n, 50))
    result["baseline"] = baseline
    ratios: dict[str, float] = {}
    stations_out = result["stations"]
    assert isinstance(stations_out, dict)
    for name, figs in stations_out.items():
        base = baseline.get(name)
        if isinstance(base, dict) and figs.get("p50_ms"):
            ratios[name] = _r(float(base["p50_ms"]) / float(figs["p50_ms"]))
    result["baseline_over_pipeline_p50"] = ratios
    result["peak_rss_mb"] = _r(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    result["rated_load_per_s"] = {s: RATED_HZ[s] for s in stations}
    result["duration_s"] = duration_s
    result["machine"] = machine()
    return result
