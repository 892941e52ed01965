"""``linevision dataset export``: the reviewed cells of a station as a dataset folder.

Writes the folder contract (docs/data.md) that ``linevision train`` reads: ``labels.csv``
(``image,label`` and, allowed after them, ``review``, ``operator``, ``source``, ``cell_id``)
and ``images/`` with each reviewed cell's frame as the camera gave it (the archive's PNG, no
overlay); seal_edge adds the station's ``reference.png``. six_view writes ``cell,label`` (and
the same columns after them), a folder ``<cell>/1.png .. 6.png`` per reviewed cell with its
six views and ``reference/1.png .. 6.png``. blue_film writes ``image,label,mask``: the
archive keeps of a film frame (4000 x 18000) only its full-resolution 1024 x 1024 tiles
around its first defects, so each tile is a sample: NG with the model's mask when the
operator confirmed the NG, OK without one when they marked it a false reject. The label is
the one the review gave (the latest review of each cell counts). A cell whose frame is no
longer in the archive (retention, or ``review.raw: false`` when it was taken) is counted and
left out.

A folder of a reference-compare station has one reference (one product design): the
station's, or with ``recipe`` that recipe's; cells taken under another recipe are left out
and counted.
"""

from __future__ import annotations

import csv
import re
import shutil
import sqlite3
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from linevision.config import StationConfig
from linevision.lifecycle.review import ARCHIVE_DB, latest_reviews
from linevision.paths import raw_cell_relpath, raw_relpath
from linevision.synth.contract import VIEW_NAMES, DataError, read_labels

EXPORTABLE = ("pole_piece", "seal_edge", "six_view", "blue_film")
_AGO = re.compile(r"^(\d+)([mhd])$")


class DatasetError(ValueError):
    """An export that cannot be done; the message names the option or the file."""


def parse_since(text: str, now: datetime | None = None) -> int:
    """``--since``: a local date or date and time, or an age (``30m``, ``12h``, ``7d``) -> ns.

    >>> now = datetime(2026, 12, 7, 12, 0)
    >>> parse_since("2h", now) == int(datetime(2026, 12, 7, 10, 0).timestamp() * 1e9)
    True
    >>> parse_since("2026-12-01", now) == int(datetime(2026, 12, 1).timestamp() * 1e9)
    True
    """
    m = _AGO.match(text.strip())
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        base = now or datetime.now()  # noqa: DTZ005  (the plant's local time)
        return int((base - timedelta(**{unit: int(m.group(1))})).timestamp() * 1e9)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        msg = f"--since: {text!r} is not a date (2026-12-01, 2026-12-01T06:00) or an age (12h, 7d)"
        raise DatasetError(msg) from exc
    return int(when.timestamp() * 1e9)


def _reference(sc: StationConfig, out: Path) -> None:
    if sc.reference is None:
        msg = f"station {sc.name!r} has no reference image to export"
        raise DatasetError(msg)
    if sc.type == "six_view":
        files = [sc.reference / v for v in VIEW_NAMES]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            msg = f"reference views not found: {', '.join(missing)}"
            raise DatasetError(msg)
        (out / "reference").mkdir()
        for f in files:
            shutil.copyfile(f, out / "reference" / f.name)
        return
    ref = sc.reference if sc.reference.is_file() else sc.reference / "1.png"
    if not ref.is_file():
        msg = f"reference image {ref} not found"
        raise DatasetError(msg)
    shutil.copyfile(ref, out / "reference.png")


def _copy(archive: Path, rel: str, out: Path, name: str, kind: str) -> list[tuple[str, str]]:
    """A cell's kept frame (six_view: its six views; blue_film: its tiles and their masks) to
    ``out``; ``(image, mask)`` per sample written, none when it is not all there any more."""
    if kind == "blue_film":
        return _copy_tiles(archive / raw_cell_relpath(rel), out, name)
    if kind != "six_view":
        src = archive / raw_relpath(rel)
        if not src.is_file():
            return []
        shutil.copyfile(src, out / f"{name}.png")
        return [(f"{name}.png", "")]
    views = [archive / raw_cell_relpath(rel) / v for v in VIEW_NAMES]
    if not all(v.is_file() for v in views):
        return []
    (out / name).mkdir(parents=True)
    for v in views:
        shutil.copyfile(v, out / name / v.name)
    return [(name, "")]


def _copy_tiles(src: Path, out: Path, name: str) -> list[tuple[str, str]]:
    """A film frame's kept tiles (``images/<name>_t<k>.png``) and their masks (``masks/``)."""
    tiles = sorted(src.glob("tile*.png")) if src.is_dir() else []
    if not tiles or not all((src / f"mask{t.name[4:]}").is_file() for t in tiles):
        return []
    (out / "masks").mkdir(exist_ok=True)
    written = []
    for t in tiles:
        k = t.name[4:].removesuffix(".png")
        image, mask = f"{name}_t{k}.png", f"masks/{Path(name).name}_t{k}.png"
        shutil.copyfile(t, out / image)
        shutil.copyfile(src / f"mask{k}.png", out / mask)
        written.append((image, mask))
    return written


def export(  # noqa: PLR0913  (where from, which cells, where to)
    archive: Path,
    review: Path,
    sc: StationConfig,
    since_ns: int,
    out: Path,
    *,
    recipe: str | None = None,
) -> dict[str, object]:
    """Write the reviewed cells of ``sc`` since ``since_ns`` to ``out``; a summary.

    ``recipe``: only the cells taken under it (``sc`` is then the station with that
    recipe applied: its reference goes with the folder).
    """
    if sc.type not in EXPORTABLE:
        msg = f"station {sc.name!r}: export works for {', '.join(EXPORTABLE)}, not {sc.type}"
        raise DatasetError(msg)
    if out.exists() and any(out.iterdir()):
        msg = f"--out: {out} exists and is not empty"
        raise DatasetError(msg)
    if not (archive / ARCHIVE_DB).is_file():
        msg = f"no archive at {archive / ARCHIVE_DB}"
        raise DatasetError(msg)
    reviews = latest_reviews(review, sc.name, since_ns)
    images = _images(archive, reviews)
    if sc.type in ("seal_edge", "six_view") and recipe is None:
        _one_recipe(sc.name, {rec for _, rec in images.values()})
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, counts = _write_cells(archive, reviews, images, sc, out, recipe)
    if not rows:
        shutil.rmtree(out / "images", ignore_errors=True)
        shutil.rmtree(out / "masks", ignore_errors=True)
        msg = f"station {sc.name!r}: no reviewed cell with its frame since the given time"
        raise DatasetError(msg)
    if sc.type in ("seal_edge", "six_view"):
        _reference(sc, out)
    first = ["cell", "label"] if sc.type == "six_view" else ["image", "label"]
    first += ["mask"] if sc.type == "blue_film" else []
    with (out / "labels.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*first, "review", "operator", "source", "cell_id"])
        w.writerows(rows)
    try:
        read_labels(out, sc.type)
    except DataError as exc:
        msg = f"the exported folder does not follow the contract: {exc}"
        raise DatasetError(msg) from exc
    labels = Counter(row[1] for row in rows)
    if sc.type == "blue_film" and not any((out / "masks").iterdir()):
        (out / "masks").rmdir()
    return {
        "station": sc.name,
        "out": str(out),
        "cells": len({row[-2] for row in rows}),
        "samples": len(rows),
        "labels": dict(sorted(labels.items())),
        "without_frame": counts["without_frame"],
        "other_recipe": counts["other_recipe"],
        "recipe": recipe,
        "t_ns": time.time_ns(),
    }


def _write_cells(  # noqa: PLR0913, PLR0917  (the reviews, their pictures, where to)
    archive: Path,
    reviews: dict[tuple[str, int], dict[str, object]],
    images: dict[tuple[str, int], tuple[str, str | None]],
    sc: StationConfig,
    out: Path,
    recipe: str | None,
) -> tuple[list[list[str]], Counter[str]]:
    """Copy each reviewed cell's kept frame; its labels.csv row. Oldest first."""
    rows: list[list[str]] = []
    counts: Counter[str] = Counter(without_frame=0, other_recipe=0)
    for (run_id, seq), r in sorted(reviews.items(), key=lambda kv: int(str(kv[1]["t_frame_ns"]))):
        rel, cell_recipe = images.get((run_id, seq), (None, None))
        if recipe is not None and cell_recipe != recipe:
            counts["other_recipe"] += 1
            continue
        name = f"images/{sc.name}_{run_id[:8]}_{seq:010d}"
        written = [] if rel is None else _copy(archive, rel, out, name, sc.type)
        if not written:
            counts["without_frame"] += 1
            continue
        label = str(r["label"])
        who = [str(r["decision"]), str(r["operator"]), f"{run_id}:{seq}", str(r["cell_id"])]
        for image, mask in written:
            if sc.type != "blue_film":
                rows.append([image, label, *who])
            elif label == "NG":
                rows.append([image, label, mask, *who])
            else:  # a false reject: the tile is good film, its mask goes
                (out / mask).unlink()
                rows.append([image, label, "", *who])
    return rows, counts


def _one_recipe(station: str, recipes: set[str | None]) -> None:
    """A reference-compare folder has one reference: its cells must share one recipe."""
    if len(recipes) > 1:
        names = ", ".join(sorted(str(r) for r in recipes))
        msg = (
            f"station {station!r}: the reviewed cells were taken under recipes {names}, "
            f"each with its own reference; export one with --recipe"
        )
        raise DatasetError(msg)


def _images(
    archive: Path, reviews: dict[tuple[str, int], dict[str, object]]
) -> dict[tuple[str, int], tuple[str, str | None]]:
    """The archived picture (its frame's path derives from it) and recipe of each reviewed
    cell whose picture is still kept."""
    con = sqlite3.connect(f"file:{archive / ARCHIVE_DB}?mode=ro", uri=True, timeout=5.0)
    try:
        out: dict[tuple[str, int], tuple[str, str | None]] = {}
        for run_id, seq in reviews:
            row = con.execute(
                "SELECT image, recipe FROM verdicts WHERE run_id = ? AND seq = ?", (run_id, seq)
            ).fetchone()
            if row is not None and row[0]:
                out[(run_id, seq)] = (str(row[0]), None if row[1] is None else str(row[1]))
        return out
    finally:
        con.close()
