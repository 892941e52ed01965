"""Classifier images from a dataset folder (the contract of ``linevision.synth.contract``).

Images are decoded, turned gray and resized exactly as the runtime does it
(``linevision.inference.classifier.preprocess``: BGR -> gray, then ``INTER_AREA`` to the
model's size), and kept as uint8; normalisation happens per batch. Needs no torch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from linevision.synth.contract import DataError, Sample, read_labels

if TYPE_CHECKING:
    from collections.abc import Sequence

U8Images = npt.NDArray[np.uint8]
Labels = npt.NDArray[np.int64]

MIN_VAL_PER_CLASS: Final = 1
"""Every class is validated: at least this many of each are held out."""
MIN_TRAIN_PER_CLASS: Final = 4
"""And at least this many of each are left to learn from (a floor, not a good amount)."""
MIN_PER_CLASS: Final = MIN_VAL_PER_CLASS + MIN_TRAIN_PER_CLASS


@dataclass(frozen=True, eq=False)
class ImageSet:
    """(N, size, size) uint8 gray images, their class indices and where they came from."""

    images: U8Images
    labels: Labels
    classes: tuple[str, ...]
    folder: str
    labels_sha256: str

    def subset(self, index: npt.NDArray[np.int64]) -> ImageSet:
        return ImageSet(
            self.images[index], self.labels[index], self.classes, self.folder, self.labels_sha256
        )

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}

    def summary(self) -> dict[str, object]:
        return {
            "folder": self.folder,
            "labels_sha256": self.labels_sha256,
            "n": len(self.labels),
            "per_class": self.counts(),
        }


def read_image(path: Path) -> npt.NDArray[np.uint8]:
    """An 8-bit image as stored (gray or BGR), as a camera would deliver it."""
    image: npt.NDArray[Any] | None = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        msg = f"{path}: not a readable image"
        raise DataError(msg)
    if image.dtype != np.uint8:
        msg = f"{path}: expected an 8-bit image, got {image.dtype}"
        raise DataError(msg)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.asarray(image, dtype=np.uint8)


def to_gray(image: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.uint8]:
    """Gray and ``size`` x ``size``, with the runtime's conversions."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    if gray.shape != (size, size):
        gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
    return np.asarray(gray, dtype=np.uint8)


def recorded_path(path: Path) -> str:
    """How a manifest records a data folder: never by an absolute path of this machine.

    A relative path is kept as given (relative to where the command ran); an absolute one
    inside the working directory becomes relative to it; any other keeps its name only.

    >>> from pathlib import Path
    >>> recorded_path(Path("build/data/pp_train")), recorded_path(Path("/srv/sets/pp_val"))
    ('build/data/pp_train', 'pp_val')
    >>> recorded_path(Path.cwd() / "build" / "pp_test")
    'build/pp_test'
    """
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name


def load_folder(folder: Path, station: str, classes: Sequence[str], size: int) -> ImageSet:
    """Every sample of ``folder`` as gray ``size`` x ``size`` images with class indices."""
    samples = read_labels(folder, station)
    index = {name: i for i, name in enumerate(classes)}
    images = np.empty((len(samples), size, size), dtype=np.uint8)
    labels = np.empty(len(samples), dtype=np.int64)
    for i, sample in enumerate(samples):
        images[i] = to_gray(read_image(sample.path), size)
        labels[i] = index[sample.label]
    digest = hashlib.sha256((folder / "labels.csv").read_bytes()).hexdigest()
    return ImageSet(images, labels, tuple(classes), recorded_path(folder), digest)


def stratified_split(
    labels: Labels, fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Indices (kept, held out): ``fraction`` of every class held out, at least one each.

    A class keeps at least ``MIN_TRAIN_PER_CLASS`` members for training when it has more
    than that, and at least one (a class of one is not held out); ``check_per_class``
    first refuses folders with too few.

    >>> import numpy as np
    >>> keep, held = stratified_split(np.array([0] * 10 + [1] * 10), 0.2, seed=0)
    >>> len(keep), len(held), int(np.bincount(np.array([0] * 10 + [1] * 10)[held]).min())
    (16, 4, 2)
    """
    if not 0.0 < fraction < 1.0:
        msg = f"held-out fraction must lie in (0, 1), got {fraction}"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    held: list[npt.NDArray[np.int64]] = []
    kept: list[npt.NDArray[np.int64]] = []
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        keep_at_least = max(min(MIN_TRAIN_PER_CLASS, len(members) - 1), 1)
        n_held = min(max(round(len(members) * fraction), 1), len(members) - keep_at_least)
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def check_per_class(counts: dict[str, int], needed: int, where: str, why: str) -> None:
    """Raise ``DataError`` naming every class of ``counts`` with fewer than ``needed``."""
    short = [f"class {name!r} has {n}" for name, n in counts.items() if n < needed]
    if short:
        msg = (
            f"{where}: {'; '.join(short)} image(s); training needs at least {needed} "
            f"per class: {why}"
        )
        raise DataError(msg)


def split_per_class(data: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(train, validation): ``fraction`` of every class held out; ``DataError`` if too few.

    Every class must have ``MIN_PER_CLASS`` images: at least one to validate and
    ``MIN_TRAIN_PER_CLASS`` to train on.
    """
    why = (
        f"{MIN_VAL_PER_CLASS} held out to validate and {MIN_TRAIN_PER_CLASS} to train on. "
        "Add images of that class, or give a separate --val folder"
    )
    check_per_class(data.counts(), MIN_PER_CLASS, f"{data.folder}/labels.csv", why)
    keep, held = stratified_split(data.labels, fraction, seed)
    return data.subset(keep), data.subset(held)


def read_film(sample: Sample) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None]:
    """A blue-film frame as BGR (gray on three channels) and its 0/1 mask, or None.

    The mask is None when the row names none (OK frames, NG frames whose defects are not
    outlined); a BGR mask counts its gray value; a mask of another size is a ``DataError``.
    """
    frame = read_image(sample.path)
    if frame.ndim == 2:
        frame = np.asarray(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if sample.mask is None:
        return frame, None
    mask = read_image(sample.mask)
    if mask.ndim == 3:
        mask = np.asarray(cv2.cvtColor(mask, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    if mask.shape != frame.shape[:2]:
        msg = f"{sample.mask}: mask {mask.shape[::-1]} does not match frame {frame.shape[1::-1]}"
        raise DataError(msg)
    return frame, (mask > 0).astype(np.uint8)
