"""Which way a comparison station (seal_edge, six_view) trains: supervised or anomaly.

``--mode supervised`` trains the reference-compare network on OK and NG cells;
``--mode anomaly`` learns the good cells only (``linevision.train.anomaly``; NG cells, if
any, only set the threshold); ``--mode auto`` (the default) picks anomaly when the training
folders hold fewer than ``MIN_SUPERVISED_NG`` NG cells. Needs no torch.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Final

from linevision.synth.contract import DataError, read_labels
from linevision.train.folder_data import MIN_PER_CLASS

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

MODES: Final = ("auto", "anomaly", "supervised")
MIN_SUPERVISED_NG: Final = 200
"""NG cells from which ``auto`` trains the supervised network (docs/training.md, "Which mode
needs what"). A judgement, not a measured crossover: the supervised models, trained on
thousands of cells, beat the anomaly models on every held-out figure measured; the anomaly
model is what a plant can have before it has collected NG cells."""


def count(folders: Sequence[Path], station: str) -> dict[str, int]:
    """OK and NG cells over ``folders`` (``DataError`` for a folder that cannot be read)."""
    samples = [s for f in folders for s in read_labels(f, station)]
    ng = sum(s.label == "NG" for s in samples)
    return {"OK": len(samples) - ng, "NG": ng}


def resolve(mode: str, folders: Sequence[Path], station: str) -> str:
    """``anomaly`` or ``supervised`` for ``mode``; says which and why on stderr."""
    if mode not in MODES:
        msg = f"--mode must be one of {', '.join(MODES)}, got {mode!r}"
        raise ValueError(msg)
    counts = count(folders, station)
    if mode == "auto":
        chosen = "anomaly" if counts["NG"] < MIN_SUPERVISED_NG else "supervised"
        why = (
            f"{counts['NG']} NG cells, fewer than {MIN_SUPERVISED_NG}"
            if chosen == "anomaly"
            else f"{counts['NG']} NG cells, at least {MIN_SUPERVISED_NG}"
        )
        sys.stderr.write(f"train: {station} in {chosen} mode ({counts['OK']} OK, {why})\n")
        return chosen
    if mode == "supervised" and counts["NG"] < MIN_PER_CLASS:
        where = ", ".join(str(f / "labels.csv") for f in folders)
        msg = (
            f"{where}: {counts['NG']} NG cells; supervised training needs at least "
            f"{MIN_PER_CLASS} (and does well from about {MIN_SUPERVISED_NG}). With good cells "
            "only, train with --mode anomaly (or --mode auto)"
        )
        raise DataError(msg)
    return mode
