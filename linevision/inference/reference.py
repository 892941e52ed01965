"""Reference-compare models (seal_edge, six_view): encode views, cache the reference, decide.

A ``reference_compare`` folder holds ``encoder.onnx`` (one view -> feature map) and
``head.onnx`` (every view's inspection and reference features -> (OK, NG) logits). The
reference images of a recipe change only with the recipe, so ``set_reference`` encodes them
once; each cell then costs one encoder run per view (as each view arrives) and one head run.

    model = ReferenceModel(Path("models/six_view"))
    model.set_reference(reference_views)                 # once per recipe
    features = [model.encode(img, view) for view, img in zip(model.view_names, views)]
    decision = model.decide(*features)                   # Decision(verdict="OK" | "NG", ...)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from linevision.inference import residual as pixel_residual
from linevision.inference.align import align
from linevision.inference.align import register as register_view
from linevision.inference.classifier import fit_input, normalise
from linevision.inference.manifest import Manifest, ModelFileError, ViewSpec, load_model_files
from linevision.inference.session import SessionOptions, open_session
from linevision.log import get_logger
from linevision.types import Decision, Image, ModelRef

if TYPE_CHECKING:
    from collections.abc import Sequence

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]

log = get_logger(__name__)


class NoReferenceError(RuntimeError):
    """``decide`` was called before ``set_reference``: there is nothing to compare with."""


def _names(session: Any, attr: str) -> set[str]:
    return {str(i.name) for i in getattr(session, attr)()}


def p_ng(logits: F32Array) -> F64Array:
    """P(NG) from (N, 2) logits ordered (OK, NG), in float64 so thresholds near 1 still work."""
    z = np.asarray(logits, dtype=np.float64)
    return np.asarray(1.0 / (1.0 + np.exp(z[:, 0] - z[:, 1])), dtype=np.float64)


class ReferenceModel:
    """One verified ``reference_compare`` model folder with its cached reference features."""

    def __init__(self, model_dir: Path, options: SessionOptions | None = None) -> None:
        t0 = time.perf_counter()
        options = options or SessionOptions()
        self.manifest: Manifest
        self.manifest, files = load_model_files(model_dir)
        self._encoder = open_session(files["encoder"], options)
        self._head = open_session(files["head"], options)
        self._check_io(files)
        self.views: dict[str, ViewSpec] = {v.name: v for v in self.manifest.views}
        self.view_names: tuple[str, ...] = tuple(self.views)
        self.threshold = self.manifest.threshold
        self.ref = ModelRef(
            name=self.manifest.name, version=self.manifest.version, sha256=self.manifest.sha256
        )
        self._reference: tuple[F32Array, ...] | None = None
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

    def _check_io(self, files: dict[str, Path]) -> None:
        """The graphs' input names must be the manifest's; its outputs must be among theirs."""
        m = self.manifest
        heads = {n for v in m.views for n in (v.inspection_input, v.reference_input)}
        checks: list[tuple[Path, set[str], set[str], bool]] = [
            (files["encoder"], _names(self._encoder, "get_inputs"), {m.input.name}, True),
            (
                files["encoder"],
                _names(self._encoder, "get_outputs"),
                {str(m.feature_output)},
                False,
            ),
            (files["head"], _names(self._head, "get_inputs"), heads, True),
            (files["head"], _names(self._head, "get_outputs"), {m.output}, False),
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
        x = np.stack([normalise(px, norm) for px in pixels])
        self.encoder_runs += 1
        out = self._encoder.run([self.manifest.feature_output], {self.manifest.input.name: x})
        features = np.asarray(out[0], dtype=np.float32)
        if register and self.manifest.residual != "none":
            extra = self.residual(pixels, spec.name, features.shape[2], seen)
            features = np.concatenate([features, extra], axis=1)
        return features

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
        self._reference = tuple(self.encode_batch([img], v, register=False) for v, img in pairs)
        self._reference_pixels = {
            v: fit_input(img, self.manifest.input.model_copy(update=self._size(v)))
            for v, img in pairs
        }
        if self.manifest.residual != "none":
            self._envelopes = {
                v: pixel_residual.Envelope.of(px) for v, px in self._reference_pixels.items()
            }
        log.info(
            "reference_set", model=self.ref.name, ms=round((time.perf_counter() - t0) * 1e3, 2)
        )

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
        """P(NG) per cell from each view's inspection features (N, C, h, w), in view order."""
        return p_ng(self.logits(*features))

    def decide(self, *features: F32Array) -> Decision:
        """OK / NG for one cell from each view's features: NG when P(NG) >= the threshold.

        ``score`` is P(NG); ``infer_ms`` is the head's time (encoders ran as views arrived).
        """
        t0 = time.perf_counter()
        score = float(self.scores(*features)[0])
        infer_ms = (time.perf_counter() - t0) * 1000.0
        if score >= self.threshold:
            return Decision("NG", "defect", "NG", score, model=self.ref, infer_ms=infer_ms)
        return Decision("OK", None, "OK", score, model=self.ref, infer_ms=infer_ms)
