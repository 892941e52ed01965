"""``linevision eval``: score a model folder on a labelled dataset folder, as the daemon would.

Classifier stations (pole_piece) go through ``ModelSession`` with the manifest's
preprocessing (``inference.classifier.preprocess``), softmax and the station's decision
rule (``decide``: OK only for an OK label at or above the manifest threshold).
Reference-compare stations (seal_edge, six_view) go through ``ReferenceModel``: the
folder's reference images are encoded once, then every sample's views. blue_film goes
through ``FilmInspector.inspect_frame`` (screen, anomaly graph, decision) and, when the
model folder has ``segment.onnx``, ``FilmSegmenter`` on crops around the decision's defect
boxes; frames with masks add pixel IoU (see ``evaluate_film``). Latency is per image (per
cell for six_view, per frame for blue_film): preprocessing, inference and decision, after a
warm-up. The figures come from the pure functions of :mod:`linevision.tools.evaluate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from linevision.inference.align import AlignmentError
from linevision.inference.classifier import decide, preprocess, softmax
from linevision.inference.session import Backend, ModelSession, SessionOptions, check_runtime
from linevision.synth.contract import Sample, read_labels, reference_paths
from linevision.tools import evaluate
from linevision.train.folder_data import read_film, read_image
from linevision.types import Decision

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

    from linevision.inference.film.inspector import FilmInspector
    from linevision.types import Image

CLASSIFIER_STATIONS: Final = ("pole_piece",)
REFERENCE_STATIONS: Final = ("seal_edge", "six_view")
FILM_STATIONS: Final = ("blue_film",)
OK_NG: Final = ("OK", "NG")


class EvalError(Exception):
    """The model and the dataset do not fit together (classes, station kind)."""


@dataclass(frozen=True)
class Seen:
    """What a ``Variant`` may know of the image it changes (never the model's answer)."""

    index: int
    ng: bool
    reference: Image | None = None
    mask: npt.NDArray[np.uint8] | None = None


class Variant(Protocol):
    """A change of every test image before the runtime sees it (``tools.robustness``)."""

    def __call__(self, image: Image, seen: Seen, /) -> Image: ...


@dataclass(frozen=True)
class Run:
    """How one evaluation pass treats its images (an optional change, a progress callback)
    and which runtime scores them (``backend``, ``precision``: None for the graphs' own)."""

    variant: Variant | None = None
    progress: Callable[[int, int], None] | None = None
    backend: Backend = "onnxruntime"
    precision: str | None = None

    def options(self, threads: int) -> SessionOptions:
        return SessionOptions(threads, backend=self.backend, precision=self.precision)

    def apply(self, image: Image, seen: Seen) -> Image:
        return image if self.variant is None else self.variant(image, seen)


def _counted(
    items: list[Sample], progress: Callable[[int, int], None] | None
) -> Iterator[tuple[int, Sample]]:
    """``enumerate(items)``, calling ``progress(done, total)`` after each item."""
    for i, item in enumerate(items):
        yield i, item
        if progress is not None:
            progress(i + 1, len(items))


@dataclass(frozen=True)
class Evaluation:
    report: evaluate.Report
    model: str
    model_dir: Path
    extra: dict[str, object] = field(default_factory=dict)
    tally: Tally | None = None
    threshold: float | None = None
    backend: str = "onnxruntime"
    precision: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            **self.report,
            **self.extra,
            "model": self.model,
            "model_dir": str(self.model_dir),
            "backend": self.backend,
            "precision": self.precision,
        }


@dataclass
class Tally:
    """Per-sample outcomes, appended in dataset order."""

    labels: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)
    true_ng: list[bool] = field(default_factory=list)
    flagged_ng: list[bool] = field(default_factory=list)
    ng_scores: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

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
        decision = decide(probs, m.classes, m.ok_labels, session.threshold, session.ref)
        tally.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        tally.labels.append(index[label])
        tally.predicted.append(index[decision.label or m.classes[int(np.argmax(probs))]])
        tally.true_ng.append(label not in m.ok_labels)
        tally.flagged_ng.append(decision.verdict == "NG")
        tally.ng_scores.append(1.0 - float(probs[ok_index].sum()))
    return tally


def evaluate_classifier(
    station: str, data: Path, model_dir: Path, threads: int = 1, run: Run | None = None
) -> Evaluation:
    run = run or Run()
    session = ModelSession(model_dir, run.options(threads))
    m = session.manifest
    if m.kind != "classifier":
        msg = f"{model_dir}: kind {m.kind!r}, {station} needs a classifier"
        raise EvalError(msg)
    session.warm_up()
    samples = read_labels(data, station)
    images = (
        run.apply(read_image(s.path), Seen(i, s.label not in m.ok_labels))
        for i, s in _counted(samples, run.progress)
    )
    tally = classify(session, zip(images, (s.label for s in samples), strict=True))
    tally.paths = [s.path for s in samples]
    # NG score 1 - P(OK). With one OK class, a score below 0.5 puts it on top (OK); from 0.5 up
    # the top class decides. A manifest threshold above 0.5 is the line itself.
    threshold = 1.0 - max(session.threshold, 0.5)
    v = session.variant
    return Evaluation(
        tally.report(m.classes),
        m.name,
        model_dir,
        tally=tally,
        threshold=threshold,
        backend=v.backend,
        precision=v.precision,
    )


def evaluate_reference(
    station: str, data: Path, model_dir: Path, threads: int = 1, run: Run | None = None
) -> Evaluation:
    from linevision.inference.reference import (  # noqa: PLC0415
        ReferenceMismatchError,
        ReferenceModel,
    )

    run = run or Run()
    model = ReferenceModel(model_dir, run.options(threads))
    references = [read_image(p) for p in reference_paths(data, station)]
    try:
        model.set_reference(references)
    except ReferenceMismatchError as exc:
        raise EvalError(str(exc)) from exc
    tally = Tally()
    for i, sample in _counted(read_labels(data, station), run.progress):
        views = [
            run.apply(read_image(p), Seen(i, sample.label == "NG", ref))
            for p, ref in zip(sample.views or (sample.path,), references, strict=False)
        ]
        if len(views) != len(model.view_names):
            msg = (
                f"{sample.path}: {len(views)} views, model {model.ref.name} has {model.view_names}"
            )
            raise EvalError(msg)
        t0 = time.perf_counter()
        try:
            pairs = zip(model.view_names, views, strict=True)
            decision = model.decide(*(model.encode(img, v) for v, img in pairs))
        except AlignmentError as exc:  # the runtime's NG for a view it cannot register
            decision = Decision("NG", "bad_frame", str(exc)[:200], 1.0, model=model.ref)
        tally.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        truth = OK_NG.index(sample.label)
        tally.labels.append(truth)
        tally.predicted.append(OK_NG.index(decision.verdict))
        tally.true_ng.append(truth == 1)
        tally.flagged_ng.append(decision.verdict == "NG")
        tally.ng_scores.append(float(decision.score or 0.0))
        tally.paths.append(sample.views[0] if sample.views else sample.path)
    threshold = model.threshold
    v = model.variant
    return Evaluation(
        tally.report(OK_NG),
        model.ref.name,
        model_dir,
        tally=tally,
        threshold=threshold,
        backend=v.backend,
        precision=v.precision,
    )


@dataclass
class PixelTally:
    """Pixel counts of predicted against true defect masks over the frames with masks."""

    intersection: int = 0
    union: int = 0

    def add(self, predicted: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]) -> None:
        self.intersection += int((predicted & truth).sum())
        self.union += int((predicted | truth).sum())

    @property
    def iou(self) -> float | None:
        """Intersection over union of all pixels; None without any defect pixel on either side.

        >>> t = PixelTally()
        >>> t.add(np.array([True, True, False]), np.array([True, False, False]))
        >>> t.iou
        0.5
        """
        return self.intersection / self.union if self.union else None


def _film_inspector(
    cache: dict[tuple[int, int], FilmInspector],
    model_dir: Path,
    shape: tuple[int, int],
    options: SessionOptions,
) -> FilmInspector:
    from linevision.inference.film.inspector import FilmInspector  # noqa: PLC0415

    inspector = cache.get(shape)
    if inspector is None:
        threads = options.intra_op_threads
        inspector = FilmInspector(model_dir, shape[0], shape[1], threads=threads, options=options)
        inspector.warm_up()
        cache[shape] = inspector
    return inspector


def _map_mask(
    mask: npt.NDArray[np.uint8], stride: int, shape: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    """The anomaly map's mask (one cell per ``stride`` px) at frame size."""
    full = np.repeat(np.repeat(mask > 0, stride, axis=0), stride, axis=1)
    return np.asarray(full[: shape[0], : shape[1]], dtype=bool)


def evaluate_film(
    data: Path, model_dir: Path, threads: int = 1, run: Run | None = None
) -> Evaluation:
    """blue_film frames through ``FilmInspector.inspect_frame``; pixel IoU where masks exist.

    Frames whose sides are not multiples of the map stride (16 px) are padded by reflection
    (the station's camera delivers one fixed size). Gray frames are put on three channels.
    ``pixel_iou``: the segmentation network's masks (crops around the decision's defect
    boxes, pasted into a frame-size mask) against the true masks, over every frame with a
    mask; without the network (a model trained on good frames only) the inspector's own
    masks, the map's regions outlined by their pixels' deviation (``masks_from`` says
    which); ``pixel_iou_map``: the same for the anomaly map's cells above the threshold.
    Latency per frame covers the inspection and, when present, the segmentation.
    """
    from linevision.inference.film.segment import (  # noqa: PLC0415
        CROP,
        SEGMENT_ROLE,
        FilmSegmenter,
        frame_mask,
    )
    from linevision.inference.manifest import load_manifest  # noqa: PLC0415

    run = run or Run()
    manifest, _ = load_manifest(model_dir)
    if manifest.kind != "tile_anomaly" or manifest.tile_anomaly is None:
        msg = f"{model_dir}: kind {manifest.kind!r}, blue_film needs a tile_anomaly model"
        raise EvalError(msg)
    stride = manifest.tile_anomaly.map_stride
    segmenter = None
    if SEGMENT_ROLE in manifest.files:
        segmenter = FilmSegmenter(model_dir, threads=threads, options=run.options(threads))
        segmenter.mask(np.zeros((CROP, CROP, 3), dtype=np.uint8))
    inspectors: dict[tuple[int, int], FilmInspector] = {}
    tally, seg, coarse = Tally(), PixelTally(), PixelTally()
    mask_frames = 0
    for i, sample in _counted(read_labels(data, "blue_film"), run.progress):
        frame, truth = read_film(sample)
        frame = run.apply(frame, Seen(i, sample.label == "NG", mask=truth))
        height, width = frame.shape[:2]
        pad_y, pad_x = -height % stride, -width % stride
        if pad_y or pad_x:
            border = cv2.BORDER_REFLECT_101
            frame = np.asarray(cv2.copyMakeBorder(frame, 0, pad_y, 0, pad_x, border), np.uint8)
        inspector = _film_inspector(
            inspectors, model_dir, (frame.shape[0], frame.shape[1]), run.options(threads)
        )
        t0 = time.perf_counter()
        result = inspector.inspect_frame(frame)
        if segmenter is not None:
            predicted = frame_mask(segmenter, frame, result.decision.defects)
        else:
            predicted = np.zeros(frame.shape[:2], np.uint8)
            for y0, x0, m in result.segments:
                region = predicted[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]]
                np.maximum(region, m[: region.shape[0], : region.shape[1]], out=region)
        tally.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        decision = result.decision
        truth_index = OK_NG.index(sample.label)
        tally.labels.append(truth_index)
        tally.predicted.append(OK_NG.index(decision.verdict))
        tally.true_ng.append(truth_index == 1)
        tally.flagged_ng.append(decision.verdict == "NG")
        tally.ng_scores.append(float(decision.score or 0.0))
        tally.paths.append(sample.path)
        if truth is None:
            continue
        mask_frames += 1
        true_pixels = truth > 0
        coarse.add(_map_mask(result.mask, stride, (height, width)), true_pixels)
        seg.add(predicted[:height, :width] > 0, true_pixels)
    extra: dict[str, object] = {
        "mask_frames": mask_frames,
        "pixel_iou": seg.iou,
        "masks_from": "segmentation network"
        if segmenter is not None
        else "anomaly map outlined by the pixels' deviation",
        "pixel_iou_map": coarse.iou,
        "segmentation": segmenter is not None,
    }
    v = check_runtime(manifest, run.options(threads), model_dir)
    return Evaluation(
        tally.report(OK_NG),
        manifest.name,
        model_dir,
        extra,
        tally=tally,
        threshold=v.threshold,
        backend=v.backend,
        precision=v.precision,
    )


def evaluate_folder(
    station: str, data: Path, model_dir: Path, threads: int = 1, run: Run | None = None
) -> Evaluation:
    """The full report of ``linevision eval`` for one station.

    ``run`` may change every image before the runtime sees it and report progress.
    """
    if station in CLASSIFIER_STATIONS:
        return evaluate_classifier(station, data, model_dir, threads, run)
    if station in REFERENCE_STATIONS:
        return evaluate_reference(station, data, model_dir, threads, run)
    if station in FILM_STATIONS:
        return evaluate_film(data, model_dir, threads, run)
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
        (
            f"model {evaluation.model} ({evaluation.model_dir}), n = {r['n']}, "
            f"{evaluation.backend}/{evaluation.precision}"
        ),
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
    extra = evaluation.extra
    if "mask_frames" in extra:
        lines.append("")
        lines.append(f"frames with masks {extra['mask_frames']}")
        outlined = extra.get("masks_from") != "segmentation network"
        pixel_name = "outlined map" if outlined else "segmentation"
        for key, name in (("pixel_iou", pixel_name), ("pixel_iou_map", "anomaly map")):
            value = extra.get(key)
            shown = _pct(value) if isinstance(value, float) else "     -  "
            lines.append(f"pixel IoU, {name:<13}{shown}")
    return "\n".join(lines)
