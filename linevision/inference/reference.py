"""Reference-compare models (seal_edge, six_view): encode views, cache the reference, decide.

A ``reference_compare`` folder holds ``encoder.onnx`` (one view -> feature map) and
``head.onnx`` (every view's inspection and reference features -> (OK, NG) logits). The
reference images of a recipe change only with the recipe, so ``set_reference`` encodes them
once; each cell then costs one encoder run per view (as each view arrives) and one head run.

    model = ReferenceModel(Path("models/six_view"))
    model.set_reference(reference_views)                 # once per recipe
    features = [model.encode(img, view) for view, img in zip(model.view_names, views)]
    decision = model.decide(*features)                   # Decision(verdict="OK" | "NG", ...)

An anomaly model (the manifest's ``anomaly``, learnt from one product's good cells by
``linevision.train.anomaly``) has the same two graphs and the same calls: its encoder is the
frozen pretrained stem, its head returns each view's normalised anomaly score, and the
largest of them against the manifest's threshold decides. It refuses reference views other
than the ones it learnt against (``ReferenceMismatchError``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from linevision.inference import calibration
from linevision.inference import residual as pixel_residual
from linevision.inference.align import AlignmentError, align
from linevision.inference.align import register as register_view
from linevision.inference.classifier import fit_input, normalise
from linevision.inference.manifest import (
    Calibration,
    Manifest,
    ModelFileError,
    ViewSpec,
    load_model_files,
)
from linevision.inference.session import Session, SessionOptions, check_runtime, open_session
from linevision.log import get_logger
from linevision.types import Decision, Image, ModelRef

if TYPE_CHECKING:
    from collections.abc import Sequence

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]

log = get_logger(__name__)


class NoReferenceError(RuntimeError):
    """``decide`` was called before ``set_reference``: there is nothing to compare with."""


class ReferenceMismatchError(ValueError):
    """Reference views other than the ones an anomaly model learnt its good cells against."""


def reference_digest(pixels: npt.NDArray[Any]) -> str:
    """sha256 of one reference view's pixels as the model sees them (its size, gray), with
    their shape, so a re-encoded copy of the same image matches and another image does not."""
    array = np.ascontiguousarray(pixels, dtype=np.uint8)
    digest = hashlib.sha256(repr(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def anomaly_decision_score(u: float, threshold: float) -> float:
    """An anomaly model's verdict score: 1 / (1 + exp(threshold - u)), 0.5 at the threshold.

    >>> anomaly_decision_score(4.0, 4.0), round(anomaly_decision_score(9.0, 4.0), 4)
    (0.5, 0.9933)
    """
    return float(1.0 / (1.0 + np.exp(min(threshold - u, 700.0))))


def margin(logits: F32Array) -> F64Array:
    """logit(NG) - logit(OK) per cell from (N, 2) logits ordered (OK, NG), in float64."""
    z = np.asarray(logits, dtype=np.float64)
    return np.asarray(z[:, 1] - z[:, 0], dtype=np.float64)


def p_ng(logits: F32Array) -> F64Array:
    """P(NG) from (N, 2) logits ordered (OK, NG), in float64 so thresholds near 1 still work."""
    z = np.asarray(logits, dtype=np.float64)
    return np.asarray(1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1])), dtype=np.float64)


class ReferenceModel:
    """One verified ``reference_compare`` model folder with its cached reference features."""

    def __init__(self, model_dir: Path, options: SessionOptions | None = None) -> None:
        t0 = time.perf_counter()
        options = options or SessionOptions()
        self.model_dir = model_dir
        self.manifest: Manifest
        self.manifest, files = load_model_files(model_dir)
        self.variant = check_runtime(self.manifest, options, model_dir)
        self._encoder: Session = open_session(files["encoder"], options)
        self._head: Session = open_session(files["head"], options)
        self._check_io(files)
        self.views: dict[str, ViewSpec] = {v.name: v for v in self.manifest.views}
        self.view_names: tuple[str, ...] = tuple(self.views)
        self.threshold = self.variant.threshold
        self.calibration = self.manifest.calibration
        self.anomaly = self.manifest.anomaly
        if self.anomaly is not None:
            self.threshold = 0.5  # the verdict score is 0.5 at the anomaly threshold
        self._typical: tuple[F32Array, ...] = ()
        self._columns: list[int] = []
        self._location = self._scale = np.zeros(0, np.float64)
        if self.calibration is not None:
            self._load_calibration(model_dir, self.calibration)
        self.ref = ModelRef(
            name=self.manifest.name, version=self.manifest.version, sha256=self.manifest.sha256
        )
        self._reference: tuple[F32Array, ...] | None = None
        self._perfect: tuple[F32Array, ...] | None = None
        self._perfect_lock = threading.Lock()
        self._reference_pixels: dict[str, npt.NDArray[Any]] = {}
        self._envelopes: dict[str, pixel_residual.Envelope] = {}
        self.encoder_runs = 0
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        log.info(
            "model_loaded",
            model=self.ref.name,
            version=self.ref.version,
            kind=self.manifest.kind,
            views=list(self.view_names),
            ms=round(self.load_ms, 1),
        )

    def _load_calibration(self, model_dir: Path, cal: Calibration) -> None:
        """The product's typical good view maps; ``decide`` then scores as calibrated."""
        with np.load(model_dir / cal.features) as data:
            self._typical = tuple(np.asarray(data[v], np.float32) for v in self.view_names)
        columns = {name: i for i, name in enumerate((calibration.CELL, *self.view_names))}
        self._columns = [columns[s.name] for s in cal.scores]
        self._location = np.array([s.location for s in cal.scores], np.float64)
        self._scale = np.array([s.scale for s in cal.scores], np.float64)
        self.threshold = 0.5  # the calibrated score is 0.5 at the product's threshold

    def _check_io(self, files: dict[str, Path]) -> None:
        """The graphs' input names must be the manifest's; its outputs must be among theirs."""
        m = self.manifest
        heads = {n for v in m.views for n in (v.inspection_input, v.reference_input)}
        checks: list[tuple[Path, set[str], set[str], bool]] = [
            (files["encoder"], set(self._encoder.input_names), {m.input.name}, True),
            (files["encoder"], set(self._encoder.output_names), {str(m.feature_output)}, False),
            (files["head"], set(self._head.input_names), heads, True),
            (files["head"], set(self._head.output_names), {m.output}, False),
        ]
        for path, actual, wanted, exact in checks:
            if (wanted != actual) if exact else not wanted <= actual:
                msg = f"{path}: manifest names {sorted(wanted)}, the graph has {sorted(actual)}"
                raise ModelFileError(msg)

    def _view(self, view: str | None) -> ViewSpec:
        if view is None:
            if len(self.views) != 1:
                msg = f"model {self.ref.name} has views {self.view_names}; name one"
                raise ValueError(msg)
            return self.manifest.views[0]
        spec = self.views.get(str(view))
        if spec is None:
            msg = f"model {self.ref.name} has no view {view!r}; views are {self.view_names}"
            raise ValueError(msg)
        return spec

    def registered(
        self, images: Sequence[Image], view: str | None = None, *, register: bool = True
    ) -> list[npt.NDArray[Any]]:
        """Images of one view in the model's size and colours, registered when it aligns.

        A model with ``align: affine`` registers each image onto the view's reference first
        (``register=False`` skips that, for the reference itself); ``AlignmentError`` when an
        image cannot be registered.
        """
        return self._registered(images, view, register=register, seen=False)[0]

    def registered_seen(
        self, images: Sequence[Image], view: str | None = None, *, register: bool = True
    ) -> tuple[list[npt.NDArray[Any]], list[npt.NDArray[np.uint8]] | None]:
        """``registered``, and per image where it was seen (``align.register``) when the
        model's residual uses it (None otherwise, or unaligned)."""
        return self._registered(
            images, view, register=register, seen=self.manifest.residual != "none"
        )

    def _registered(
        self, images: Sequence[Image], view: str | None, *, register: bool, seen: bool
    ) -> tuple[list[npt.NDArray[Any]], list[npt.NDArray[np.uint8]] | None]:
        spec = self._view(view)
        size = self.manifest.input.model_copy(update=self._size(spec.name))
        pixels = [fit_input(img, size) for img in images]
        if not (register and self.manifest.align == "affine"):
            return pixels, None
        reference = self._reference_pixels.get(spec.name)
        if reference is None:
            msg = f"model {self.ref.name}: set_reference first (captures are aligned to it)"
            raise NoReferenceError(msg)
        if not seen:
            return [align(px, reference) for px in pixels], None
        pairs = [register_view(px, reference) for px in pixels]
        return [p for p, _ in pairs], [m for _, m in pairs]

    def preprocess(
        self, images: Sequence[Image], view: str | None = None, *, register: bool = True
    ) -> F32Array:
        """Images of one view -> (N, channels, height, width) as the model was trained on."""
        norm = self.manifest.normalisation
        pixels = self.registered(images, view, register=register)
        return np.stack([normalise(px, norm) for px in pixels])

    def residual(
        self,
        pixels: Sequence[npt.NDArray[Any]],
        view: str,
        rows: int,
        seen: Sequence[npt.NDArray[np.uint8]] | None = None,
    ) -> F32Array:
        """(N, C, rows, cols): the registered captures' pixel residual channels of ``view``
        (C from the manifest's ``residual``: ``residual.CHANNELS``)."""
        envelope = self._envelopes.get(view)
        if envelope is None:
            msg = f"model {self.ref.name}: set_reference first (the residual needs it)"
            raise NoReferenceError(msg)
        stride = self.views[view].height // rows
        masks = list(seen) if seen is not None else [None] * len(pixels)
        return np.stack(
            [
                pixel_residual.channels(px, envelope, stride, m, self.manifest.residual)
                for px, m in zip(pixels, masks, strict=True)
            ]
        )

    def encode_batch(
        self, images: Sequence[Image], view: str | None = None, *, register: bool = True
    ) -> F32Array:
        """Feature maps (N, C, h, w) of several images of one view.

        With ``residual`` in the manifest, inspection maps (``register=True``) carry its
        residual channels after the encoder's.
        """
        spec = self._view(view)
        pixels, seen = self.registered_seen(images, spec.name, register=register)
        norm = self.manifest.normalisation
        x = np.stack(
            [normalise(px, norm) for px in self._photometric(pixels, spec.name, register=register)]
        )
        self.encoder_runs += 1
        out = self._encoder.run([str(self.manifest.feature_output)], {self.manifest.input.name: x})
        features = np.asarray(out[0], dtype=np.float32)
        if register and self.manifest.residual != "none":
            extra = self.residual(pixels, spec.name, features.shape[2], seen)
            features = np.concatenate([features, extra], axis=1)
        return features

    def _photometric(
        self, pixels: list[npt.NDArray[Any]], view: str, *, register: bool
    ) -> list[npt.NDArray[Any]]:
        """Registered captures on the reference's grey levels when the anomaly model says so
        (``AnomalySpec.photometric``); the reference itself and other models: unchanged."""
        if not register or self.anomaly is None or self.anomaly.photometric == "none":
            return pixels
        envelope = self._envelopes.get(view)
        if envelope is None:
            msg = f"model {self.ref.name}: set_reference first (captures are matched to it)"
            raise NoReferenceError(msg)
        return [pixel_residual.matched(px, envelope) for px in pixels]

    def encode(self, image: Image, view: str | None = None) -> F32Array:
        """The feature map (1, C, h, w) of one image of ``view`` (optional for one view)."""
        return self.encode_batch([image], view)

    def set_reference(self, images: Sequence[Image]) -> None:
        """Encode the recipe's reference images, one per view in ``view_names`` order, once."""
        if len(images) != len(self.view_names):
            msg = (
                f"model {self.ref.name} needs {len(self.view_names)} reference images "
                f"(views {self.view_names}), got {len(images)}"
            )
            raise ValueError(msg)
        t0 = time.perf_counter()
        pairs = list(zip(self.view_names, images, strict=True))
        pixels = {
            v: fit_input(img, self.manifest.input.model_copy(update=self._size(v)))
            for v, img in pairs
        }
        if self.anomaly is not None:
            self._check_reference(pixels)
        self._reference = tuple(self.encode_batch([img], v, register=False) for v, img in pairs)
        self._perfect = None
        self._reference_pixels = pixels
        photometric = self.anomaly is not None and self.anomaly.photometric != "none"
        if self.manifest.residual != "none" or photometric:
            self._envelopes = {
                v: pixel_residual.Envelope.of(px) for v, px in self._reference_pixels.items()
            }
        log.info(
            "reference_set", model=self.ref.name, ms=round((time.perf_counter() - t0) * 1e3, 2)
        )

    def _check_reference(self, pixels: dict[str, npt.NDArray[Any]]) -> None:
        """An anomaly model's statistics hold for the reference views it learnt against."""
        assert self.anomaly is not None
        wanted = dict(zip(self.view_names, self.anomaly.reference_digests, strict=True))
        differ = [v for v, px in pixels.items() if reference_digest(px) != wanted[v]]
        if differ:
            msg = (
                f"model {self.ref.name} {self.ref.version} is an anomaly model learnt from good "
                f"cells against other reference views (view {', '.join(differ)} differs): "
                "train it on this product's good cells with these reference views"
            )
            raise ReferenceMismatchError(msg)

    def warm_up(self, images: Sequence[Image]) -> float:
        """Run the reference views as one cell through every graph and shape a cell uses
        (encoder per view, registration, residual, head); returns the ms it took."""
        t0 = time.perf_counter()
        runs = self.encoder_runs  # ``encoder_runs`` counts the cells' runs, not the warm-up's
        pairs = list(zip(self.view_names, images, strict=True))
        try:
            features = [self.encode(img, v) for v, img in pairs]
        except AlignmentError as exc:  # a reference that does not register onto itself
            log.warning("warm_up_unregistered", model=self.ref.name, error=str(exc)[:200])
            features = [self.encode_batch([img], v, register=False) for v, img in pairs]
        self.decide(*features)
        # views of one cell are encoded on several pool threads at once: the sessions keep
        # a warmed request per shape for each (OpenVINO), not made on a cell's path
        name = self.manifest.input.name
        channels = self.manifest.input.channels
        self._encoder.prepare(
            [{name: (1, channels, v.height, v.width)} for v in self.manifest.views]
        )
        assert self._reference is not None
        head: dict[str, tuple[int, ...]] = {}
        for spec, insp, ref in zip(self.manifest.views, features, self._reference, strict=True):
            head[spec.inspection_input] = tuple(insp.shape)
            head[spec.reference_input] = tuple(ref.shape)
        self._head.prepare([head])
        self.encoder_runs = runs
        return (time.perf_counter() - t0) * 1000.0

    def _size(self, view: str) -> dict[str, int]:
        spec = self.views[view]
        return {"height": spec.height, "width": spec.width}

    @property
    def has_reference(self) -> bool:
        return self._reference is not None

    def logits(self, *features: F32Array) -> F32Array:
        """(N, 2) head logits (OK, NG) from each view's inspection features, in view order."""
        if self._reference is None:
            msg = f"model {self.ref.name}: set_reference was not called for this recipe"
            raise NoReferenceError(msg)
        if len(features) != len(self.view_names):
            msg = f"model {self.ref.name} needs features of {len(self.view_names)} views"
            raise ValueError(msg)
        feeds: dict[str, F32Array] = {}
        for spec, insp, ref in zip(self.manifest.views, features, self._reference, strict=True):
            feeds[spec.inspection_input] = insp
            feeds[spec.reference_input] = ref
        return np.asarray(self._head.run([self.manifest.output], feeds)[0], dtype=np.float32)

    def scores(self, *features: F32Array) -> F64Array:
        """P(NG) per cell from each view's inspection features (N, C, h, w), in view order;
        for an anomaly model, the verdict score (0.5 at its threshold)."""
        if self.anomaly is not None:
            t = self.anomaly.threshold
            return np.array([anomaly_decision_score(u, t) for u in self.anomaly_scores(*features)])
        return p_ng(self.logits(*features))

    def anomaly_scores(self, *features: F32Array) -> F64Array:
        """An anomaly model's score u per cell: the largest of its views' normalised scores."""
        if self.anomaly is None:
            msg = f"model {self.ref.name} {self.ref.version} is not an anomaly model"
            raise ValueError(msg)
        views = np.asarray(self.logits(*features), dtype=np.float64)
        return np.asarray(views.max(axis=1), dtype=np.float64)

    def view_margins(self, features: Sequence[F32Array], typical: Sequence[F32Array]) -> F64Array:
        """(1 + V,) margins of one cell: as captured, then each view among ``typical`` views.

        ``features``: per view the cell's (1, C, h, w) map; ``typical``: per view a good one
        (``calibration.view_batch``). One head run.
        """
        return margin(self.logits(*calibration.view_batch(features, typical)))

    def failed_view(self, features: Sequence[F32Array]) -> tuple[int, F64Array]:
        """Which view made a cell NG: per view, the head's margin with every other view
        replaced by a perfect capture (its reference view, encoded as an inspection map).

        One head run of 1 + V rows (a few ms for six views); for the archive, never on the
        hot path. Returns the index of the largest margin and the V margins. An anomaly
        model scores each view on its own: its margins are each view's score u less the
        threshold, from the one head run of the cell.
        """
        if self.anomaly is not None:
            views = np.asarray(self.logits(*features)[0], np.float64) - self.anomaly.threshold
            return int(np.argmax(views)), views
        with self._perfect_lock:
            if self._perfect is None:
                pixels = self._reference_pixels
                self._perfect = tuple(self.encode_batch([pixels[v]], v) for v in self.view_names)
            perfect = self._perfect
        margins = margin(self.logits(*calibration.view_batch(features, perfect)))[1:]
        return int(np.argmax(margins)), margins

    def hot_box(
        self, features: F32Array, shape: tuple[int, int]
    ) -> tuple[int, int, int, int] | None:
        """(x, y, w, h) in a capture of ``shape`` where its pixels differ most from the
        reference (the residual channels of its feature map); None without them."""
        channels = pixel_residual.CHANNELS[self.manifest.residual]
        if channels == 0:
            return None
        cells = np.abs(features[0, -channels:]).max(axis=0)
        return pixel_residual.hot_box(np.asarray(cells, np.float32), shape)

    def calibrated_score(self, *features: F32Array) -> float:
        """u of one cell (``calibration.calibrated``): >= the manifest's calibration
        ``threshold`` is NG. Needs a calibrated model."""
        cal = self.calibration
        if cal is None:
            msg = f"model {self.ref.name} {self.ref.version} has no calibration"
            raise ValueError(msg)
        m = self.view_margins(features, self._typical)[self._columns]
        return float(calibration.calibrated(m[None], self._location, self._scale)[0])

    def decide(self, *features: F32Array) -> Decision:
        """OK / NG for one cell from each view's features: NG when P(NG) >= the threshold.

        With a ``calibration`` in the manifest the product's own rule decides instead: NG
        when the calibrated score u reaches its ``threshold``; ``score`` is then
        1 / (1 + exp(threshold - u)), 0.5 at the threshold. An anomaly model (``anomaly``)
        decides the same way on its score u (``anomaly_scores``). Otherwise ``score`` is
        P(NG).
        ``infer_ms`` is the head's time (encoders ran as views arrived).
        """
        t0 = time.perf_counter()
        if self.anomaly is not None:
            u = float(self.anomaly_scores(*features)[0])
            ng = u >= self.anomaly.threshold
            score = anomaly_decision_score(u, self.anomaly.threshold)
        elif self.calibration is not None:
            u = self.calibrated_score(*features)
            ng = u >= self.calibration.threshold
            score = float(1.0 / (1.0 + np.exp(min(self.calibration.threshold - u, 700.0))))
        else:
            score = float(self.scores(*features)[0])
            ng = score >= self.threshold
        infer_ms = (time.perf_counter() - t0) * 1000.0
        if ng:
            return Decision("NG", "defect", "NG", score, model=self.ref, infer_ms=infer_ms)
        return Decision("OK", None, "OK", score, model=self.ref, infer_ms=infer_ms)
