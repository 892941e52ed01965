"""``linevision bench``: the real pipeline under rated load, and the straightforward baseline.

The pipeline run is the four-station demo (``linevision.tools.demo``): emulated pylon cameras in
file mode with software triggers at the rated rates, the shipped models, the shared
inference pool and the real ZeroMQ bus on loopback. Latencies are read from the verdicts as
a subscriber receives them: the cell's last frame (for blue_film its last strip) grabbed ->
verdict published. Every cell id between a station's first and last verdict must come
exactly once (``cells_missing``, ``cells_duplicated``).

The baseline then runs the same images, one cell after another, the straightforward way:
one thread, float32, default onnxruntime sessions, images read from their files, no
reference cache (the reference views are encoded again for every cell), and for blue_film
the whole frame tiled after its last line (screen each tile, anomaly graph on each flagged
whole tile). Its latency is the work left after the cell's last image is available.
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
from typing import get_args

import numpy as np
import onnxruntime as ort

from linevision.bus.subscriber import subscribe
from linevision.bus.wire import VerdictMessage
from linevision.config import Config
from linevision.daemon.service import Service
from linevision.inference.classifier import preprocess
from linevision.inference.manifest import load_manifest
from linevision.inference.session import openvino_version
from linevision.log import get_logger
from linevision.tools import bench_backends, bench_cpu, demo
from linevision.tools.bench_baseline import read_image, run_baseline
from linevision.types import Reason

log = get_logger(__name__)

RATED_HZ = demo.RATED_HZ
"""Rated load on the 2-core reference machine, per station (images or cells per second)."""
MAX_LOAD = 10.0
AFTER_S = 0.5
"""How long the reader still listens after the window, for the cells finishing out of order."""
NG_REASONS: tuple[str, ...] = get_args(Reason)
"""Every NG reason, each counted in ``ng_by_reason`` (0 when none came)."""


@dataclass
class StationFigures:
    latencies_ms: list[float] = field(default_factory=list)
    inspected_ms: list[float] = field(default_factory=list)
    """Latencies of the cells that were inspected (OK, or NG ``defect``)."""
    infer_ms: list[float] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    details: Counter[str] = field(default_factory=Counter)
    cells: list[int] = field(default_factory=list)
    verdicts: int = 0
    first_t: float | None = None
    last_t: float | None = None
    seen_around: set[int] = field(default_factory=set)
    """Cells whose verdict came just before or after the window: a cell of a parallel
    station can finish a cell or two out of order, so it is not missing from the window."""

    def add(self, m: VerdictMessage, now: float) -> None:
        """One verdict of the window, received at ``now`` (monotonic)."""
        self.verdicts += 1
        self.first_t = now if self.first_t is None else self.first_t
        self.last_t = now
        self.latencies_ms.append(m.latency_ms)
        if m.verdict == "OK" or m.reason == "defect":
            self.inspected_ms.append(m.latency_ms)
        self.cells.append(m.cell_id)
        if m.infer_ms is not None:
            self.infer_ms.append(m.infer_ms)
        if m.verdict == "NG":
            self.reasons[m.reason or "none"] += 1
            if m.reason != "defect":
                self.details[f"{m.reason}: {(m.label or '')[:60]}"] += 1

    def summary(self, dropped: int) -> dict[str, object]:
        lat = np.asarray(self.latencies_ms or [np.nan])
        inf = np.asarray(self.infer_ms or [np.nan])
        span = (self.last_t or 0.0) - (self.first_t or 0.0)
        unique = set(self.cells)
        expected = max(unique) - min(unique) + 1 if unique else 0
        around = {c for c in self.seen_around if unique and min(unique) < c < max(unique)}
        return {
            "n": self.verdicts,
            "p50_ms": _r(np.percentile(lat, 50)),
            "p99_ms": _r(np.percentile(lat, 99)),
            "max_ms": _r(lat.max()),
            "inspected_p99_ms": _r(np.percentile(np.asarray(self.inspected_ms or [np.nan]), 99)),
            "infer_p50_ms": _r(np.percentile(inf, 50)),
            "infer_p99_ms": _r(np.percentile(inf, 99)),
            "throughput_per_s": _r((self.verdicts - 1) / span) if span > 0 else 0.0,
            "ng_reasons": dict(self.reasons),
            "fault_details": dict(self.details),
            "dropped": dropped,
            "cells_missing": expected - len(unique | around),
            "cells_duplicated": len(self.cells) - len(unique),
            "ng_by_reason": {r: self.reasons.get(r, 0) for r in NG_REASONS},
        }


def _measured(
    service: Service, window: bench_cpu.CpuWindow, reader: threading.Thread, timeout_s: float
) -> dict[str, tuple[int, float]]:
    """CPU per thread (``window``) and per station's jobs while ``reader`` reads verdicts."""
    window.start()
    jobs0 = {name: w.job_cpu() for name, w in service.stations.items()}
    reader.join(timeout_s)
    window.stop()
    jobs1 = {name: w.job_cpu() for name, w in service.stations.items()}
    return {n: (jobs1[n][0] - jobs0[n][0], jobs1[n][1] - jobs0[n][1]) for n in jobs1}


def _r(x: float) -> float:
    return round(float(x), 3)


def bench_config(  # noqa: PLR0913  (the demo layout knobs, all keyword-only)
    data: demo.DemoData,
    endpoint: str,
    stations: tuple[str, ...],
    *,
    six_view_stagger_ms: float = demo.SIX_VIEW_STAGGER_MS,
    workers: int | None = None,
    offsets_ms: dict[str, float] | None = None,
    load: float = 1.0,
    backend: str | None = None,
) -> Config:
    """The demo's four stations at ``load`` times their rated rates, on ``backend``."""
    rated = {name: hz * load for name, hz in RATED_HZ.items()}
    cfg = demo.four_station_config(
        data,
        rated=rated,
        stations=stations,
        six_view_stagger_ms=six_view_stagger_ms,
        offsets_ms=offsets_ms,
    ).model_dump(mode="json")
    cfg["bus"]["publish"] = endpoint
    cfg["archive"] = {"enabled": False}
    cfg["metrics"] = {"enabled": False}
    cfg["control"] = {"enabled": False}
    if workers is not None:
        cfg["inference"]["workers"] = workers
    if backend is not None:
        cfg["inference"]["backend"] = backend
    return Config.model_validate(cfg)


def check_load(load: float, stations: tuple[str, ...], film: demo.FilmSize) -> None:
    """``ValueError`` for a load the line cannot run: at most ``MAX_LOAD``, and a film
    frame must be scanned (its lines at the line rate) before the next one starts."""
    if not 0.0 < load <= MAX_LOAD:
        msg = f"--load {load}: must be above 0 and at most {MAX_LOAD} times the rated rates"
        raise ValueError(msg)
    scan_s = film.lines / demo.LINE_RATE_HZ
    if "blue_film" in stations and load * RATED_HZ["blue_film"] * scan_s >= 1.0:
        most = 1.0 / (RATED_HZ["blue_film"] * scan_s)
        msg = (
            f"--load {load}: a {film.lines}-line film frame takes {scan_s * 1000:.0f} ms to "
            f"scan, so blue_film runs at most {most:.2f} times its rated rate"
        )
        raise ValueError(msg)


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
            if now > stop_at[0] + AFTER_S:
                gen.close()
                return
            if not isinstance(m, VerdictMessage):
                continue
            if now > stop_at[0] or now < stop_at[0] - duration_s:
                figures.setdefault(m.station, StationFigures()).seen_around.add(m.cell_id)
                if now <= stop_at[0]:
                    seqs.append(m.seq)
                continue
            seqs.append(m.seq)
            figures.setdefault(m.station, StationFigures()).add(m, now)

    service = Service(cfg, models_root=models_root)
    window, jobs = bench_cpu.CpuWindow(), {}
    cpu0 = time.process_time()
    t0 = time.monotonic()
    service.start()
    try:
        thread = threading.Thread(target=reader, name="bench-reader", daemon=True)
        thread.start()
        started.wait(5.0)
        stop_at[0] = time.monotonic() + warmup_s + duration_s
        time.sleep(warmup_s)
        jobs = _measured(service, window, thread, duration_s + 10.0)
    finally:
        dropped = {name: w.counters["dropped"] for name, w in service.stations.items()}
        parts = {name: w.station.views for name, w in service.stations.items()}
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
        "cpu": window.figures(),
        "job_cpu": bench_cpu.job_costs(jobs, parts),
    }


def pole_piece_model_speed(model_dir: Path, images: Path) -> dict[str, object]:
    """Batch-1 ms/image of the shipped pole-piece ONNX files and of the same network in torch
    eager float32 (the seed's stack), 1 and 2 threads, one after the other in this process.

    The torch network is rebuilt from the manifest's architecture with fresh weights (speed
    does not depend on their values). Needs the ``train`` extra (torch); without it, or for
    a network ``linevision.train.gsnet`` does not build, the reason is returned instead.
    """
    manifest, onnx_path = load_manifest(model_dir)
    training = manifest.training
    arch, stem = training.get("architecture"), training.get("stem", "s2d")
    try:
        from linevision.train import classifier_export, gsnet  # noqa: PLC0415
    except ImportError as exc:
        return {"skipped": f"torch is not installed ({exc.name}); install the train extra"}
    if not isinstance(arch, str) or arch not in gsnet.ARCHITECTURES or not isinstance(stem, str):
        return {"skipped": f"the shipped model's architecture {arch!r} is not a gsnet network"}
    model = gsnet.build(arch, len(manifest.classes), stem=stem).eval()
    metrics = manifest.metrics
    precision = str(metrics.get("runtime_precision", "fp32"))
    files = {precision: onnx_path}
    fp32 = model_dir / "model_fp32.onnx"
    if precision != "fp32" and fp32.is_file():
        files["fp32"] = fp32
    image = read_image(min(images.glob("*.png")))
    x = preprocess(image, manifest.input, manifest.normalisation)[None]
    out: dict[str, object] = {"architecture": arch, "stem": stem, "runtime_precision": precision}
    out.update(classifier_export.latency(model, files, x))
    return out


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
        "openvino": openvino_version(),
    }


def run(  # noqa: PLR0913  (what to run, how long, where; film size, baseline, line set-up)
    models_root: Path,
    duration_s: float,
    endpoint: str,
    stations: tuple[str, ...],
    *,
    film_size: demo.FilmSize | None = None,
    baseline_cells: int = 20,
    six_view_stagger_ms: float = demo.SIX_VIEW_STAGGER_MS,
    workers: int | None = None,
    aligned_triggers: bool = False,
    load: float = 1.0,
    backend: str = "onnxruntime",
    backend_speed: bool = True,
) -> dict[str, object]:
    stations = stations or tuple(RATED_HZ)
    unknown = [s for s in stations if s not in RATED_HZ]
    if unknown:
        msg = f"no bench load defined for stations {unknown}; available: {sorted(RATED_HZ)}"
        raise ValueError(msg)
    demo.prepare_emulation(devices=demo.DEVICES)
    data = demo.ensure_demo_data(demo.cache_dir(), film_size)
    check_load(load, stations, data.film)
    offsets = {} if aligned_triggers else dict(demo.STATION_OFFSETS_MS)
    cfg = bench_config(
        data,
        endpoint,
        stations,
        six_view_stagger_ms=six_view_stagger_ms,
        workers=workers,
        offsets_ms=offsets,
        load=load,
        backend=backend,
    )
    log.info(
        "bench_pipeline", stations=list(stations), duration_s=duration_s, load=load, backend=backend
    )
    result = run_pipeline(cfg, models_root, duration_s)
    # the pipeline's peak, before the baseline loads its own copies of models and frames
    result["peak_rss_mb"] = _r(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    # --baseline-cells 0: the pipeline only (quick runs while tuning)
    extras = baseline_cells > 0
    baseline = run_baseline(models_root, data, stations, baseline_cells) if extras else {}
    result["baseline"] = baseline
    ratios: dict[str, float] = {}
    stations_out = result["stations"]
    assert isinstance(stations_out, dict)
    for name, figs in stations_out.items():
        base = baseline.get(name)
        if base is not None and figs.get("p50_ms"):
            ratios[name] = _r(float(str(base["p50_ms"])) / float(figs["p50_ms"]))
    result["baseline_over_pipeline_p50"] = ratios
    if "pole_piece" in stations and extras:
        log.info("bench_model_speed", station="pole_piece")
        result["pole_piece_model_speed"] = pole_piece_model_speed(
            models_root / "pole_piece", data.pole_piece
        )
    film_figs = stations_out.get("blue_film")
    film_base = baseline.get("blue_film")
    if film_figs and film_base and film_figs.get("infer_p50_ms"):
        every = float(str(film_base["every_tile_ms"]))
        two_stage = float(film_figs["infer_p50_ms"])
        segment_every = float(str(film_base.get("segment_every_tile_ms", "nan")))
        result["blue_film_work"] = {
            "two_stage_frame_ms_p50": film_figs["infer_p50_ms"],
            "anomaly_every_tile_frame_ms": _r(every),
            "ratio": _r(every / two_stage),
            "segmentation_every_tile_frame_ms": _r(segment_every),
            "segmentation_ratio": _r(segment_every / two_stage),
            "frame": f"{data.film.width} x {data.film.lines}",
            "strip_lines": data.film.strip_lines,
        }
    result["backend_speed"] = (
        bench_backends.backend_speed(models_root, data, stations)
        if extras and backend_speed
        else {}
    )
    result["rated_load_per_s"] = {s: RATED_HZ[s] for s in stations}
    result["load"] = load
    result["backend"] = backend
    stations_out = result["stations"]
    assert isinstance(stations_out, dict)
    for figs in stations_out.values():
        figs["load"] = load
        figs["backend"] = backend
    result["duration_s"] = duration_s
    result["workers"] = cfg.inference.workers
    result["six_view_stagger_ms"] = six_view_stagger_ms
    result["trigger_offsets_ms"] = {c.id: c.trigger.offset_ms for c in cfg.cameras}
    result["machine"] = machine()
    return result
