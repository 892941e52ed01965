"""Image classifier: preprocessing from the manifest, softmax, and the OK/NG rule."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from linevision.inference.manifest import InputSpec, Normalisation
from linevision.types import Decision, Image, ModelRef, PreprocessError

_INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


def fit_input(image: Image, spec: InputSpec) -> npt.NDArray[Any]:
    """One frame in the model's colour order and size, still in its own pixel type."""
    if image.size == 0 or image.ndim not in (2, 3):
        msg = f"cannot preprocess an image of shape {image.shape}"
        raise PreprocessError(msg)
    img: npt.NDArray[Any] = image
    if spec.channels == 1 and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif spec.channels == 3 and img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if spec.channels == 3 and spec.color == "rgb":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if img.shape[0] != spec.height or img.shape[1] != spec.width:
        img = cv2.resize(img, (spec.width, spec.height), interpolation=_INTERP[spec.resize])
    return img


def normalise(img: npt.NDArray[Any], norm: Normalisation) -> npt.NDArray[np.float32]:
    """``fit_input``'s pixels -> a (channels, height, width) float32 array."""
    x = img.astype(np.float32) * np.float32(norm.scale)
    x = x[None, :, :] if x.ndim == 2 else np.ascontiguousarray(x.transpose(2, 0, 1))
    mean = np.asarray(norm.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(norm.std, dtype=np.float32).reshape(-1, 1, 1)
    return np.asarray((x - mean) / std, dtype=np.float32)


def preprocess(image: Image, spec: InputSpec, norm: Normalisation) -> npt.NDArray[np.float32]:
    """One frame -> a (channels, height, width) float32 array as the model was trained on."""
    return normalise(fit_input(image, spec), norm)


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float32)


def decide(
    probs: npt.NDArray[np.float32],
    classes: tuple[str, ...],
    ok_labels: tuple[str, ...],
    min_ok_score: float,
    model: ModelRef | None = None,
) -> Decision:
    """Top class -> verdict. OK only for an OK label with probability >= ``min_ok_score``.

    >>> import numpy as np
    >>> d = decide(np.array([0.9, 0.1], np.float32), ("Normal", "Long"), ("Normal",), 0.5)
    >>> (d.verdict, d.label, d.reason)
    ('OK', 'Normal', None)
    >>> decide(np.array([0.4, 0.6], np.float32), ("Normal", "Long"), ("Normal",), 0.5).reason
    'defect'
    """
    top = int(np.argmax(probs))
    label = classes[top]
    score = float(probs[top])
    ok = label in ok_labels and score >= min_ok_score
    if ok:
        return Decision(verdict="OK", reason=None, label=label, score=score, model=model)
    return Decision(verdict="NG", reason="defect", label=label, score=score, model=model)
