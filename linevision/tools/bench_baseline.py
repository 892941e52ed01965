"""The straightforward baseline of ``linevision bench``: the same images, one cell after
another, one thread, float32 defaults, images read from their files, no reference cache
(the reference views are encoded again for every cell), and for blue_film the whole frame
tiled after its last line (screen each tile, anomaly graph on each flagged whole tile).
Its latency is the work left after the cell's last image is available."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from linevision.inference.classifier import decide, preprocess, softmax
from linevision.inference.film.geometry import (
    defects_from_map,
    drop_inner_edges,
    max_stitch,
    scaled_plan,
)
from linevision.inference.film.inspector import FilmInspector
from linevision.inference.film.screen import screen_score
from linevision.inference.film.segment import SEGMENT_ROLE, FilmSegmenter
from linevision.inference.manifest import load_manifest
from linevision.inference.reference import ReferenceModel
from linevision.inference.session import SessionOptions, open_session
from linevision.log import get_logger
from linevision.stations.reference import load_reference_images
from linevision.tools import demo

log = get_logger(__name__)


def _r(x: float) -> float:
    return round(float(x), 3)


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values or [np.nan])
    return {
        "p50_ms": _r(np.percentile(a, 50)),
        "p99_ms": _r(np.percentile(a, 99)),
        "max_ms": _r(a.max()),
    }


def read_image(path: Path, flag: int = cv2.IMREAD_GRAYSCALE) -> np.ndarray:
    img = cv2.imread(str(path), flag)
    if img is None:
        msg = f"cannot read {path}"
        raise ValueError(msg)
    return np.asarray(img, np.uint8)


def baseline_pole_piece(model_dir: Path, images: Path, count: int) -> list[float]:
    """read file -> preprocess -> fp32 session, 1 thread -> decide, per image."""
    manifest, onnx_path = load_manifest(model_dir)
    session = open_session(onnx_path, SessionOptions(intra_op_threads=1))
    files = sorted(images.glob("*.png"))
    times: list[float] = []
    for i in range(count):
        t0 = time.perf_counter()
        x = preprocess(read_image(files[i % len(files)]), manifest.input, manifest.normalisation)
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
            model.encode(read_image(f[i % len(f)], flag), name)
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
    inspector = FilmInspector(model_dir, size.lines, size.width, threads=1)
    spec = inspector.spec
    frames = [f.image for f in demo.film_frames(size)]
    stride = spec.map_stride
    shape = (size.lines, size.width)
    out = np.zeros((size.lines // stride, size.width // stride), np.float32)
    plan_map = scaled_plan(inspector.plan, stride)
    times: list[float] = []
    for i in range(count):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        maps: dict[tuple[int, int], np.ndarray] = {}
        for t in inspector.plan:
            tile = frame[t.y0 : t.y1, t.x0 : t.x1]
            if screen_score(tile, spec.screen) >= spec.screen.threshold:
                tile_map = inspector.score_tile(tile)
                maps[t.row, t.col] = drop_inner_edges(tile_map, t, shape, spec.edge_cells)
        out.fill(0.0)
        max_stitch(plan_map, maps, out)
        defects_from_map(out, spec.score_threshold, stride, shape)
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
