"""What the blue-film segmentation network learns from and is measured on: crops around defects.

Training data (folder contract, ``linevision.synth.contract``): around every connected
component of every NG frame's mask a ``REGION`` x ``REGION`` region centred on it, plus
``GOOD_REGIONS`` random regions of every OK frame; batches are ``TRAIN_CROP`` crops at random
offsets inside the regions (so a defect lands anywhere in the middle half), three quarters
around defects, random flips. The held-out figures are measured on ``EVAL_CROP`` crops placed
the same way (:func:`heldout_iou`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np
import numpy.typing as npt
import torch

from linevision.synth.contract import DataError, Sample
from linevision.train.folder_data import read_film

if TYPE_CHECKING:
    from collections.abc import Sequence

    from linevision.inference.film.segment import FilmSegmenter

REGION: Final = 192
TRAIN_CROP: Final = 128
EVAL_CROP: Final = 256
GOOD_REGIONS: Final = 2
DEFECT_SHARE: Final = 0.75

U8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True, eq=False)
class Regions:
    """(N, R, R, 3) BGR regions, their (N, R, R) 0/1 masks, and which hold a defect."""

    images: U8Array
    masks: U8Array
    defect: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.images)


def _window(cy: int, cx: int, shape: tuple[int, int], side: int) -> tuple[int, int, int, int]:
    y0 = min(max(cy - side // 2, 0), shape[0] - side)
    x0 = min(max(cx - side // 2, 0), shape[1] - side)
    return y0, y0 + side, x0, x0 + side


def collect_regions(
    samples: Sequence[Sample], seed: int, region: int = REGION, good: int = GOOD_REGIONS
) -> Regions:
    """Regions around every mask component of NG frames, and random regions of OK frames.

    NG frames without a mask are skipped (their defects are not outlined).
    """
    rng = np.random.default_rng(seed)
    images: list[U8Array] = []
    masks: list[U8Array] = []
    defect: list[bool] = []
    for sample in samples:
        if sample.label == "NG" and sample.mask is None:
            continue
        frame, mask = read_film(sample)
        shape = (frame.shape[0], frame.shape[1])
        if min(shape) < region:
            msg = f"{sample.path}: frame {shape} smaller than a {region} px region"
            raise DataError(msg)
        if mask is None:
            mask = np.zeros(shape, dtype=np.uint8)
        centres: list[tuple[int, int, bool]] = []
        count, _, _, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        centres += [(int(centroids[i][1]), int(centroids[i][0]), True) for i in range(1, count)]
        if sample.label == "OK":
            centres += [
                (int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1])), False)
                for _ in range(good)
            ]
        for cy, cx, is_defect in centres:
            y0, y1, x0, x1 = _window(cy, cx, shape, region)
            images.append(frame[y0:y1, x0:x1].copy())
            masks.append(mask[y0:y1, x0:x1].copy())
            defect.append(is_defect)
    if not any(defect):
        msg = "no NG frame with a mask: the segmentation network needs outlined defects"
        raise DataError(msg)
    return Regions(np.stack(images), np.stack(masks), np.asarray(defect, dtype=bool))


def sample_batch(
    regions: Regions, batch: int, crop: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random ``crop`` crops (``DEFECT_SHARE`` around defects), random flips."""
    with_defect = np.flatnonzero(regions.defect)
    good = np.flatnonzero(~regions.defect)
    n_defect = batch if len(good) == 0 else round(batch * DEFECT_SHARE)
    index = np.concatenate(
        [
            rng.choice(with_defect, n_defect),
            rng.choice(good, batch - n_defect) if batch > n_defect else np.empty(0, np.int64),
        ]
    )
    side = regions.images.shape[1]
    images = np.empty((batch, crop, crop, 3), dtype=np.uint8)
    masks = np.empty((batch, crop, crop), dtype=np.uint8)
    for k, i in enumerate(index):
        y, x = (int(v) for v in rng.integers(0, side - crop + 1, 2))
        image = regions.images[i, y : y + crop, x : x + crop]
        mask = regions.masks[i, y : y + crop, x : x + crop]
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        images[k], masks[k] = image, mask
    x_t = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()
    y_t = torch.from_numpy(masks[:, None].astype(np.float32))
    return x_t, y_t


@dataclass
class IoUCount:
    intersection: int = 0
    union: int = 0
    defects: int = 0
    defects_hit: int = 0
    good_crops: int = 0
    good_crops_marked: int = 0

    @property
    def iou(self) -> float | None:
        return self.intersection / self.union if self.union else None

    def as_json(self) -> dict[str, object]:
        return {
            "pixel_iou": None if self.iou is None else round(self.iou, 4),
            "defects": self.defects,
            "defects_hit": self.defects_hit,
            "good_crops": self.good_crops,
            "good_crops_marked": self.good_crops_marked,
        }


def heldout_iou(
    segmenter: FilmSegmenter, samples: Sequence[Sample], seed: int, crop: int = EVAL_CROP
) -> IoUCount:
    """Pixel IoU of ``crop`` crops centred on every mask component (union over crops per frame).

    Also: defects with at least one marked pixel, and OK-frame crops (two random per frame)
    with any marked pixel.
    """
    rng = np.random.default_rng(seed)
    count = IoUCount()
    for sample in samples:
        if sample.label == "NG" and sample.mask is None:
            continue
        frame, mask = read_film(sample)
        shape = (frame.shape[0], frame.shape[1])
        if mask is None:
            for _ in range(GOOD_REGIONS):
                cy, cx = int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))
                y0, y1, x0, x1 = _window(cy, cx, shape, crop)
                count.good_crops += 1
                count.good_crops_marked += int(segmenter.mask(frame[y0:y1, x0:x1]).any())
            continue
        n, labels, _, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        pred = np.zeros(shape, dtype=np.uint8)
        seen = np.zeros(shape, dtype=bool)
        windows = [
            _window(int(centroids[i][1]), int(centroids[i][0]), shape, crop) for i in range(1, n)
        ]
        if not windows:
            continue
        for (y0, y1, x0, x1), m in zip(
            windows,
            segmenter.masks([frame[y0:y1, x0:x1] for y0, y1, x0, x1 in windows]),
            strict=True,
        ):
            np.maximum(pred[y0:y1, x0:x1], m > 0, out=pred[y0:y1, x0:x1])
            seen[y0:y1, x0:x1] = True
        truth = mask > 0
        marked = (pred > 0) & seen
        count.intersection += int((truth & marked).sum())
        count.union += int((truth | marked).sum())
        count.defects += n - 1
        count.defects_hit += len(np.unique(labels[truth & marked]))
    return count
