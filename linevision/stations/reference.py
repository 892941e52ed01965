"""Reference-comparison stations (seal_edge, six_view): cells of one frame per view.

Each view is encoded as soon as its frame arrives; the recipe's reference features are
computed once, when the station is built; the head runs when the cell's last view is in.
Views are matched by cell id only, so a frame of one cell is never combined with another's.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from linevision.inference.reference import F32Array, ReferenceModel
from linevision.types import Decision, Frame, Image

_PARTIAL_CELLS = 64
"""Cells being assembled at once; older partial cells have timed out and are dropped."""


class ReferenceImageError(ValueError):
    """Reference images that do not fit the model or cannot be read."""


def load_reference_images(path: Path, views: int, *, color: bool) -> list[Image]:
    """One image file (one view), or a folder holding ``1.png`` ... ``<views>.png``."""
    files = [path] if path.is_file() else [path / f"{i}.png" for i in range(1, views + 1)]
    if len(files) != views:
        msg = f"reference {path} is one image, but the model has {views} views"
        raise ReferenceImageError(msg)
    flag = cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE
    images: list[Image] = []
    for f in files:
        img = cv2.imread(str(f), flag)
        if img is None:
            msg = f"reference image missing or unreadable: {f}"
            raise ReferenceImageError(msg)
        images.append(np.asarray(img, dtype=np.uint8))
    return images


class ReferenceStation:
    """Compares each cell's views with the recipe's reference views (sources 000 and 001).

    ``parallel``: views of a cell may be encoded on several threads at once; the cell's
    partial features are guarded by a lock and the head runs on whichever thread completes
    the cell.
    """

    parallel = True

    def __init__(  # noqa: PLR0913, PLR0917  (name, kind, model, cameras, reference, timing)
        self,
        name: str,
        kind: str,
        model: ReferenceModel,
        cameras: tuple[str, ...],
        reference: Path,
        assembly_ms: float,
    ) -> None:
        self.name = name
        self.kind = kind
        self.model = model
        self.session = model
        self.views = len(model.view_names)
        self.assembly_ms = assembly_ms
        if len(cameras) != self.views:
            msg = (
                f"station {name!r}: model {model.ref.name} has {self.views} views, "
                f"but {len(cameras)} cameras are configured"
            )
            raise ReferenceImageError(msg)
        self._view_of = {cam: model.view_names[i] for i, cam in enumerate(cameras)}
        self._order = list(cameras)
        color = model.manifest.input.channels == 3
        t0 = time.perf_counter()
        model.set_reference(load_reference_images(reference, self.views, color=color))
        self.reference_ms = (time.perf_counter() - t0) * 1000.0
        self._partial: OrderedDict[int, dict[str, F32Array]] = OrderedDict()
        self._lock = threading.Lock()

    def inspect(self, frame: Frame) -> Decision | None:
        view = self._view_of.get(frame.camera_id)
        if view is None:
            msg = f"station {self.name!r} has no view for camera {frame.camera_id!r}"
            raise ReferenceImageError(msg)
        t0 = time.perf_counter()
        features = self.model.encode(frame.image, view)
        encode_ms = (time.perf_counter() - t0) * 1000.0
        if self.views == 1:
            return self._decide([features], encode_ms)
        with self._lock:
            cell = self._partial.setdefault(frame.cell_id, {})
            cell[frame.camera_id] = features
            while len(self._partial) > _PARTIAL_CELLS:
                self._partial.popitem(last=False)
            if len(cell) < self.views:
                return None
            self._partial.pop(frame.cell_id, None)
        return self._decide([cell[cam] for cam in self._order], encode_ms)

    def _decide(self, features: list[F32Array], encode_ms: float) -> Decision:
        d = self.model.decide(*features)
        return Decision(
            verdict=d.verdict,
            reason=d.reason,
            label=d.label,
            score=d.score,
            model=d.model,
            infer_ms=(d.infer_ms or 0.0) + encode_ms,
        )
