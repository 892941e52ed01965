"""``linevision eval --robustness``: the usual figures again under shifts a line would see.

Each row is one pass over the whole folder through the runtime path
(``eval_run.evaluate_folder``) with every test image changed by one of ``SHIFTS``:

- ``photometric``: gain 0.7 and 1.3, gamma 0.7 and 1.4, blur sigma 2 px, sensor noise x2,
  vignetting (corners 30 % darker);
- ``geometric``: 3 px right, 3 px down, 2 degrees either way (mirrored border);
- ``contrast``: every NG image's defect at 50, 25 and 10 % of its contrast (the 100 % row is
  the baseline), blended towards its defect-free counterpart (``robustness.counterpart``:
  the registered reference for seal_edge and six_view, the outlined region's surroundings
  for blue_film frames with masks, the most similar good image of the folder for
  pole_piece). OK images are left as they are, so OK false reject stays the baseline's.

Thresholds stay the model's. The figures per row are those of ``eval_run`` (``MAIN`` names
which ones a station is judged on). Recall per defect kind comes from the folder's ``kind``
column (``tools.kinds``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TextIO, TypedDict

import numpy as np

from linevision.synth.contract import read_labels
from linevision.tools import eval_run, kinds, robustness
from linevision.train.folder_data import read_image

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from linevision.types import Image

MAIN: Final[dict[str, tuple[str, ...]]] = {
    "pole_piece": ("accuracy", "macro_f1", "ng_recall", "ok_false_reject"),
    "seal_edge": ("ng_recall", "ok_false_reject", "auroc"),
    "six_view": ("ng_recall", "ok_false_reject", "auroc"),
    "blue_film": ("auroc", "flagged", "ng_recall", "ok_false_reject"),
}
"""The figures each station is judged on, in the order the tables show them."""
FIGURES: Final = ("accuracy", "macro_f1", "auroc", "ng_recall", "ok_false_reject", "flagged")
CONTRASTS: Final = (0.5, 0.25, 0.1)
POOL_LIMIT: Final = 200
"""At most this many good images are searched for a counterpart (pole_piece)."""


class Row(TypedDict):
    group: str
    name: str
    n: int
    accuracy: float
    macro_f1: float
    auroc: float | None
    ng_recall: float | None
    ok_false_reject: float | None
    flagged: float
    kind_recall: dict[str, float]
    """NG recall per defect kind (the folder's ``kind`` column, else the label)."""


@dataclass(frozen=True)
class Shift:
    group: str
    name: str
    change: Callable[[Image, eval_run.Seen], Image]


def _noise(image: Image, seen: eval_run.Seen) -> Image:
    return robustness.add_noise(image, 2.0, np.random.default_rng([7, seen.index]))


def _contrast(alpha: float, pool: Sequence[Image]) -> Callable[[Image, eval_run.Seen], Image]:
    def change(image: Image, seen: eval_run.Seen) -> Image:
        if not seen.ng:
            return image
        twin = robustness.counterpart(image, reference=seen.reference, mask=seen.mask, pool=pool)
        return robustness.blend(image, twin, alpha)

    return change


def shifts(pool: Sequence[Image] = ()) -> list[Shift]:
    """Every row's change of the test images; ``pool``: good images for counterparts."""
    r = robustness
    return [
        Shift("photometric", "gain 0.7", lambda x, _: r.gain(x, 0.7)),
        Shift("photometric", "gain 1.3", lambda x, _: r.gain(x, 1.3)),
        Shift("photometric", "gamma 0.7", lambda x, _: r.gamma(x, 0.7)),
        Shift("photometric", "gamma 1.4", lambda x, _: r.gamma(x, 1.4)),
        Shift("photometric", "blur sigma 2 px", lambda x, _: r.blur(x, 2.0)),
        Shift("photometric", "noise x2", _noise),
        Shift("photometric", "vignetting 30 %", lambda x, _: r.vignette(x, 0.3)),
        Shift("geometric", "shift 3 px right", lambda x, _: r.translate(x, 3.0, 0.0)),
        Shift("geometric", "shift 3 px down", lambda x, _: r.translate(x, 0.0, 3.0)),
        Shift("geometric", "rotate +2 deg", lambda x, _: r.rotate(x, 2.0)),
        Shift("geometric", "rotate -2 deg", lambda x, _: r.rotate(x, -2.0)),
        *(
            Shift("contrast", f"defect contrast {a * 100:.0f} %", _contrast(a, pool))
            for a in CONTRASTS
        ),
    ]


def row(
    group: str, name: str, evaluation: eval_run.Evaluation, sample_kinds: Sequence[str] = ()
) -> Row:
    r = evaluation.report
    tally = evaluation.tally
    flagged = float(np.mean(tally.flagged_ng)) if tally and tally.flagged_ng else 0.0
    by_kind: dict[str, float] = {}
    if tally is not None and len(sample_kinds) == len(tally.true_ng):
        table = kinds.per_kind(sample_kinds, tally.true_ng, tally.flagged_ng)
        by_kind = {k["kind"]: k["share"] for k in table if k["ng"]}
    return Row(
        group=group,
        name=name,
        n=r["n"],
        accuracy=r["accuracy"],
        macro_f1=r["macro_f1"],
        auroc=r["auroc"],
        ng_recall=r["ng_recall"],
        ok_false_reject=r["ok_false_reject"],
        flagged=flagged,
        kind_recall=by_kind,
    )


class Progress:
    """A line to ``stream`` every ``every`` images and at the end of each pass."""

    def __init__(self, every: int = 50, stream: TextIO | None = None) -> None:
        self.every = max(every, 1)
        self.stream = stream
        self.label = "eval"
        self._t0 = time.perf_counter()

    def start(self, label: str) -> Callable[[int, int], None]:
        self.label = label
        self._t0 = time.perf_counter()
        return self

    def __call__(self, done: int, total: int) -> None:
        if done % self.every and done != total:
            return
        stream = self.stream if self.stream is not None else sys.stderr
        seconds = time.perf_counter() - self._t0
        eta = seconds / done * (total - done)
        text = f"{self.label}: {done}/{total} images, {seconds:.1f} s, {eta:.0f} s left\n"
        stream.write(text)
        stream.flush()


def good_pool(data: Path, station: str) -> list[Image]:
    """Good images of the folder, the counterparts' candidates (pole_piece only)."""
    if station != "pole_piece":
        return []
    samples = [s for s in read_labels(data, station) if s.label == "Normal"]
    return [read_image(s.path) for s in samples[:POOL_LIMIT]]


def robustness_rows(
    station: str,
    data: Path,
    model_dir: Path,
    threads: int = 1,
    progress: Progress | None = None,
) -> list[Row]:
    """One row per shift of ``shifts``, each a full pass through the runtime path."""
    sample_kinds = kinds.read_kinds(data, station)
    rows: list[Row] = []
    for shift in shifts(good_pool(data, station)):
        run = eval_run.Run(shift.change, progress.start(shift.name) if progress else None)
        evaluation = eval_run.evaluate_folder(station, data, model_dir, threads, run)
        rows.append(row(shift.group, shift.name, evaluation, sample_kinds))
    return rows


def _figure(value: object) -> str:
    return f"{value:6.3f}" if isinstance(value, float) else "     -"


def weakest(r: Row) -> str:
    """The NG kind with the lowest recall in ``r``, as ``kind 0.123``; ``-`` without kinds."""
    if not r["kind_recall"]:
        return "-"
    kind = min(r["kind_recall"], key=lambda k: (r["kind_recall"][k], k))
    return f"{kind} {r['kind_recall'][kind]:.3f}"


def format_rows(station: str, rows: Sequence[Row]) -> str:
    """The rows (the baseline first) as a text table with the station's main figures."""
    keys = MAIN.get(station, FIGURES)
    lines = [f"{'robustness':<24}" + "".join(f"{k:>16}" for k in keys) + "  weakest NG kind"]
    for r in rows:
        values: dict[str, object] = dict(r)
        cells = "".join(f"{_figure(values.get(k)):>16}" for k in keys)
        lines.append(f"{r['name']:<24}{cells}  {weakest(r)}")
    return "\n".join(lines)
