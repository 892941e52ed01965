"""onnxruntime against OpenVINO per station, in the bench's own run (``backend_speed``).

For each station, a cell's inference work as its station does it, on one thread, once per
backend one after the other in this process, with the bench's own images: pole_piece one
image (preprocess, graph, decision); seal_edge and six_view every view encoded (registered,
residual) and the head; blue_film the demo's defective frame through the two stages and the
masks. The median of ``repeats`` cells after a warm-up; ``ratio`` = onnxruntime / OpenVINO.
A backend the model is not calibrated for, or not installed, is reported as skipped.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

import cv2
import numpy as np

from linevision.inference.classifier import preprocess
from linevision.inference.film.inspector import FilmInspector
from linevision.inference.manifest import ModelFileError
from linevision.inference.reference import ReferenceModel
from linevision.inference.session import Backend, ModelSession, SessionOptions
from linevision.stations.reference import load_reference_images
from linevision.tools import demo

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

BACKENDS: tuple[Backend, ...] = ("onnxruntime", "openvino")


def _median_ms(cell: Callable[[], object], repeats: int) -> float:
    cell()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cell()
        times.append((time.perf_counter() - t0) * 1000.0)
    return round(statistics.median(times), 3)


def _read(path: Path, *, color: bool = False) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    if img is None:
        msg = f"cannot read {path}"
        raise ValueError(msg)
    return np.asarray(img, np.uint8)


def _cell(
    station: str, models_root: Path, data: demo.DemoData, options: SessionOptions
) -> Callable[[], object]:
    """One cell's work of ``station`` on ``options``' backend."""
    model_dir = models_root / station
    if station == "pole_piece":
        session = ModelSession(model_dir, options)
        image = _read(min(data.pole_piece.glob("*.png")))
        m = session.manifest
        return lambda: session.run(preprocess(image, m.input, m.normalisation)[None])
    if station in ("seal_edge", "six_view"):
        model = ReferenceModel(model_dir, options)
        color = model.manifest.input.channels == 3
        folders: tuple[Path, ...]
        if station == "seal_edge":
            reference, folders = data.seal_reference, (data.seal_images,)
        else:
            reference, folders = data.six_reference, data.six_views
        refs = load_reference_images(reference, len(model.view_names), color=color)
        model.set_reference(refs)
        views = [_read(min(f.glob("*.png")), color=color) for f in folders]
        pairs = list(zip(model.view_names, views, strict=True))
        return lambda: model.decide(*(model.encode(img, v) for v, img in pairs))
    size = data.film
    inspector = FilmInspector(model_dir, size.lines, size.width, threads=1, options=options)
    inspector.warm_up()
    frame = demo.film_frames(size)[1].image
    return lambda: inspector.inspect_frame(frame)


def backend_speed(
    models_root: Path, data: demo.DemoData, stations: tuple[str, ...], repeats: int = 15
) -> dict[str, dict[str, object]]:
    """Per station: ms per cell on each backend (one thread) and their ratio."""
    out: dict[str, dict[str, object]] = {}
    for station in stations:
        figures: dict[str, object] = {}
        for backend in BACKENDS:
            options = SessionOptions(intra_op_threads=1, backend=backend)
            try:
                cell = _cell(station, models_root, data, options)
            except ModelFileError as exc:
                figures[f"{backend}_skipped"] = str(exc)[:300]
                continue
            figures[f"{backend}_ms"] = _median_ms(cell, repeats if station != "blue_film" else 5)
            del cell
        ort_ms, ov_ms = figures.get("onnxruntime_ms"), figures.get("openvino_ms")
        if isinstance(ort_ms, float) and isinstance(ov_ms, float) and ov_ms > 0:
            figures["ratio"] = round(ort_ms / ov_ms, 3)
        out[station] = figures
    return out
