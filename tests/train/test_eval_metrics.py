"""The pure metric functions of ``linevision.tools.evaluate`` on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from linevision.tools import evaluate
from tests.helpers import EVAL_KEYS

LABELS = np.array([0, 0, 0, 1, 1, 2])
PREDICTED = np.array([0, 0, 1, 1, 2, 2])


def test_confusion_matrix_rows_are_true_classes() -> None:
    confusion = evaluate.confusion_matrix(LABELS, PREDICTED, 3)
    assert confusion.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_confusion_matrix_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate.confusion_matrix(np.array([0, 1]), np.array([0]), 2)
    with pytest.raises(ValueError, match="class indices"):
        evaluate.confusion_matrix(np.array([0, 2]), np.array([0, 1]), 2)


def test_accuracy_precision_recall_f1_by_hand() -> None:
    confusion = evaluate.confusion_matrix(LABELS, PREDICTED, 3)
    assert evaluate.accuracy(confusion) == pytest.approx(4 / 6)
    precision, recall, f1 = evaluate.precision_recall_f1(confusion)
    assert precision == pytest.approx([1.0, 0.5, 0.5])
    assert recall == pytest.approx([2 / 3, 0.5, 1.0])
    assert f1 == pytest.approx([0.8, 0.5, 2 / 3])
    assert evaluate.macro_f1(confusion) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_a_class_never_present_nor_predicted_scores_zero() -> None:
    confusion = evaluate.confusion_matrix(np.array([0, 1]), np.array([0, 1]), 3)
    scores = evaluate.per_class(confusion, ("a", "b", "c"))
    assert scores["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert scores["a"]["f1"] == 1.0
    assert evaluate.macro_f1(confusion) == pytest.approx(2 / 3)


def test_auroc_counts_pairs_and_half_ties() -> None:
    positive = np.array([False, False, True, True])
    assert evaluate.auroc(positive, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert evaluate.auroc(positive, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert evaluate.auroc(positive, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert evaluate.auroc(np.array([True, False]), np.array([0.5, 0.5])) == 0.5
    tied = np.array([0.2, 0.5, 0.5, 0.9])
    assert evaluate.auroc(np.array([False, True, False, True]), tied) == pytest.approx(0.875)


def test_auroc_needs_both_classes() -> None:
    assert evaluate.auroc(np.array([True, True]), np.array([0.1, 0.2])) is None
    assert evaluate.auroc(np.array([False]), np.array([0.1])) is None


def test_ng_recall_and_ok_false_reject() -> None:
    true_ng = np.array([True, True, False, False, False])
    flagged = np.array([True, False, True, False, False])
    assert evaluate.ng_recall(true_ng, flagged) == 0.5
    assert evaluate.ok_false_reject(true_ng, flagged) == pytest.approx(1 / 3)
    assert evaluate.ng_recall(np.array([False]), np.array([True])) is None
    assert evaluate.ok_false_reject(np.array([True]), np.array([True])) is None


def test_latency_percentiles() -> None:
    summary = evaluate.latency_summary([1.0, 2.0, 3.0, 4.0, 100.0])
    assert summary["n"] == 5
    assert summary["p50"] == 3.0
    assert summary["p99"] == pytest.approx(4.0 + 0.96 * 96.0)
    assert summary["mean"] == 22.0
    assert summary["max"] == 100.0
    assert evaluate.latency_summary([])["n"] == 0


def test_report_has_every_key_of_eval_json() -> None:
    report = evaluate.report(
        ("Normal", "Short", "Long"),
        labels=LABELS,
        predicted=PREDICTED,
        true_ng=LABELS != 0,
        flagged_ng=PREDICTED != 0,
        ng_scores=np.array([0.1, 0.2, 0.7, 0.8, 0.9, 0.95]),
        latencies_ms=[1.0] * 6,
    )
    for key in EVAL_KEYS:
        assert key in report
    assert report["n"] == 6
    assert report["ng_recall"] == 1.0
    assert report["ok_false_reject"] == pytest.approx(1 / 3)
    assert report["auroc"] == 1.0
    assert report["per_class"]["Long"]["support"] == 1
