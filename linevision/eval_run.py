"""``linevision eval``: score a model folder on a labelled dataset folder, as the daemon would.

Classifier stations (pole_piece) go through ``ModelSession`` with the manifest's
preprocessing (``inference.classifier.preprocess``), softmax and the station's decision
rule (``decide``: OK only for an OK label at or above the manifest threshold).
Reference-compare stations (seal_edge, six_view) go through ``ReferenceModel``: the
folder's reference images are encoded once, then every sample's views. Latency is per
image (per cell for six_view): preprocessing, inference and decision, after a warm-up.
The figures come from the pure functions of :mod:`linevision.evaluate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np

from linevision import evaluate
from linevision.inference.classifier import decide, preprocess, softmax
from linevision.inference.session import ModelSession, SessionOptions
from linevision.synth.contract import read_labels, reference_paths
from linevision.train.folder_data import read_image

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from linevision.types import Image

CLASSIFIER_STATIONS: Final = ("pole_piece",)
REFERENCE_STATIONS: Final = ("seal_edge", "six_view")
OK_NG: Final = ("OK", "NG")


class EvalError(Exception):
    """The model and the dataset do not fit together (classes, station kind)."""


@dataclass(frozen=True)
class Evaluation:
    report: evaluate.Report
    model: str
    model_dir: Path

    def as_json(self) -> dict[str, object]:
        return {**self.report, "model": self.model, "model_dir": str(self.model_dir)}


@dataclass
class Tally:
    """Per-sample outcomes, appended in dataset order."""

    labels: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    true_ng: list[bool] = field(default_factory=list)
    flagged_ng: list[bool] = field(default_factory=list)
    ng_scores: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def report(self, classes: tuple[str, ...]) -> evaluate.Report:
        return evaluate.report(
            classes,
            labels=np.asarray(self.labels, dtype=np.int64),
            predicted=np.asarray(self.predicted, dtype=np.int64),
            true_ng=np.asarray(self.true_ng, dtype=bool),
            flagged_ng=np.asarray(self.flagged_ng, dtype=bool),
            ng_scores=np.asarray(self.ng_scores, dtype=np.float64),
            latencies_ms=self.latencies_ms,
        )


def classify(session: ModelSession, samples: Iterable[tuple[Image, str]]) -> Tally:
    """Run every (image, label) through the station's path; labels must be model classes."""
    m = session.manifest
    index = {name: i for i, name in enumerate(m.classes)}
    ok_index = [index[c] for c in m.ok_labels if c in index]
    tally = Tally()
    for image, label in samples:
        if label not in index:
            msg = f"label {label!r} is not a class of model {m.name} {m.classes}"
            raise EvalError(msg)
        t0 = time.perf_counter()
        x = preprocess(image, m.input, m.normalisation)
        probs = softmax(session.run(x[None]))[0]
        decision = decide(probs, m.classes, m.ok_labels, m.threshold, session.ref)
        tally.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        tally.labels.append(index[label])
        tally.predicted.append(index[decision.label or m.classes[int(np.argmax(probs))]])
        tally.true_ng.append(label not in m.ok_labels)
        tally.flagged_ng.append(decision.verdict == "NG")
        tally.ng_scores.append(1.0 - float(probs[ok_index].sum()))
    return tally


def evaluate_classifier(station: str, data: Path, model_dir: Path, threads: int = 1) -> Evaluation:
    session = ModelSession(model_dir, SessionOptions(intra_op_threads=threads))
    if session.manifest.kind != "classifier":
        msg = f"{model_dir}: kind {session.manifest.kind!r}, {station} needs a classifier"
        raise EvalError(msg)
    session.warm_up()
    samples = read_labels(data, station)
    tally = classify(session, ((read_image(s.path), s.label) for s in samples))
    return Evaluation(tally.report(session.manifest.classes), session.manifest.name, model_dir)


def evaluate_reference(station: str, data: Path, model_dir: Path, threads: int = 1) -> Evaluation:
    from linevision.inference.reference import ReferenceModel  # noqa: PLC0415

    model = ReferenceModel(model_dir, SessionOptions(intra_op_threads=threads))
    model.set_reference([read_image(p) for p in reference_paths(data, station)])
    tally = Tally()
    for sample in read_labels(data, station):
        views = [read_image(p) for p in (sample.views or (sample.path,))]
        if len(views) != len(model.view_names):
            msg = (
                f"{sample.path}: {len(views)} views, model {model.ref.name} has {model.view_names}"
            )
            raise EvalError(msg)
        t0 = time.perf_counter()
        features = [model.encode(img, v) for v, img in zip(model.view_names, views, strict=True)]
        decision = model.decide(*features)
        tally.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        truth = OK_NG.index(sample.label)
        tally.labels.append(truth)
        tally.predicted.append(OK_NG.index(decision.verdict))
        tally.true_ng.append(truth == 1)
        tally.flagged_ng.append(decision.verdict == "NG")
        tally.ng_scores.append(float(decision.score or 0.0))
    return Evaluation(tally.report(OK_NG), model.ref.name, model_dir)


def evaluate_folder(station: str, data: Path, model_dir: Path, threads: int = 1) -> Evaluation:
    """The full report of ``linevision eval`` for one station."""
    if station in CLASSIFIER_STATIONS:
        return evaluate_classifier(station, data, model_dir, threads)
    if station in REFERENCE_STATIONS:
        return evaluate_reference(station, data, model_dir, threads)
    msg = f"evaluation of {station} is not available yet"
    raise EvalError(msg)


def _pct(value: float | None) -> str:
    return "     -  " if value is None else f"{value * 100:6.2f} %"


def format_text(evaluation: Evaluation) -> str:
    """The report as aligned text for a terminal."""
    r = evaluation.report
    classes = r["classes"]
    width = max(8, *(len(c) for c in classes))
    lines = [
        f"model {evaluation.model} ({evaluation.model_dir}), n = {r['n']}",
        f"accuracy        {_pct(r['accuracy'])}",
        f"macro F1        {_pct(r['macro_f1'])}",
        f"AUROC (NG)      {_pct(r['auroc'])}",
        f"NG recall       {_pct(r['ng_recall'])}",
        f"OK false-reject {_pct(r['ok_false_reject'])}",
        f"latency / image p50 {r['latency_ms']['p50']:.2f} ms, p99 {r['latency_ms']['p99']:.2f} ms",
        "",
        f"{'class':<{width}}  precision    recall        F1  support",
    ]
    for c in classes:
        s = r["per_class"][c]
        lines.append(
            f"{c:<{width}}  {_pct(s['precision'])}  {_pct(s['recall'])}  {_pct(s['f1'])}"
            f"  {s['support']:7d}"
        )
    lines += ["", "confusion (rows true, columns predicted)"]
    lines.append(" " * width + "".join(f"{c[:7]:>8}" for c in classes))
    lines += [
        f"{c:<{width}}" + "".join(f"{v:>8}" for v in row)
        for c, row in zip(classes, r["confusion"], strict=True)
    ]
    return "\n".join(lines)
