"""``linevision train --station S``: which trainer trains which station.

A trainer is a module with ``main(argv) -> int`` that takes ``--data DIR --out DIR
[--epochs N] [--minutes M] [--seed N]`` (and may take more); the trainers that stop on a
validation score also take ``[--patience N]`` (``PATIENT``), and the comparison stations
``[--mode auto|anomaly|supervised]`` (``MODAL``). Adding a station is one line
in ``TRAINERS``. Importing this module needs no torch: a trainer module is imported
only when its station is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    TrainerMain = Callable[[Sequence[str]], int | None]

TRAINERS: Final[dict[str, str]] = {
    "pole_piece": "linevision.train.pole_piece_resnet",
    "seal_edge": "linevision.train.seal_edge",
    "six_view": "linevision.train.six_view",
    "blue_film": "linevision.train.blue_film",
}
NOT_AVAILABLE: Final[dict[str, str]] = {}
PATIENT: Final = frozenset({"pole_piece", "seal_edge", "six_view"})
"""Stations whose trainer stops early when validation stops improving (``--patience``)."""
MODAL: Final = frozenset({"seal_edge", "six_view"})
"""Stations that train supervised or in anomaly mode (``--mode``, ``linevision.train.mode``)."""
STATIONS: Final = (*TRAINERS, *NOT_AVAILABLE)


class TrainerUnavailableError(Exception):
    """The station has no trainer here (not written yet, or torch is not installed)."""


@dataclass(frozen=True)
class TrainRequest:
    station: str
    data: Path
    out: Path
    epochs: int | None = None
    minutes: float | None = None
    seed: int | None = None
    patience: int | None = None
    mode: str | None = None

    def argv(self, extra: Sequence[str] = ()) -> list[str]:
        """The trainer's command line: the common options set, then ``extra`` verbatim."""
        args = ["--data", str(self.data), "--out", str(self.out)]
        for flag, value in (
            ("--epochs", self.epochs),
            ("--minutes", self.minutes),
            ("--patience", self.patience),
            ("--mode", self.mode),
        ):
            if value is not None:
                args += [flag, str(value)]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        return [*args, *extra]


def trainer_main(station: str) -> TrainerMain:
    """The station trainer's ``main``; raises ``TrainerUnavailableError`` with the reason."""
    if station in NOT_AVAILABLE:
        raise TrainerUnavailableError(NOT_AVAILABLE[station])
    module_name = TRAINERS.get(station)
    if module_name is None:
        msg = f"unknown station {station!r}; expected one of {', '.join(STATIONS)}"
        raise TrainerUnavailableError(msg)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            msg = f"training needs torch: pip install 'linevision[train]' ({station})"
        elif exc.name == module_name:
            msg = f"training {station} is not available yet ({module_name} is not installed)"
        else:
            raise
        raise TrainerUnavailableError(msg) from exc
    main = getattr(module, "main", None)
    if not callable(main):
        msg = f"{module_name} has no main(argv); cannot train {station}"
        raise TrainerUnavailableError(msg)
    return cast("TrainerMain", main)


def train(request: TrainRequest, extra: Sequence[str] = ()) -> int:
    """Run the station's trainer in this process; its exit code."""
    if request.patience is not None and request.station not in PATIENT:
        msg = (
            f"{request.station} trains on good images only and has no validation score to "
            "wait for; it trains for the whole --minutes budget: drop --patience"
        )
        raise TrainerUnavailableError(msg)
    if request.mode is not None and request.station not in MODAL:
        msg = (
            f"--mode is for {' and '.join(sorted(MODAL))}; {request.station} has one way to "
            "train: drop --mode"
        )
        raise TrainerUnavailableError(msg)
    main = trainer_main(request.station)
    return int(main(request.argv(extra)) or 0)
