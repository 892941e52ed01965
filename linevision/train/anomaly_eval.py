"""Measure a written anomaly model folder on held-out folders through the runtime.

Each ``--test`` folder is scored as the station would (``ReferenceModel``: registration,
encoder, head, the manifest's threshold); a cell with a view that cannot be registered is
NG, as in the runtime. The figures go into the manifest's ``metrics``: NG recall, OK false
reject and AUROC at the model's threshold, recall per defect kind (the folders' ``kind``
column), the cells missed and rejected, and the latency per cell at one and two threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np

from linevision.inference.align import AlignmentError
from linevision.inference.reference import ReferenceModel
from linevision.inference.session import SessionOptions
from linevision.tools.kinds import per_kind, read_kinds
from linevision.train import _compare, _evaluate
from linevision.train._cells import load_cells

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from linevision.train._cells import Cells

UNREGISTERED: Final = 1e6
"""u of a cell whose view cannot be registered: NG in the runtime."""
MAX_LISTED: Final = 20


def folder_scores(model: ReferenceModel, cells: Cells) -> np.ndarray:
    """u of every cell of one folder, against its own reference views."""
    model.set_reference(cells.reference)
    out = np.empty(len(cells.labels))
    for i in range(len(cells.labels)):
        views = cells.views[i]
        try:
            feats = [model.encode(img, v) for img, v in zip(views, model.view_names, strict=True)]
            out[i] = float(model.anomaly_scores(*feats)[0])
        except AlignmentError:
            out[i] = UNREGISTERED
    return out


def evaluate(out: Path, test: Sequence[Path], station: str) -> dict[str, object]:
    """The manifest's metrics: held-out figures at the model's threshold and latency."""
    model = ReferenceModel(out, SessionOptions(intra_op_threads=2))
    assert model.anomaly is not None
    threshold = model.anomaly.threshold
    metrics: dict[str, object] = {}
    if test:
        sets = [load_cells(f, station) for f in test]
        u = np.concatenate([folder_scores(model, c) for c in sets])
        labels = np.concatenate([c.labels for c in sets])
        kinds = [k for f in test for k in read_kinds(f, station)]
        metrics.update(_compare.binary_metrics(labels, u - threshold, 0.5))
        flagged = u >= threshold
        metrics["per_kind"] = per_kind(kinds, list(labels == 1), list(flagged))
        names = [f"{c.folder.name}/{n}" for c in sets for n in c.names]
        metrics["missed_ng_samples"] = [
            n for n, y, f in zip(names, labels, flagged, strict=True) if y == 1 and not f
        ][:MAX_LISTED]
        metrics["rejected_ok_samples"] = [
            n for n, y, f in zip(names, labels, flagged, strict=True) if y == 0 and f
        ][:MAX_LISTED]
        metrics["evaluated_on"] = "test folders, exported ONNX through the runtime"
        metrics["latency"] = _evaluate.latency(out, sets[0])
        metrics["latency_setup"] = (
            "onnxruntime CPUExecutionProvider, batch 1, median of 60 runs; "
            "a cell = every view registered and encoded + one head run; reference cached"
        )
    else:
        metrics["evaluated_on"] = "nothing (no --test folders given)"
    for role, name in model.manifest.files.items():
        metrics[f"{role}_onnx_bytes"] = (out / name).stat().st_size
    return metrics
