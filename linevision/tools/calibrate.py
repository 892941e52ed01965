"""``linevision calibrate``: a product's own threshold for a comparison model, from good cells.

At a changeover a plant has the new product's reference views and a few dozen good cells,
but no NG cells. ``calibrate`` scores up to ``MAX_CELLS`` good cells through the runtime path
(``ReferenceModel``: registration, encoder, head) and sets the product's normalisation and
threshold from their margins m = logit(NG) - logit(OK), on the cell and per view (``fit``,
``RULE``); the result is a copy of the model folder whose manifest carries a
``calibration`` section (``linevision.inference.manifest.Calibration``), the product's
typical good views and a listing of the images that set it.
The ONNX files are copied unchanged, so their sha256 fields hold; inference only, no torch.

    linevision calibrate --station six_view --data GOOD_CELLS --model M --out M2

``GOOD_CELLS`` follows the station's folder contract (``linevision.synth.contract``):
``labels.csv``, the reference views and the cells; only ``OK`` rows are used.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from linevision.inference import calibration
from linevision.inference.align import AlignmentError
from linevision.inference.calibration import MAD_TO_SD, F32Array
from linevision.inference.manifest import (
    Calibration,
    ModelFileError,
    ScoreScale,
    load_manifest,
    sha256_file,
    write_manifest,
)
from linevision.inference.reference import ReferenceModel
from linevision.inference.session import SessionOptions
from linevision.log import get_logger
from linevision.synth.contract import Sample, read_labels, reference_paths
from linevision.train.folder_data import read_image

if TYPE_CHECKING:
    from pathlib import Path

log = get_logger(__name__)

STATIONS: Final = ("six_view",)
"""Stations whose calibration rule was measured; seal_edge would run the same code, but its
rule's constants were not chosen or checked on seal_edge products."""
MIN_CELLS: Final = 20
"""Fewest good cells accepted: the median of n cells has a standard error of about
1.25 / sqrt(n) spreads (0.28 at 20), and the MAD needs as many to be stable."""
MAX_CELLS: Final = 50
"""Most good cells used (the first in ``labels.csv`` order); more are not needed."""
THRESHOLD: Final = 3.0
"""NG at u >= 3: a score 3 spreads above the product's good median, 6 logits at least.
Not the largest good score plus a margin: with 50 cells that maximum swings by several
spreads from one draw of good cells to the next (development designs 5001-5004)."""
MIN_SCALE: Final = 2.0
"""Floor of a spread (logit units): the good cells' spread of a view is often far smaller
than how much a new good cell of the same product can move (development designs)."""
SCORES: Final = ("cell", "views")
"""The head's margins calibrated: on the cell as captured, and per view."""
LISTING: Final = "calibration_cells.sha256"
FEATURES: Final = "calibration_features.npz"
RULE: Final = (
    "per score (the cell as captured; each view among the typical good views) "
    f"u = (m - median) / max({MAD_TO_SD} x MAD, {MIN_SCALE}) over the good cells' "
    "margins m = logit(NG) - logit(OK), each good cell scored against the typical views of "
    f"the others; a cell is NG when the largest u >= {THRESHOLD}"
)

F64Array = npt.NDArray[np.float64]


class CalibrationError(Exception):
    """Calibration cannot be done: too few good cells, a wrong station or model, a bad cell."""


@dataclass(frozen=True)
class GoodCells:
    """The good cells of a folder: the ones used, how many OK and NG rows it holds."""

    used: tuple[Sample, ...]
    given: int
    ng_ignored: int


def good_cells(data: Path, station: str) -> GoodCells:
    """The first ``MAX_CELLS`` OK samples of ``data``; ``CalibrationError`` below ``MIN_CELLS``."""
    samples = read_labels(data, station)
    ok = tuple(s for s in samples if s.label == "OK")
    if len(ok) < MIN_CELLS:
        msg = (
            f"{data}: {len(ok)} good (OK) cells; calibration needs at least {MIN_CELLS} "
            f"(and uses up to {MAX_CELLS})"
        )
        raise CalibrationError(msg)
    return GoodCells(ok[:MAX_CELLS], len(ok), len(samples) - len(ok))


@dataclass(frozen=True)
class Fit:
    """A product's calibration from its good cells (before it is written)."""

    typical: tuple[F32Array, ...]
    names: tuple[str, ...]
    location: F64Array
    scale: F64Array
    good: F64Array
    threshold: float


def good_features(model: ReferenceModel, cells: tuple[Sample, ...]) -> list[F32Array]:
    """Per view, the (N, C, h, w) inspection maps of the cells (the reference must be set)."""
    per_view: list[list[F32Array]] = [[] for _ in model.view_names]
    for cell in cells:
        views = [read_image(p) for p in (cell.views or (cell.path,))]
        if len(views) != len(model.view_names):
            msg = f"{cell.path}: {len(views)} views, model {model.ref.name} has {model.view_names}"
            raise CalibrationError(msg)
        try:
            for i, (v, img) in enumerate(zip(model.view_names, views, strict=True)):
                per_view[i].append(model.encode(img, v))
        except AlignmentError as exc:
            msg = f"{cell.path}: a good cell the runtime cannot register ({exc}); check it"
            raise CalibrationError(msg) from exc
    return [np.concatenate(maps, axis=0) for maps in per_view]


def fit(model: ReferenceModel, stacks: list[F32Array], scores: tuple[str, ...] = SCORES) -> Fit:
    """The product's typical views, score scales and threshold from its good cells' maps.

    Each good cell is scored against the typical views of the others (leave one out), as a
    new cell would be against all of them.
    """
    n = stacks[0].shape[0]
    others = [calibration.leave_one_out_means(s) for s in stacks]
    margins = np.stack(
        [
            model.view_margins([s[i : i + 1] for s in stacks], [o[i] for o in others])
            for i in range(n)
        ]
    )
    names = (calibration.CELL, *model.view_names)
    wanted = {calibration.CELL} if "cell" in scores else set()
    if "views" in scores:
        wanted |= set(model.view_names)
    keep = [i for i, name in enumerate(names) if name in wanted]
    location, scale = calibration.robust_scale(margins[:, keep], MIN_SCALE)
    good = calibration.calibrated(margins[:, keep], location, scale)
    typical = tuple(np.asarray(s.mean(axis=0, keepdims=True), np.float32) for s in stacks)
    return Fit(
        typical,
        tuple(names[i] for i in keep),
        location,
        scale,
        good,
        THRESHOLD,
    )


def listing(data: Path, files: list[Path]) -> str:
    """``sha256sum``-style lines for ``files`` (paths relative to ``data``, POSIX)."""
    lines = [f"{sha256_file(f)}  {f.relative_to(data).as_posix()}" for f in files]
    return "\n".join(lines) + "\n"


def _check_out(model_dir: Path, out: Path) -> None:
    if out.resolve() == model_dir.resolve():
        msg = f"--out {out} is the model folder itself; write the calibrated copy elsewhere"
        raise CalibrationError(msg)
    if out.exists() and any(out.iterdir()):
        msg = f"--out {out} exists and is not empty"
        raise CalibrationError(msg)


def calibrate(
    station: str, data: Path, model_dir: Path, out: Path, threads: int = 1
) -> Calibration:
    """Score the good cells of ``data`` with ``model_dir``; write the calibrated copy ``out``."""
    if station not in STATIONS:
        msg = f"calibration is for {', '.join(STATIONS)}, not {station}"
        raise CalibrationError(msg)
    _check_out(model_dir, out)
    if load_manifest(model_dir)[0].anomaly is not None:
        msg = (
            f"{model_dir} is an anomaly model: it set its own threshold from the good cells it "
            "learnt; for another product train one on that product's good cells "
            f"(linevision train --station {station} --data GOOD_CELLS --mode anomaly)"
        )
        raise CalibrationError(msg)
    cells = good_cells(data, station)
    if cells.given > MAX_CELLS:
        log.warning("calibration_cells_capped", given=cells.given, used=MAX_CELLS)
    model = ReferenceModel(model_dir, SessionOptions(intra_op_threads=threads))
    refs = list(reference_paths(data, station))
    model.set_reference([read_image(p) for p in refs])
    found = fit(model, good_features(model, cells.used))
    text = listing(data, refs + [p for c in cells.used for p in (c.views or (c.path,))])
    manifest, _ = load_manifest(model_dir)
    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    for stale in (LISTING, FEATURES):  # a calibrated model's own, replaced below
        (out / stale).unlink(missing_ok=True)
    (out / LISTING).write_text(text, encoding="utf-8")
    arrays: dict[str, Any] = dict(zip(model.view_names, found.typical, strict=True))
    np.savez(out / FEATURES, **arrays)
    cal = Calibration(
        rule=RULE,
        scores=tuple(
            ScoreScale(name=name, location=float(loc), scale=float(sc))
            for name, loc, sc in zip(found.names, found.location, found.scale, strict=True)
        ),
        threshold=found.threshold,
        cells=len(cells.used),
        cells_given=cells.given,
        good_scores={
            "min": float(found.good.min()),
            "median": float(np.median(found.good)),
            "max": float(found.good.max()),
            "over_threshold": int((found.good >= found.threshold).sum()),
        },
        features=FEATURES,
        features_sha256=sha256_file(out / FEATURES),
        listing=LISTING,
        data_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        source_version=manifest.version,
        calibrated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    version = f"{manifest.version.split('+cal.')[0]}+cal.{cal.data_sha256[:8]}"
    update = {"calibration": cal, "version": version}
    write_manifest(out, manifest.model_copy(update=update))
    try:
        load_manifest(out)
    except ModelFileError as exc:  # pragma: no cover - a copy that does not verify is a bug
        msg = f"the calibrated copy {out} does not verify: {exc}"
        raise CalibrationError(msg) from exc
    log.info(
        "calibrated",
        model=manifest.name,
        out=str(out),
        cells=cal.cells,
        threshold=round(cal.threshold, 4),
    )
    return cal
