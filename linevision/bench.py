"""``linevision bench``: the real pipeline under rated load, and the straightforward baseline.

The pipeline run is the four-station demo (``linevision.demo``): emulated pylon cameras in
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

import cv2
import numpy as np
import onnxruntime as ort

from linevision import demo
from linevision.bus import VerdictMessage, subscribe
from linevision.config import Config
from linevision.inference import blue_film as film
from linevision.inference.classifier import decide, preprocess, softmax
from linevision.inference.film_segment import SEGMENT_ROLE, FilmSegmenter
from linevision.inference.manifest import load_manifest
from linevision.inference.reference import ReferenceModel
from linevision.inference.session import SessionOptions
from linevision.log import get_logger
from linevision.service import Service
from linevision.stations.reference import load_reference_images

log = get_logger(__name__)

RATED_HZ = demo.RATED_HZ
"""Rated load on the 2-core reference machine, per station (images or cells per second)."""


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

    def summary(self, dropped: int) -> dict[str, object]:
        lat = np.asarray(self.latencies_ms or [np.nan])
        inf = np.asarray(self.infer_ms or [np.nan])
        span = (self.last_t or 0.0) - (self.first_t or 0.0)
        unique = set(self.cells)
        expected = max(unique) - min(unique) + 1 if unique else 0
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
            "cells_missing": expected - len(unique),
            "cells_duplicated": len(self.cells) - len(unique),
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


def bench_config(  # noqa: PLR0913  (the demo layout knobs, all keyword-only)
    data: demo.DemoData,
    endpoint: str,
    stations: tuple[str, ...],
    *,
    six_view_stagger_ms: float = demo.SIX_VIEW_STAGGER_MS,
    workers: int | None = None,
    offsets_ms: dict[str, float] | None = None,
) -> Config:
    cfg = demo.four_station_config(
        data, stations=stations, six_view_stagger_ms=six_view_stagger_ms, offsets_ms=offsets_ms
    ).model_dump(mode="json")
    cfg["bus"]["publish"] = endpoint
    cfg["archive"] = {"enabled": False}
    cfg["metrics"] = {"enabled": False}
    cfg["control"] = {"enabled": False}
    if workers is not None:
        cfg["inference"]["workers"] = workers
    return Config.model_validate(cfg)


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
            if m.verdict == "OK" or m.reason == "defect":
                f.inspected_ms.append(m.latency_ms)
            f.cells.append(m.cell_id)
            if m.infer_ms is not None:
                f.infer_ms.append(m.infer_ms)
            if m.verdict == "NG":
                f.reasons[m.reason or "none"] += 1
                if m.reason != "defect":
                    f.details[f"{m.reason}: {(m.label or '')[:60]}"] += 1

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


def _one_thread_session(onnx_path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])


def _read(path: Path, flag: int = cv2.IMREAD_GRAYSCALE) -> np.ndarray:
    img = cv2.imread(str(path), flag)
    if img is None:
        msg = f"cannot read {path}"
        raise ValueError(msg)
    return np.asarray(img, np.uint8)


def baseline_pole_piece(model_dir: Path, images: Path, count: int) -> list[float]:
    """read file -> preprocess -> default fp32 session, 1 thread -> decide, per image."""
    manifest, onnx_path = load_manifest(model_dir)
    session = _one_thread_session(onnx_path)
    files = sorted(images.glob("*.png"))
    times: list[float] = []
    for i in range(count):
        t0 = time.perf_counter()
        x = preprocess(_read(files[i % len(files)]), manifest.input, manifest.normalisation)
        logits = session.run([manifest.output], {manifest.input.name: x[None]})[0]
        decide(
            softmax(np.asarray(logits, np.float32))[0], manifest.classes, manifest.ok_labels, 0.0
        )
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def baseline_reference(
    model_dir: Path, views: tuple[Path, ...], reference: Path, count: int
) -> list[float]:
    """Per cell: read every view, encode the reference views again, encode, head."""
    model = ReferenceModel(model_dir, SessionOptions(intra_op_threads=1))
    color = model.manifest.input.channels == 3
    flag = cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE
    files = [sorted(v.glob("*.png")) for v in views]
    times: list[float] = []
    for i in range(count):
        t0 = time.perf_counter()
        refs = load_reference_images(reference, len(model.view_names), color=color)
        model.set_reference(refs)
        feats = [
            model.encode(_read(f[i % len(f)], flag), name)
            for f, name in zip(files, model.view_names, strict=True)
        ]
        model.decide(*feats)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def baseline_blue_film(
    model_dir: Path, data: demo.DemoData, count: int, every_tile_frames: int = 1
) -> dict[str, object]:
    """Whole-frame tiling after the last line: screen each tile, anomaly graph on each
    flagged whole tile, stitch, decide; 1 thread. Also the anomaly graph on every tile."""
    size = data.film
    inspector = film.FilmInspector(model_dir, size.lines, size.width, threads=1)
    spec = inspector.spec
    frames = [f.image for f in demo.film_frames(size)]
    stride = spec.map_stride
    shape = (size.lines, size.width)
    out = np.zeros((size.lines // stride, size.width // stride), np.float32)
    plan_map = film.scaled_plan(inspector.plan, stride)
    times: list[float] = []
    for i in range(count):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        maps: dict[tuple[int, int], np.ndarray] = {}
        for t in inspector.plan:
            tile = frame[t.y0 : t.y1, t.x0 : t.x1]
            if film.screen_score(tile, spec.screen) >= spec.screen.threshold:
                tile_map = inspector.score_tile(tile)
                maps[t.row, t.col] = film.drop_inner_edges(tile_map, t, shape, spec.edge_cells)
        out.fill(0.0)
        film.max_stitch(plan_map, maps, out)
        film.defects_from_map(out, spec.score_threshold, stride, shape)
        times.append((time.perf_counter() - t0) * 1000.0)
    every: list[float] = []
    for i in range(every_tile_frames):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        for t in inspector.plan:
            inspector.score_tile(frame[t.y0 : t.y1, t.x0 : t.x1])
        every.append((time.perf_counter() - t0) * 1000.0)
    figures: dict[str, object] = {
        "times": times,
        "every_tile_ms": float(np.median(every)),
        "tiles": len(inspector.plan),
    }
    if SEGMENT_ROLE in inspector.manifest.files:
        # the segmentation network on whole tiles: 6 tiles timed, scaled to the frame's count
        segmenter = FilmSegmenter(model_dir, threads=1)
        tile_ms: list[float] = []
        for t in inspector.plan[:6]:
            t0 = time.perf_counter()
            segmenter.mask(frames[0][t.y0 : t.y1, t.x0 : t.x1])
            tile_ms.append((time.perf_counter() - t0) * 1000.0)
        figures["segment_every_tile_ms"] = float(np.median(tile_ms)) * len(inspector.plan)
    return figures


def run_baseline(
    models_root: Path, data: demo.DemoData, stations: tuple[str, ...], cells: int
) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name in stations:
        log.info("bench_baseline", station=name)
        if name == "pole_piece":
            times = baseline_pole_piece(models_root / name, data.pole_piece, max(cells, 50))
            out[name] = {"n": len(times), **_percentiles(times)}
        elif name == "seal_edge":
            views = (data.seal_images,)
            times = baseline_reference(models_root / name, views, data.seal_reference, cells)
            out[name] = {"n": len(times), **_percentiles(times)}
        elif name == "six_view":
            times = baseline_reference(
                models_root / name, data.six_views, data.six_reference, cells
            )
            out[name] = {"n": len(times), **_percentiles(times)}
        elif name == "blue_film":
            figures = baseline_blue_film(models_root / name, data, max(2, cells // 4))
            film_times = figures.pop("times")
            assert isinstance(film_times, list)
            out[name] = {"n": len(film_times), **_percentiles(film_times), **figures}
    return out


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
    image = _read(min(images.glob("*.png")))
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
) -> dict[str, object]:
    stations = stations or tuple(RATED_HZ)
    unknown = [s for s in stations if s not in RATED_HZ]
    if unknown:
        msg = f"no bench load defined for stations {unknown}; available: {sorted(RATED_HZ)}"
        raise ValueError(msg)
    demo.prepare_emulation(devices=demo.DEVICES)
    data = demo.ensure_demo_data(demo.cache_dir(), film_size)
    offsets = {} if aligned_triggers else dict(demo.STATION_OFFSETS_MS)
    cfg = bench_config(
        data,
        endpoint,
        stations,
        six_view_stagger_ms=six_view_stagger_ms,
        workers=workers,
        offsets_ms=offsets,
    )
    log.info("bench_pipeline", stations=list(stations), duration_s=duration_s)
    result = run_pipeline(cfg, models_root, duration_s)
    # the pipeline's peak, before the baseline loads its own copies of models and frames
    result["peak_rss_mb"] = _r(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    baseline = run_baseline(models_root, data, stations, baseline_cells)
    result["baseline"] = baseline
    ratios: dict[str, float] = {}
    stations_out = result["stations"]
    assert isinstance(stations_out, dict)
    for name, figs in stations_out.items():
        base = baseline.get(name)
        if base is not None and figs.get("p50_ms"):
            ratios[name] = _r(float(str(base["p50_ms"])) / float(figs["p50_ms"]))
    result["baseline_over_pipeline_p50"] = ratios
    if "pole_piece" in stations:
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
    result["rated_load_per_s"] = {s: RATED_HZ[s] for s in stations}
    result["duration_s"] = duration_s
    result["workers"] = cfg.inference.workers
    result["six_view_stagger_ms"] = six_view_stagger_ms
    result["trigger_offsets_ms"] = {c.id: c.trigger.offset_ms for c in cfg.cameras}
    result["machine"] = machine()
    return result
