"""Evaluation metrics as pure functions on label and score arrays (numpy only).

Class indices follow the model's class order; the confusion matrix has the true class in
rows and the predicted class in columns. For OK/NG, "positive" means NG: NG recall is the
share of NG samples flagged NG, OK false-reject the share of OK samples flagged NG.

>>> import numpy as np
>>> c = confusion_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
>>> c.tolist()
[[1, 1], [0, 2]]
>>> accuracy(c)
0.75
>>> auroc(np.array([False, False, True, True]), np.array([0.1, 0.4, 0.35, 0.8]))
0.75
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Sequence

IntArray = npt.NDArray[np.int64]


class ClassScores(TypedDict):
    precision: float
    recall: float
    f1: float
    support: int


class Latency(TypedDict):
    n: int
    p50: float
    p99: float
    mean: float
    max: float


class Report(TypedDict):
    """What ``linevision eval --json`` prints (plus the model's name and folder)."""

    n: int
    classes: list[str]
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion: list[list[int]]
    auroc: float | None
    ng_recall: float | None
    ok_false_reject: float | None
    latency_ms: Latency


def confusion_matrix(labels: npt.ArrayLike, predicted: npt.ArrayLike, num_classes: int) -> IntArray:
    """Counts of (true, predicted) pairs as a ``num_classes`` x ``num_classes`` matrix."""
    true = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(predicted, dtype=np.int64)
    if true.shape != pred.shape:
        msg = f"labels {true.shape} and predictions {pred.shape} differ in shape"
        raise ValueError(msg)
    out_of_range = (true < 0) | (true >= num_classes) | (pred < 0) | (pred >= num_classes)
    if out_of_range.any():
        msg = f"class indices must lie in [0, {num_classes})"
        raise ValueError(msg)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)
    return confusion


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def accuracy(confusion: IntArray) -> float:
    return _ratio(float(np.trace(confusion)), float(confusion.sum()))


def precision_recall_f1(confusion: IntArray) -> tuple[list[float], list[float], list[float]]:
    """Per-class precision, recall and F1; 0 where a class is never predicted or present."""
    precision: list[float] = []
    recall: list[float] = []
    f1: list[float] = []
    for i in range(confusion.shape[0]):
        tp = float(confusion[i, i])
        p = _ratio(tp, float(confusion[:, i].sum()))
        r = _ratio(tp, float(confusion[i, :].sum()))
        precision.append(p)
        recall.append(r)
        f1.append(_ratio(2.0 * p * r, p + r))
    return precision, recall, f1


def macro_f1(confusion: IntArray) -> float:
    """Unweighted mean of the per-class F1 over every class."""
    return float(np.mean(precision_recall_f1(confusion)[2]))


def per_class(confusion: IntArray, classes: Sequence[str]) -> dict[str, ClassScores]:
    precision, recall, f1 = precision_recall_f1(confusion)
    return {
        name: ClassScores(
            precision=precision[i],
            recall=recall[i],
            f1=f1[i],
            support=int(confusion[i, :].sum()),
        )
        for i, name in enumerate(classes)
    }


def auroc(positive: npt.ArrayLike, scores: npt.ArrayLike) -> float | None:
    """Area under the ROC curve (ties count a half); None without both classes present."""
    pos = np.asarray(positive, dtype=bool)
    values = np.asarray(scores, dtype=np.float64)
    if pos.shape != values.shape:
        msg = f"positive {pos.shape} and scores {values.shape} differ in shape"
        raise ValueError(msg)
    n_pos = int(pos.sum())
    n_neg = int(pos.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    mid_ranks = upper - (counts - 1) / 2.0
    rank_sum = float(mid_ranks[inverse][pos].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def ng_recall(true_ng: npt.ArrayLike, flagged_ng: npt.ArrayLike) -> float | None:
    """Share of NG samples flagged NG; None without NG samples."""
    truth = np.asarray(true_ng, dtype=bool)
    flagged = np.asarray(flagged_ng, dtype=bool)
    if not truth.any():
        return None
    return float(flagged[truth].mean())


def ok_false_reject(true_ng: npt.ArrayLike, flagged_ng: npt.ArrayLike) -> float | None:
    """Share of OK samples flagged NG; None without OK samples."""
    truth = np.asarray(true_ng, dtype=bool)
    flagged = np.asarray(flagged_ng, dtype=bool)
    if truth.all():
        return None
    return float(flagged[~truth].mean())


def latency_summary(milliseconds: Sequence[float]) -> Latency:
    """p50, p99, mean and max of per-image latencies in milliseconds."""
    ms = np.asarray(milliseconds, dtype=np.float64)
    if ms.size == 0:
        return Latency(n=0, p50=0.0, p99=0.0, mean=0.0, max=0.0)
    return Latency(
        n=int(ms.size),
        p50=float(np.percentile(ms, 50)),
        p99=float(np.percentile(ms, 99)),
        mean=float(ms.mean()),
        max=float(ms.max()),
    )


def report(  # noqa: PLR0913  (each argument is one array of the same evaluation)
    classes: Sequence[str],
    *,
    labels: npt.ArrayLike,
    predicted: npt.ArrayLike,
    true_ng: npt.ArrayLike,
    flagged_ng: npt.ArrayLike,
    ng_scores: npt.ArrayLike,
    latencies_ms: Sequence[float],
) -> Report:
    """Every figure ``linevision eval`` prints, keyed as in its ``--json`` output."""
    confusion = confusion_matrix(labels, predicted, len(classes))
    return Report(
        n=int(confusion.sum()),
        classes=list(classes),
        accuracy=accuracy(confusion),
        macro_f1=macro_f1(confusion),
        per_class=per_class(confusion, classes),
        confusion=confusion.tolist(),
        auroc=auroc(true_ng, ng_scores),
        ng_recall=ng_recall(true_ng, flagged_ng),
        ok_false_reject=ok_false_reject(true_ng, flagged_ng),
        latency_ms=latency_summary(latencies_ms),
    )
