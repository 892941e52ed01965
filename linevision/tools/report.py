"""``linevision eval --report DIR``: one static HTML page and its PNG pictures.

``DIR/index.html`` (no script, no network: it opens from a USB stick) shows the headline
figures, the confusion matrix, the OK and NG score histograms with the threshold
(``hist.png``), recall per defect kind, the worst misses (NG passed, lowest score first) and
the worst false rejects (OK rejected, highest score first) as thumbnails under
``DIR/thumbs/``, and the robustness rows when ``--robustness`` ran.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

from linevision.tools import report_draw
from linevision.tools.eval_run import CLASSIFIER_STATIONS
from linevision.tools.robustness_run import FIGURES, MAIN, weakest
from linevision.train.folder_data import read_image

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from linevision.tools.eval_run import Evaluation
    from linevision.tools.kinds import KindRecall
    from linevision.tools.robustness_run import Row
    from linevision.types import Image

WORST: Final = 8
NAMES: Final = {
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "auroc": "AUROC (NG)",
    "ng_recall": "NG recall",
    "ok_false_reject": "OK false reject",
    "flagged": "share flagged NG",
}
STYLE: Final = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 70em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #bbb; padding: 0.3em 0.7em; text-align: right; }
th { background: #eee; } td.name, th.name { text-align: left; }
td.diag { background: #d8efd0; } td.off { background: #f6d0cc; }
td.worse { background: #f6d0cc; }
.thumbs { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; border: 1px solid #ccc; padding: 0.4em; }
figcaption { font-size: 0.85em; max-width: 220px; word-break: break-all; }
.note { color: #555; font-size: 0.9em; }
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _fig(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


def _confusion(classes: Sequence[str], confusion: Sequence[Sequence[int]]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in classes)
    rows = []
    for i, (name, counts) in enumerate(zip(classes, confusion, strict=True)):
        cells = "".join(
            f'<td class="{"diag" if i == j else ("off" if n else "")}">{n}</td>'
            for j, n in enumerate(counts)
        )
        rows.append(f'<tr><th class="name">{_e(name)}</th>{cells}</tr>')
    return f'<table><tr><th class="name">true \\ predicted</th>{head}</tr>{"".join(rows)}</table>'


def _headline(station: str, evaluation: Evaluation) -> str:
    values: dict[str, object] = dict(evaluation.report)
    cells = "".join(
        f'<tr><td class="name">{_e(NAMES[k])}</td><td>{_fig(values.get(k))}</td></tr>'
        for k in MAIN.get(station, FIGURES)
        if k in values
    )
    return f"<table>{cells}</table>"


def _kinds(kinds: Sequence[KindRecall]) -> str:
    rows = "".join(
        f'<tr><td class="name">{_e(k["kind"])}</td><td>{k["n"]}</td><td>{k["flagged"]}</td>'
        f'<td>{k["share"]:.3f}</td><td class="name">'
        f"{'NG recall' if k['ng'] else 'OK false reject'}</td></tr>"
        for k in kinds
    )
    return (
        '<table><tr><th class="name">kind</th><th>samples</th><th>flagged NG</th>'
        f'<th>share</th><th class="name">what the share is</th></tr>{rows}</table>'
    )


def _robustness(station: str, rows: Sequence[Row]) -> str:
    keys = MAIN.get(station, FIGURES)
    base: dict[str, object] = dict(rows[0]) if rows else {}
    lines = []
    for row in rows:
        values: dict[str, object] = dict(row)
        cells = []
        for k in keys:
            value, ref = values.get(k), base.get(k)
            worse = (
                isinstance(value, float)
                and isinstance(ref, float)
                and (
                    value > ref + 0.02
                    if k in {"ok_false_reject", "flagged"}
                    else value < ref - 0.02
                )
            )
            cells.append(f'<td class="{"worse" if worse else ""}">{_fig(value)}</td>')
        lines.append(
            f'<tr><td class="name">{_e(row["group"])}</td><td class="name">{_e(row["name"])}</td>'
            f'{"".join(cells)}<td class="name">{_e(weakest(row))}</td></tr>'
        )
    head = "".join(f"<th>{_e(NAMES[k])}</th>" for k in keys)
    head += '<th class="name">weakest NG kind (recall)</th>'
    return (
        f'<table><tr><th class="name">group</th><th class="name">shift</th>{head}</tr>'
        f"{''.join(lines)}</table>"
        '<p class="note">Red: more than 0.02 worse than the baseline (first row). Thresholds are '
        "the model's; the contrast rows change NG images only.</p>"
    )


def _argmax_note(station: str) -> str:
    if station not in CLASSIFIER_STATIONS:
        return ""
    return (
        " The NG score is 1 - P(OK class). Below the line the classifier always passes;"
        " above it, it rejects when an NG class is its top answer."
    )


def _write_png(path: Path, image: Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        msg = f"could not write {path}"
        raise OSError(msg)


def _worst(out: Path, evaluation: Evaluation, kinds: Sequence[str], *, misses: bool) -> str:
    tally = evaluation.tally
    if tally is None:
        return "<p>-</p>"
    scores = np.asarray(tally.ng_scores, dtype=np.float64)
    truth, flagged = np.asarray(tally.true_ng, bool), np.asarray(tally.flagged_ng, bool)
    wrong = np.flatnonzero(truth & ~flagged) if misses else np.flatnonzero(~truth & flagged)
    order = wrong[np.argsort(scores[wrong] if misses else -scores[wrong], kind="stable")][:WORST]
    if order.size == 0:
        return "<p>none</p>"
    figures = []
    prefix = "miss" if misses else "reject"
    for rank, i in enumerate(order):
        path = tally.paths[i]
        name = f"thumbs/{prefix}_{rank:02d}.png"
        _write_png(out / name, report_draw.thumbnail(read_image(path)))
        predicted = evaluation.report["classes"][tally.predicted[i]]
        kind = kinds[i] if i < len(kinds) else ""
        caption = (
            f"{_e(path.parent.name)}/{_e(path.name)}<br>score {scores[i]:.4f}, "
            f"kind {_e(kind)}<br>predicted {_e(predicted)}"
        )
        image = f'<img src="{name}" alt="{_e(path.name)}">'
        figures.append(f"<figure>{image}<figcaption>{caption}</figcaption></figure>")
    return f'<div class="thumbs">{"".join(figures)}</div>'


def write_report(  # noqa: PLR0913  (everything the page shows)
    out: Path,
    *,
    station: str,
    data: Path,
    evaluation: Evaluation,
    kinds: Sequence[str],
    per_kind: Sequence[KindRecall],
    rows: Sequence[Row] = (),
) -> Path:
    """Write ``out/index.html`` and its pictures; return the page's path."""
    out.mkdir(parents=True, exist_ok=True)
    r = evaluation.report
    tally = evaluation.tally
    threshold = evaluation.threshold
    if tally is not None:
        scores = np.asarray(tally.ng_scores, dtype=np.float64)
        truth = np.asarray(tally.true_ng, dtype=bool)
        hist = report_draw.histograms(
            scores[~truth].tolist(), scores[truth].tolist(), threshold, "NG score"
        )
        _write_png(out / "hist.png", hist)
    shown = "-" if threshold is None else f"{threshold:.4g}"
    when = dt.datetime.now(tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<h1>{_e(station)}: model {_e(evaluation.model)} on {_e(data.name)}</h1>",
        (
            f'<p class="note">{r["n"]} samples from {_e(data)}; model folder '
            f"{_e(evaluation.model_dir)}; threshold (NG score) {shown}; written {when}.</p>"
        ),
        "<h2>Headline figures</h2>",
        _headline(station, evaluation),
        "<h2>Confusion matrix</h2>",
        '<p class="note">Rows: the true label; columns: the model\'s answer.</p>',
        _confusion(r["classes"], r["confusion"]),
        "<h2>Scores and threshold</h2>",
        (
            '<p class="note">The NG score of every sample; the orange line is the threshold '
            f"({shown}): a sample above it is rejected.{_argmax_note(station)}</p>"
        ),
        '<img src="hist.png" alt="OK and NG score histograms with the threshold">',
        "<h2>Recall per defect kind</h2>",
        _kinds(per_kind),
        "<h2>Worst misses (NG passed as OK, lowest score first)</h2>",
        _worst(out, evaluation, kinds, misses=True),
        "<h2>Worst false rejects (OK rejected, highest score first)</h2>",
        _worst(out, evaluation, kinds, misses=False),
    ]
    if rows:
        parts += ["<h2>Robustness</h2>", _robustness(station, rows)]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>linevision eval: {_e(station)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
