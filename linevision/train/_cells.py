"""Dataset folders of the reference-compare stations and the frozen stem's cached features.

A folder (one reference, one product design) is read with ``read_labels``; the images are
read when needed. The frozen pretrained stem's features of every view depend only on the
images, so they are computed once with onnxruntime and optionally kept in a cache folder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, overload

import numpy as np

from linevision.inference import residual as pixel_residual
from linevision.inference.align import AlignmentError, register
from linevision.inference.classifier import fit_input, normalise
from linevision.inference.manifest import InputSpec, Normalisation, ViewSpec
from linevision.log import get_logger
from linevision.synth.contract import read_labels, reference_paths
from linevision.train import _compare
from linevision.train.folder_data import (
    MIN_PER_CLASS,
    MIN_TRAIN_PER_CLASS,
    MIN_VAL_PER_CLASS,
    check_per_class,
    stratified_split,
)
from linevision.types import Image

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

IMAGE: Final = "image"

log = get_logger(__name__)


@dataclass(frozen=True)
class Station:
    name: str
    views: tuple[ViewSpec, ...]
    input_spec: InputSpec
    normalisation: Normalisation
    stride: int
    build: Callable[..., nn.Module]
    architecture: str
    dynamic_size: bool
    align: Literal["none", "affine"] = "none"
    residual: pixel_residual.Mode = "none"


class LazyViews(Sequence[tuple["Image", ...]]):
    """Each cell's view images, read from disk when asked for (cached folders never are)."""

    def __init__(self, paths: list[tuple[Path, ...]]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, index: int) -> tuple[Image, ...]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[Image, ...]]: ...
    def __getitem__(self, index: int | slice) -> tuple[Image, ...] | list[tuple[Image, ...]]:
        if isinstance(index, slice):
            return [self._read(p) for p in self.paths[index]]
        return self._read(self.paths[index])

    @staticmethod
    def _read(paths: tuple[Path, ...]) -> tuple[Image, ...]:
        return tuple(_compare.read_gray(p) for p in paths)


@dataclass(frozen=True)
class Cells:
    """One folder (one reference) worth of samples: per cell one image per view, labels 0/1."""

    folder: Path
    names: list[str]
    views: LazyViews
    labels: _compare.Labels
    reference: tuple[Image, ...]

    def subset(self, index: Sequence[int]) -> Cells:
        return Cells(
            self.folder,
            [self.names[i] for i in index],
            LazyViews([self.views.paths[i] for i in index]),
            self.labels[np.asarray(index, dtype=np.int64)],
            self.reference,
        )


def load_cells(folder: Path, station: str) -> Cells:
    samples = read_labels(folder, station)
    views = LazyViews([s.views or (s.path,) for s in samples])
    labels = np.asarray([int(s.label == "NG") for s in samples], dtype=np.int64)
    reference = tuple(_compare.read_gray(p) for p in reference_paths(folder, station))
    names = [str(s.path.relative_to(folder)) for s in samples]
    return Cells(folder, names, views, labels, reference)


VAL_FRACTION: Final = 0.2


def split_cells(train: list[Cells], seed: int) -> tuple[list[Cells], list[Cells]]:
    """(train, validation): ``VAL_FRACTION`` of the OK and of the NG cells over all folders.

    ``DataError`` when OK or NG has fewer than ``MIN_PER_CLASS`` cells in all: validation
    needs both (it calibrates the threshold) and training needs some of each.
    """
    labels = np.concatenate([c.labels for c in train])
    counts = {"OK": int((labels == 0).sum()), "NG": int((labels == 1).sum())}
    where = ", ".join(str(c.folder / "labels.csv") for c in train)
    why = (
        f"{MIN_VAL_PER_CLASS} held out to validate and {MIN_TRAIN_PER_CLASS} to train on, "
        "over all --data folders. Add cells of that class, or give --val folders"
    )
    check_per_class(counts, MIN_PER_CLASS, where, why)
    keep, held = stratified_split(labels, VAL_FRACTION, seed)
    bounds = np.cumsum([0, *(len(c.labels) for c in train)])
    split_train: list[Cells] = []
    split_val: list[Cells] = []
    for cells, low, high in zip(train, bounds[:-1], bounds[1:], strict=True):
        for index, out in ((keep, split_train), (held, split_val)):
            mine = index[(index >= low) & (index < high)] - low
            if len(mine):
                out.append(cells.subset(mine.tolist()))
    return split_train, split_val


def load_sets(
    folders: dict[str, tuple[Path, ...]], station: str, seed: int
) -> dict[str, list[Cells]]:
    """``train``, ``val`` and ``test`` folders; without ``val``, ``split_cells`` of train."""
    train = [load_cells(f, station) for f in folders["train"]]
    val = [load_cells(f, station) for f in folders["val"]]
    if not val:
        train, val = split_cells(train, seed)
    test = [load_cells(f, station) for f in folders["test"]]
    return {"train": train, "val": val, "test": test}


@dataclass
class Cached:
    """Stem features per view (N, C, h, w) float16, labels, references per folder, folder index.

    ``residuals``: per view (N, 2, h, w) float16, the pixel residual channels of each
    registered capture (empty when the station has none).
    """

    features: list[np.ndarray]
    labels: _compare.Labels
    references: list[np.ndarray]
    folder: np.ndarray
    residuals: list[np.ndarray]


def view_input(station: Station, view: ViewSpec) -> InputSpec:
    return station.input_spec.model_copy(update={"height": view.height, "width": view.width})


def _stem_features(
    station: Station, session: object, cells: Cells
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Stem features per view (N, C, h, w), the reference's (1, C, h, w), residuals; float16.

    With ``station.align`` each view is first registered onto the reference, as the runtime
    does; a view that cannot be (counted in the log) is used as captured. With
    ``station.residual`` each registered view's pixel residual channels come too.
    """
    run = getattr(session, "run")  # noqa: B009
    failures = 0

    def registered(
        pixels: np.ndarray, reference: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        nonlocal failures
        if reference is None:
            return pixels, None
        try:
            return register(pixels, reference)
        except AlignmentError:
            failures += 1
            return pixels, None

    def encode(
        images: Sequence[Image], spec: InputSpec, reference: Image | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        ref = None if reference is None else fit_input(reference, spec)
        pairs = [registered(fit_input(img, spec), ref) for img in images]
        pixels = [px for px, _ in pairs]
        x = [normalise(px, station.normalisation) for px in pixels]
        out = [
            np.asarray(run(None, {IMAGE: np.stack(x[i : i + 32])})[0], dtype=np.float16)
            for i in range(0, len(x), 32)
        ]
        features = np.concatenate(out)
        if ref is None or station.residual == "none":
            return features, np.zeros((len(x), 0, 1, 1), np.float16)
        envelope = pixel_residual.Envelope.of(ref)
        extra = [
            pixel_residual.channels(px, envelope, station.stride, seen, station.residual)
            for px, seen in pairs
        ]
        return features, np.stack(extra).astype(np.float16)

    specs = [view_input(station, view) for view in station.views]
    images = cells.views[:]
    aligned = station.align == "affine"
    encoded = [
        encode([c[v] for c in images], spec, cells.reference[v] if aligned else None)
        for v, spec in enumerate(specs)
    ]
    references = [encode([cells.reference[v]], spec)[0] for v, spec in enumerate(specs)]
    if failures:
        log.warning("align_failed", folder=str(cells.folder), views=failures)
    return [f for f, _ in encoded], references, [r for _, r in encoded]


def _cache_path(station: Station, cells: Cells, cache: Path) -> Path:
    """Stem features depend on the stem, the view sizes and the images, not on training."""
    digest = hashlib.sha256()
    stat = (cells.folder / "labels.csv").stat()
    key: list[object] = [
        "npz-v3",
        station.name,
        station.stride,
        str(cells.folder.resolve()),
        stat.st_size,
        stat.st_mtime_ns,
    ]
    key += [(v.height, v.width) for v in station.views]
    if station.align != "none":
        key.append(station.align)
    if station.residual != "none":
        key += [station.residual, pixel_residual.VERSION]
    digest.update(repr((key, cells.names)).encode())
    return cache / f"{station.name}-{digest.hexdigest()[:20]}.npz"


def cache_features(
    station: Station, session: object, sets: list[Cells], cache: Path | None = None
) -> Cached:
    """Stem features of every folder, read from ``cache`` when an earlier run stored them."""
    per_folder = []
    count = len(station.views)
    for cells in sets:
        path = _cache_path(station, cells, cache) if cache else None
        if path is not None and path.is_file():
            with np.load(path) as stored:
                arrays = [stored[f"arr_{i}"] for i in range(3 * count)]
        else:
            feats, refs, extra = _stem_features(station, session, cells)
            arrays = [*feats, *refs, *extra]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, *arrays)
        per_folder.append(arrays)

    def joined(offset: int) -> list[np.ndarray]:
        return [np.concatenate([a[offset + v] for a in per_folder]) for v in range(count)]

    labels = np.concatenate([s.labels for s in sets])
    folder = np.concatenate([np.full(len(s.labels), i) for i, s in enumerate(sets)])
    return Cached(joined(0), labels, joined(count), folder, joined(2 * count))
