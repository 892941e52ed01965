"""The folder contract of station datasets (generated or real) and its reader.

``DIR/labels.csv`` (UTF-8, comma-separated, a header row) lists the samples, paths relative to
``DIR``; more columns after the required ones are allowed and ignored here. An optional
``kind`` column names each sample's defect kind (``OK``; several joined by ``+``): ``linevision
synth`` writes it, and ``linevision eval`` reports recall per kind from it (``tools.kinds``):

- ``pole_piece``: ``image,label``, label one of ``Normal|Short|Long|Powder|Other``.
- ``seal_edge``: ``image,label``, label ``OK|NG``; ``DIR/reference.png`` is a good seal.
- ``six_view``: ``cell,label``, label ``OK|NG``; views ``DIR/<cell>/1.png`` .. ``6.png``,
  references ``DIR/reference/1.png`` .. ``6.png``.
- ``blue_film``: ``image,label,mask``, label ``OK|NG``; ``mask`` empty for OK, else an 8-bit
  image (non-zero = defect) or empty when the frame's defects are not outlined.

``read_labels`` checks the file, its header and every row, and that every file it names
exists; each problem raises ``DataError`` naming the file and the line.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from linevision.synth import pole_piece

STATIONS: Final = ("pole_piece", "seal_edge", "six_view", "blue_film")
OK_NG: Final = ("OK", "NG")
LABELS: Final[dict[str, tuple[str, ...]]] = {
    "pole_piece": tuple(pole_piece.CLASSES),
    "seal_edge": OK_NG,
    "six_view": OK_NG,
    "blue_film": OK_NG,
}
HEADERS: Final[dict[str, tuple[str, ...]]] = {
    "pole_piece": ("image", "label"),
    "seal_edge": ("image", "label"),
    "six_view": ("cell", "label"),
    "blue_film": ("image", "label", "mask"),
}
VIEW_NAMES: Final = tuple(f"{v}.png" for v in range(1, 7))


class DataError(Exception):
    """A dataset folder does not follow the contract; the message names the file and line."""


@dataclass(frozen=True)
class Sample:
    """One row of ``labels.csv``: ``path`` is the image, or the cell's folder for six_view."""

    path: Path
    label: str
    mask: Path | None = None
    views: tuple[Path, ...] = ()


def _station(station: str) -> None:
    if station not in STATIONS:
        msg = f"unknown station {station!r}; expected one of {', '.join(STATIONS)}"
        raise DataError(msg)


def reference_paths(folder: Path, station: str) -> tuple[Path, ...]:
    """The reference images of ``station``'s folder (none for pole_piece and blue_film)."""
    _station(station)
    if station == "seal_edge":
        return (folder / "reference.png",)
    if station == "six_view":
        return tuple(folder / "reference" / name for name in VIEW_NAMES)
    return ()


def _relative(folder: Path, text: str, where: str, what: str) -> Path:
    if not text:
        msg = f"{where}: empty {what} path"
        raise DataError(msg)
    pure = PurePosixPath(text.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        msg = f"{where}: {what} path must be relative to {folder} and stay inside it, got {text!r}"
        raise DataError(msg)
    return folder.joinpath(*pure.parts)


def _existing_file(folder: Path, text: str, where: str, what: str) -> Path:
    path = _relative(folder, text, where, what)
    if not path.is_file():
        msg = f"{where}: {what} {text!r} not found (looked for {path})"
        raise DataError(msg)
    return path


def _sample(folder: Path, station: str, row: list[str], where: str) -> Sample:
    name, label = row[0].strip(), row[1].strip()
    if label not in LABELS[station]:
        expected = ", ".join(LABELS[station])
        msg = f"{where}: unknown label {label!r} for {station}; expected one of {expected}"
        raise DataError(msg)
    if station == "six_view":
        cell = _relative(folder, name, where, "cell")
        if not cell.is_dir():
            msg = f"{where}: cell {name!r} has no folder {cell}"
            raise DataError(msg)
        missing = [v for v in VIEW_NAMES if not (cell / v).is_file()]
        if missing:
            msg = f"{where}: cell {name!r} is missing view {', '.join(missing)} in {cell}"
            raise DataError(msg)
        return Sample(cell, label, None, tuple(cell / v for v in VIEW_NAMES))
    image = _existing_file(folder, name, where, "image")
    if station != "blue_film" or not row[2].strip():
        return Sample(image, label)
    if label == "OK":
        msg = f"{where}: an OK frame takes no mask, got {row[2].strip()!r}"
        raise DataError(msg)
    return Sample(image, label, _existing_file(folder, row[2].strip(), where, "mask"))


def _rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        msg = f"{path}: missing (every dataset folder needs labels.csv)"
        raise DataError(msg)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        msg = f"{path}: not a UTF-8 CSV file: {exc}"
        raise DataError(msg) from exc


def read_labels(folder: Path | str, station: str) -> list[Sample]:
    """The samples of a dataset folder of ``station``, checked against the contract."""
    _station(station)
    folder = Path(folder)
    path = folder / "labels.csv"
    rows = _rows(path)
    header = HEADERS[station]
    if not rows or tuple(c.strip() for c in rows[0][: len(header)]) != header:
        got = ",".join(rows[0]) if rows else "an empty file"
        msg = f"{path}:1: header must start with {','.join(header)}, got {got!r}"
        raise DataError(msg)
    for ref in reference_paths(folder, station):
        if not ref.is_file():
            msg = f"{ref}: missing (a {station} folder needs its reference images)"
            raise DataError(msg)
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        where = f"{path}:{line}"
        if not any(c.strip() for c in row):
            continue
        if len(row) < len(header):
            msg = f"{where}: expected {len(header)} fields ({','.join(header)}), got {len(row)}"
            raise DataError(msg)
        key = row[0].strip()
        if key in seen:
            msg = f"{where}: {header[0]} {key!r} listed twice (first on line {seen[key]})"
            raise DataError(msg)
        seen[key] = line
        samples.append(_sample(folder, station, row, where))
    if not samples:
        msg = f"{path}: no samples after the header"
        raise DataError(msg)
    return samples
