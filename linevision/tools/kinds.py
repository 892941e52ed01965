"""Defect kinds of a dataset folder: per-kind recall, and a folder without some kinds.

The folder contract (``synth.contract``) allows columns after the required ones; an
optional ``kind`` column names each sample's defect kind (``OK`` for a good one; a frame
with several defects joins them with ``+``, e.g. ``white+break``). ``linevision synth``
writes it. Without that column the label is the kind: pole_piece's classes are its defect
kinds; for OK/NG stations every NG is then one kind, ``NG``.
"""

from __future__ import annotations

import csv
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypedDict

from linevision.synth.contract import DataError, read_labels

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

KIND: Final = "kind"
SEPARATOR: Final = "+"


class KindRecall(TypedDict):
    """One row of the per-kind table: ``share`` is flagged NG / n (for OK: false rejects)."""

    kind: str
    ng: bool
    n: int
    flagged: int
    share: float


def _table(folder: Path) -> tuple[list[str], list[list[str]]]:
    with (folder / "labels.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    header = [c.strip() for c in rows[0]] if rows else []
    return header, [r for r in rows[1:] if any(c.strip() for c in r)]


def has_kind_column(folder: Path) -> bool:
    return KIND in _table(folder)[0]


def read_kinds(folder: Path, station: str) -> list[str]:
    """Each sample's kind, in ``read_labels`` order (which checks the folder first)."""
    samples = read_labels(folder, station)
    header, rows = _table(folder)
    if KIND not in header:
        return [s.label for s in samples]
    column = header.index(KIND)
    return [
        (row[column].strip() if len(row) > column else "") or s.label
        for s, row in zip(samples, rows, strict=True)
    ]


def per_kind(
    kinds: Sequence[str], true_ng: Sequence[bool], flagged_ng: Sequence[bool]
) -> list[KindRecall]:
    """Per kind: how many were flagged NG. A sample of ``a+b`` counts for ``a`` and for ``b``.

    >>> [(r["kind"], r["flagged"], r["n"]) for r in per_kind(
    ...     ["OK", "crack", "crack+bubble"], [False, True, True], [False, True, False])]
    [('OK', 0, 1), ('bubble', 0, 1), ('crack', 1, 2)]
    """
    counts: dict[str, list[int]] = {}
    ng_of: dict[str, bool] = {}
    for kind, ng, flagged in zip(kinds, true_ng, flagged_ng, strict=True):
        for part in dict.fromkeys(kind.split(SEPARATOR)):
            n_flagged = counts.setdefault(part, [0, 0])
            n_flagged[0] += 1
            n_flagged[1] += int(flagged)
            ng_of[part] = bool(ng)
    ordered = sorted(counts, key=lambda k: (ng_of[k], k))
    return [
        KindRecall(
            kind=k,
            ng=ng_of[k],
            n=counts[k][0],
            flagged=counts[k][1],
            share=counts[k][1] / counts[k][0],
        )
        for k in ordered
    ]


def format_kinds(rows: Sequence[KindRecall]) -> str:
    """The per-kind table as text: NG kinds give recall, OK its false-reject share."""
    lines = [f"{'kind':<24}{'n':>6}{'flagged':>9}  share"]
    for r in rows:
        what = "NG recall" if r["ng"] else "OK false reject"
        lines.append(f"{r['kind']:<24}{r['n']:>6}{r['flagged']:>9}  {r['share']:.3f} {what}")
    return "\n".join(lines)


@contextmanager
def without_kinds(folder: Path, station: str, excluded: Sequence[str]) -> Iterator[Path]:
    """A temporary folder that is ``folder`` minus the samples of the ``excluded`` kinds.

    Every entry of ``folder`` but ``labels.csv`` is linked into it; its ``labels.csv`` keeps
    the header and the rows whose kind (any part of ``a+b``) is not excluded. Raises
    ``DataError`` when the folder has no ``kind`` column (pole_piece: the kinds are classes, and
    its trainer needs every class) or when an excluded kind does not occur.
    """
    if station == "pole_piece":
        msg = (
            "pole_piece's defect kinds are its classes and its classifier learns all five; "
            "a held-out kind needs a classifier without that class"
        )
        raise DataError(msg)
    kinds = read_kinds(folder, station)
    header, rows = _table(folder)
    if KIND not in header:
        msg = f"{folder / 'labels.csv'}: no 'kind' column, so no kind can be left out"
        raise DataError(msg)
    present = {part for k in kinds for part in k.split(SEPARATOR)}
    missing = sorted(set(excluded) - present)
    if missing:
        where = folder / "labels.csv"
        msg = (
            f"{where}: no sample of kind {', '.join(missing)} (it has {', '.join(sorted(present))})"
        )
        raise DataError(msg)
    keep = [
        r for r, k in zip(rows, kinds, strict=True) if not set(k.split(SEPARATOR)) & set(excluded)
    ]
    with tempfile.TemporaryDirectory(prefix="linevision-kinds-") as tmp:
        view = Path(tmp)
        for entry in folder.iterdir():
            if entry.name != "labels.csv":
                (view / entry.name).symlink_to(entry.resolve())
        with (view / "labels.csv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(keep)
        yield view
