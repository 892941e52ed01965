"""How the OK/NG threshold of the comparison stations is calibrated on validation margins."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from linevision.train._compare import (
    binary_metrics,
    calibrate_threshold,
)


def _margins(ng: list[float], ok: list[float]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([1] * len(ng) + [0] * len(ok))
    return labels, np.array(ng + ok, dtype=np.float64)


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def test_the_strict_interval_gives_its_midpoint() -> None:
    # 200 NG from 2 up, one low NG at -1 (recall 0.995 allows it), 200 OK at -6 and below
    labels, margins = _margins([-1.0] + [2.0 + i / 100 for i in range(199)], [-6.0] * 200)
    threshold, how = calibrate_threshold(labels, margins)
    assert how.startswith("midpoint")
    assert "0.995" in how
    assert _logit(threshold) == pytest.approx((-6.0 + 2.0) / 2)


def test_without_the_strict_interval_the_targets_interval_keeps_a_margin_both_ways() -> None:
    # two NG cells far down (recall 0.995 is out of reach without rejecting OK cells), the
    # OK cells well below every other NG cell: the threshold sits between the two sides
    ng = [-9.0, -8.0] + [3.0] * 198
    labels, margins = _margins(ng, [-7.0] * 200)
    threshold, how = calibrate_threshold(labels, margins)
    assert "recall 0.99 and false reject 0.02" in how
    assert _logit(threshold) == pytest.approx((-7.0 + 3.0) / 2)
    figures = binary_metrics(labels, margins, threshold)
    assert figures["ng_recall"] == 0.99
    assert figures["ok_false_reject"] == 0.0


def test_when_no_interval_exists_recall_wins() -> None:
    # NG and OK interleaved: keeping recall 0.99 rejects many OK cells, and says so
    ng = [i / 10 for i in range(-50, 150)]
    ok = [i / 10 + 0.05 for i in range(-150, 50)]
    labels, margins = _margins(ng, ok)
    threshold, how = calibrate_threshold(labels, margins)
    assert how.startswith("highest threshold keeping NG recall 0.99")
    assert _logit(threshold) == pytest.approx(-4.8, abs=0.01)  # just below the third-lowest NG
    figures = binary_metrics(labels, margins, threshold)
    assert figures["ng_recall"] == 0.99
    assert figures["ok_false_reject"] > 0.4


def test_one_class_alone_is_refused() -> None:
    labels, margins = _margins([1.0, 2.0], [])
    with pytest.raises(ValueError, match="both OK and NG"):
        calibrate_threshold(labels, margins)
