"""Measure a written reference-compare model folder through the runtime, as deployed.

The threshold on P(NG) is calibrated on the validation folders; accuracy, NG recall, OK false
reject and AUROC are then measured on the test folders (the validation folders when there are
none), and onnxruntime latency per view and per cell at one and two threads.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from linevision.inference.align import AlignmentError
from linevision.inference.reference import F32Array, ReferenceModel
from linevision.inference.session import SessionOptions
from linevision.log import get_logger
from linevision.train import _compare

if TYPE_CHECKING:
    from pathlib import Path

    from linevision.train._cells import Cells
    from linevision.types import Decision, Image

CHUNK = 32
LATENCY_RUNS = 60
MAX_LISTED = 20
UNREGISTERED_MARGIN = 100.0

log = get_logger(__name__)


def margins(model: ReferenceModel, sets: list[Cells]) -> tuple[_compare.Labels, _compare.F64Array]:
    """NG margins (logit P(NG)) of every cell, each folder against its own reference.

    A cell with a view that cannot be registered onto its reference is NG in the runtime
    (``AlignmentError``); it gets ``UNREGISTERED_MARGIN`` here.
    """
    out: list[_compare.F64Array] = []
    for cells in sets:
        model.set_reference(cells.reference)
        for start in range(0, len(cells.labels), CHUNK):
            chunk = cells.views[start : start + CHUNK]
            try:
                out.append(_chunk_margins(model, chunk))
            except AlignmentError:
                out.append(np.concatenate([_cell_margin(model, cell) for cell in chunk]))
    labels = np.concatenate([c.labels for c in sets])
    return labels, np.concatenate(out)


def _chunk_margins(model: ReferenceModel, chunk: list[tuple[Image, ...]]) -> _compare.F64Array:
    feats = [
        model.encode_batch([c[v] for c in chunk], view) for v, view in enumerate(model.view_names)
    ]
    return _compare.ng_margin(model.logits(*feats))


def _cell_margin(model: ReferenceModel, cell: tuple[Image, ...]) -> _compare.F64Array:
    try:
        return _chunk_margins(model, [cell])
    except AlignmentError:
        return np.array([UNREGISTERED_MARGIN])


def _errors(sets: list[Cells], labels: _compare.Labels, flagged: np.ndarray) -> dict[str, object]:
    names = [f"{c.folder.name}/{n}" for c in sets for n in c.names]
    missed = [n for n, y, f in zip(names, labels, flagged, strict=True) if y == 1 and not f]
    rejected = [n for n, y, f in zip(names, labels, flagged, strict=True) if y == 0 and f]
    return {"missed_ng_samples": missed[:MAX_LISTED], "rejected_ok_samples": rejected[:MAX_LISTED]}


def _encode_all(model: ReferenceModel, cell: tuple[Image, ...]) -> list[F32Array]:
    return [model.encode(img, view) for img, view in zip(cell, model.view_names, strict=True)]


def _whole(model: ReferenceModel, cell: tuple[Image, ...]) -> Decision:
    return model.decide(*_encode_all(model, cell))


def latency(out: Path, cells: Cells) -> dict[str, dict[str, float]]:
    """Median / p90 ms per view image (encoder), per cell head run and per cell, 1 and 2 threads."""
    result: dict[str, dict[str, float]] = {}
    for threads in (1, 2):
        model = ReferenceModel(out, SessionOptions(intra_op_threads=threads))
        model.set_reference(cells.reference)
        cell = cells.views[0]
        views = _compare.latency_ms(partial(_encode_all, model, cell), LATENCY_RUNS)
        head = _compare.latency_ms(partial(model.decide, *_encode_all(model, cell)), LATENCY_RUNS)
        total = _compare.latency_ms(partial(_whole, model, cell), LATENCY_RUNS)
        n = len(cell)
        result[f"{threads}_thread"] = {
            "ms_per_view_image": round(views["median"] / n, 3),
            "ms_encoders_per_cell": views["median"],
            "ms_head_per_cell": head["median"],
            "ms_per_cell": total["median"],
            "ms_per_cell_p90": total["p90"],
        }
    return result


def evaluate(out: Path, val: list[Cells], test: list[Cells]) -> tuple[float, dict[str, object]]:
    """The calibrated threshold and the metrics dictionary of the manifest."""
    model = ReferenceModel(out, SessionOptions(intra_op_threads=2))
    val_labels, val_margins = margins(model, val)
    threshold, rule = _compare.calibrate_threshold(val_labels, val_margins)
    val_metrics = _compare.binary_metrics(val_labels, val_margins, threshold)
    held_out = test or val
    labels, scores = (val_labels, val_margins) if not test else margins(model, test)
    metrics: dict[str, object] = dict(_compare.binary_metrics(labels, scores, threshold))
    flagged = _compare.sigmoid(scores) >= threshold
    metrics.update(_errors(held_out, labels, flagged))
    metrics["evaluated_on"] = (
        "test folders, exported ONNX through linevision.inference.reference"
        if test
        else "validation folders (no test folders given), exported ONNX"
    )
    metrics["threshold_rule"] = rule + ", on the validation folders"
    metrics["validation"] = val_metrics
    metrics["latency"] = latency(out, held_out[0])
    metrics["latency_setup"] = (
        "onnxruntime CPUExecutionProvider, batch 1, median of at most 60 runs in 1.5 s; "
        "a cell = every view encoded + one head run; reference cached"
    )
    for role, name in model.manifest.files.items():
        metrics[f"{role}_onnx_bytes"] = (out / name).stat().st_size
    log.info(
        "evaluated", threshold=threshold, **dict(_compare.binary_metrics(labels, scores, threshold))
    )
    return threshold, metrics
