"""``linevision eval --report DIR``: the HTML page, its pictures and the threshold line."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from linevision.cli import main
from linevision.synth import pole_piece
from linevision.tools import report_draw


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.scripts = 0
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag == "script":
            self.scripts += 1
        self._in_cell = tag in {"td", "th"}

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells.append(data.strip())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report_data")
    pole_piece.write_dataset(out, 6, seed=4321)
    return out


def _column_of(image: np.ndarray, colour: tuple[int, int, int]) -> list[int]:
    """Columns where at least 100 pixels have exactly ``colour`` (a vertical line)."""
    hits = np.all(image == np.array(colour, np.uint8), axis=2).sum(axis=0)
    return [int(x) for x in np.flatnonzero(hits >= 100)]


def test_report_writes_a_page_with_its_pictures_and_numbers(folder, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    args = ["eval", "--station", "pole_piece", "--data", str(folder), "--json"]
    assert main([*args, "--robustness", "--report", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    page_text = (out / "index.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(page_text)
    assert page.scripts == 0
    assert "http" not in page_text  # nothing fetched from a network
    assert "hist.png" in page.images
    for src in page.images:
        assert (out / src).is_file()
        assert cv2.imread(str(out / src)) is not None
    # the confusion matrix: every count is a cell, under the class names
    for name in pole_piece.CLASSES:
        assert name in page.cells
    flat = [str(n) for row in report["confusion"] for n in row]
    table = page_text.split("<h2>Confusion matrix</h2>", 1)[1].split("<h2>", 1)[0]
    assert re.findall(r"<td[^>]*>(\d+)</td>", table) == flat
    threshold = report["threshold"]
    assert f"threshold (NG score) {threshold:.4g}" in page_text
    for heading in ("Recall per defect kind", "Worst misses", "Worst false rejects", "Robustness"):
        assert heading in page_text
    assert "defect contrast 10 %" in page_text
    # the threshold line sits in the histogram where the threshold falls on its score axis
    hist = cv2.imread(str(out / "hist.png"))
    scores = [threshold]  # probabilities: the axis is 0..1 whatever the scores
    lo, hi = report_draw.score_range(scores, threshold)
    expected = report_draw.x_of(threshold, lo, hi)
    columns = _column_of(hist, report_draw.THRESHOLD_BGR)
    assert columns
    assert all(abs(x - expected) <= 1 for x in columns)


def test_report_shows_misses_as_thumbnails(folder, tmp_path, capsys) -> None:
    """A model's misses appear as images: at 10 % defect contrast every NG is passed."""
    from linevision.tools import eval_run, kinds, report, robustness_run  # noqa: PLC0415

    model = Path(__file__).resolve().parents[2] / "models" / "pole_piece"
    pool = robustness_run.good_pool(folder, "pole_piece")
    faded = next(s for s in robustness_run.shifts(pool) if s.name == "defect contrast 10 %")
    evaluation = eval_run.evaluate_folder(
        "pole_piece", folder, model, run=eval_run.Run(faded.change)
    )
    sample_kinds = kinds.read_kinds(folder, "pole_piece")
    tally = evaluation.tally
    assert tally is not None
    per_kind = kinds.per_kind(sample_kinds, tally.true_ng, tally.flagged_ng)
    page = report.write_report(
        tmp_path / "r",
        station="pole_piece",
        data=folder,
        evaluation=evaluation,
        kinds=sample_kinds,
        per_kind=per_kind,
    )
    text = page.read_text(encoding="utf-8")
    misses = sorted((tmp_path / "r" / "thumbs").glob("miss_*.png"))
    assert misses
    assert len(misses) <= report.WORST
    for thumb in misses:
        assert f'src="thumbs/{thumb.name}"' in text
        assert max(cv2.imread(str(thumb)).shape[:2]) <= 200
    assert "score 0." in text
    capsys.readouterr()


def test_histogram_without_threshold_has_no_threshold_line() -> None:
    """The check above would fail on a histogram drawn without the threshold."""
    rng = np.random.default_rng(0)
    ok, ng = rng.beta(1, 8, 200).tolist(), rng.beta(8, 1, 60).tolist()
    without = report_draw.histograms(ok, ng, None)
    assert _column_of(without, report_draw.THRESHOLD_BGR) == []
    with_line = report_draw.histograms(ok, ng, 0.3)
    columns = _column_of(with_line, report_draw.THRESHOLD_BGR)
    assert report_draw.x_of(0.3, 0.0, 1.0) in columns
    assert all(abs(x - report_draw.x_of(0.3, 0.0, 1.0)) <= 1 for x in columns)


def test_histogram_axis_follows_unbounded_scores() -> None:
    lo, hi = report_draw.score_range([2.0, 9.0], 12.0)
    assert lo < 2.0
    assert hi > 12.0
    image = report_draw.histograms([2.0, 3.0], [9.0], 12.0, "anomaly score")
    columns = _column_of(image, report_draw.THRESHOLD_BGR)
    assert columns
    assert all(abs(x - report_draw.x_of(12.0, lo, hi)) <= 1 for x in columns)
