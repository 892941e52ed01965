"""Reference-comparison stations (seal_edge, six_view): cells of one frame per view.

Each view is encoded as soon as its frame arrives; the recipe's reference features are
computed once, when the station is built; the head runs when the cell's last view is in.
Views are matched by cell id only, so a frame of one cell is never combined with another's.
An NG of a multi-view cell carries a ``detail`` (run later, by the archive) that finds the
view that failed and where its pixels differ from the reference.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from linevision.inference.manifest import sha256_file
from linevision.inference.reference import F32Array, ReferenceMismatchError, ReferenceModel
from linevision.types import Decision, Defect, Detail, Frame, Image

_PARTIAL_CELLS = 64
"""Cells being assembled at once; older partial cells have timed out and are dropped."""


class ReferenceImageError(ValueError):
    """Reference images that do not fit the model or cannot be read."""


def reference_files(path: Path, views: int) -> list[Path]:
    """One image file (one view), or a folder's ``1.png`` ... ``<views>.png``."""
    return [path] if path.is_file() else [path / f"{i}.png" for i in range(1, views + 1)]


def check_calibration_reference(model_dir: Path, listing: str, files: list[Path]) -> None:
    """A calibrated model's reference views must be the ones it was calibrated with.

    ``listing`` (in ``model_dir``) names them ``reference/<file>`` with their sha256; a
    view that differs or is not listed raises ``ReferenceImageError``.
    """
    listed = {}
    for line in (model_dir / listing).read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        if name.startswith("reference/"):
            listed[name.removeprefix("reference/")] = digest
    differ = [str(f) for f in files if listed.get(f.name) != sha256_file(f)]
    if differ:
        msg = (
            f"reference views {', '.join(differ)} are not the ones model {model_dir} was "
            f"calibrated with (see its {listing}); calibrate again with these views"
        )
        raise ReferenceImageError(msg)


def load_reference_images(path: Path, views: int, *, color: bool) -> list[Image]:
    """One image file (one view), or a folder holding ``1.png`` ... ``<views>.png``."""
    files = reference_files(path, views)
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
    part_slack_ms = 0.0

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
        self.reference_model = model
        self.model = model.ref
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
        images = load_reference_images(reference, self.views, color=color)
        if model.calibration is not None:
            files = reference_files(reference, self.views)
            check_calibration_reference(model.model_dir, model.calibration.listing, files)
        try:
            model.set_reference(images)
        except ReferenceMismatchError as exc:
            msg = f"station {name!r}, reference {reference}: {exc}"
            raise ReferenceImageError(msg) from exc
        model.warm_up(images)
        self.reference_ms = (time.perf_counter() - t0) * 1000.0
        self._partial: OrderedDict[int, dict[str, tuple[F32Array, Image]]] = OrderedDict()
        self._lock = threading.Lock()

    def inspect(self, frame: Frame) -> Decision | None:
        view = self._view_of.get(frame.camera_id)
        if view is None:
            msg = f"station {self.name!r} has no view for camera {frame.camera_id!r}"
            raise ReferenceImageError(msg)
        t0 = time.perf_counter()
        features = self.reference_model.encode(frame.image, view)
        encode_ms = (time.perf_counter() - t0) * 1000.0
        if self.views == 1:
            return self._decide([features], encode_ms)
        with self._lock:
            cell = self._partial.setdefault(frame.cell_id, {})
            cell[frame.camera_id] = (features, frame.image)
            while len(self._partial) > _PARTIAL_CELLS:
                self._partial.popitem(last=False)
            if len(cell) < self.views:
                return None
            self._partial.pop(frame.cell_id, None)
        views = [cell[cam] for cam in self._order]
        decision = self._decide([f for f, _ in views], encode_ms, tuple(i for _, i in views))
        if decision.verdict != "NG":
            return decision
        return replace(decision, detail=failed_view_detail(self.reference_model, views))

    def _decide(
        self, features: list[F32Array], encode_ms: float, views: tuple[Image, ...] = ()
    ) -> Decision:
        d = self.reference_model.decide(*features)
        return Decision(
            verdict=d.verdict,
            reason=d.reason,
            label=d.label,
            score=d.score,
            model=d.model,
            infer_ms=(d.infer_ms or 0.0) + encode_ms,
            views=views,
        )


DIFFERENCE = "difference"
"""The kind of a located defect of a comparison station: where the view differs most."""


def failed_view_detail(
    model: ReferenceModel, views: list[tuple[F32Array, Image]]
) -> Callable[[], Detail]:
    """The detail of an NG cell, worked out when called (off the hot path): the view that
    made it NG (``ReferenceModel.failed_view``), and the box where that view's pixels differ
    most from its reference, when the model has the residual channels to tell."""

    def detail() -> Detail:
        index, margins = model.failed_view([f for f, _ in views])
        features, image = views[index]
        box = model.hot_box(features, (image.shape[0], image.shape[1]))
        score = float(1.0 / (1.0 + np.exp(-min(max(margins[index], -50.0), 50.0))))
        defects = () if box is None else (Defect(DIFFERENCE, round(score, 4), *box),)
        name = model.view_names[index]
        return Detail(image=image, defects=defects, view=name, views=len(views))

    return detail
