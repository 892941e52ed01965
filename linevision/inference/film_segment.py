"""Full-resolution defect masks on blue-film crops: the segmentation network of seed 003.

The first two stages (:mod:`linevision.inference.blue_film`) find defects as boxes on a map of
one cell per 16 frame pixels. ``FilmSegmenter`` runs the small U-Net of
``linevision.train.film_segment`` (``segment.onnx``, listed in the model folder's manifest
under ``files["segment"]`` with its digest in ``sha256s``) on full-resolution BGR crops around
those boxes and returns per-pixel masks (255 = defect, 0 = film).

The graph takes (N, 3, H, W) float32 BGR 0..255 and returns (N, 1, H, W) logits; H and W
must be multiples of ``SIZE_MULTIPLE`` (other sizes are padded by reflection here and the
mask cropped back). ``defect_windows`` and ``frame_mask`` place crops on a frame's boxes and
paste the masks back into one frame-size mask. onnxruntime and OpenCV only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import cv2
import numpy as np
import numpy.typing as npt

from linevision.inference.manifest import ModelFileError, load_manifest
from linevision.inference.session import SessionOptions, open_session
from linevision.types import ModelRef

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from linevision.types import Defect

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]
Window = tuple[int, int, int, int]

SEGMENT_ROLE: Final = "segment"
SEGMENT_FILE: Final = "segment.onnx"
INPUT_NAME: Final = "crop"
OUTPUT_NAME: Final = "defect_logit"
SIZE_MULTIPLE: Final = 16
CROP: Final = 256
MARGIN: Final = 32


def _padded(side: int) -> int:
    return -(-side // SIZE_MULTIPLE) * SIZE_MULTIPLE


def as_bgr(image: U8Image) -> U8Image:
    """BGR as stored, or a gray image on three channels."""
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    msg = f"expected an H x W gray or H x W x 3 BGR image, got shape {image.shape}"
    raise ValueError(msg)


class FilmSegmenter:
    """``segment.onnx`` of a blue-film model folder, sha256-checked, in one onnxruntime session."""

    def __init__(self, model_dir: Path, *, threads: int = 1) -> None:
        manifest, _ = load_manifest(model_dir)
        name = manifest.files.get(SEGMENT_ROLE)
        if name is None:
            msg = f"{model_dir}: the manifest lists no {SEGMENT_ROLE!r} file (no segment.onnx)"
            raise ModelFileError(msg)
        self.path = model_dir / name
        self.ref = ModelRef(manifest.name, manifest.version, manifest.sha256s[SEGMENT_ROLE])
        self._session = open_session(self.path, SessionOptions(intra_op_threads=threads))
        inputs = [i.name for i in self._session.get_inputs()]
        if inputs != [INPUT_NAME]:
            msg = f"{self.path}: inputs {inputs}, expected [{INPUT_NAME!r}]"
            raise ModelFileError(msg)

    def logits(self, crops: Sequence[U8Image]) -> F32Array:
        """(N, H, W) defect logits of crops of one size (any size; padded internally)."""
        if not crops:
            msg = "no crops"
            raise ValueError(msg)
        images = [as_bgr(c) for c in crops]
        height, width = images[0].shape[:2]
        if any(c.shape[:2] != (height, width) for c in images):
            msg = "crops of one batch must share their size"
            raise ValueError(msg)
        ph, pw = _padded(height), _padded(width)
        batch = np.empty((len(images), 3, ph, pw), dtype=np.float32)
        for i, image in enumerate(images):
            if (ph, pw) != (height, width):
                border = cv2.BORDER_REFLECT_101
                batch[i] = cv2.copyMakeBorder(
                    image, 0, ph - height, 0, pw - width, border
                ).transpose(2, 0, 1)
            else:
                batch[i] = image.transpose(2, 0, 1)
        out = self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        return np.asarray(out[:, 0, :height, :width], dtype=np.float32)

    def masks(self, crops: Sequence[U8Image]) -> list[U8Image]:
        """One uint8 mask (0/255) per crop, each the size of its crop; one run for the batch."""
        return [np.where(m > 0.0, 255, 0).astype(np.uint8) for m in self.logits(crops)]

    def mask(self, crop: U8Image) -> U8Image:
        """The uint8 mask (0/255, H x W) of one H x W x 3 BGR (or H x W gray) crop."""
        return self.masks([crop])[0]


def defect_window(defect: Defect, frame_shape: tuple[int, int], size: int = CROP) -> Window:
    """A crop (y0, y1, x0, x1) centred on ``defect``'s box, inside the frame.

    ``size`` x ``size``, or larger (a multiple of ``SIZE_MULTIPLE``) when the box with
    ``MARGIN`` px each side does not fit; no larger than the frame.

    >>> from linevision.types import Defect
    >>> defect_window(Defect("film_anomaly", 1.0, 10, 20, 16, 16), (1024, 2048))
    (0, 256, 0, 256)
    >>> defect_window(Defect("film_anomaly", 1.0, 1000, 500, 300, 40), (1024, 2048))
    (392, 648, 966, 1334)
    """
    height, width = frame_shape
    side_y = min(max(size, _padded(defect.h + 2 * MARGIN)), height)
    side_x = min(max(size, _padded(defect.w + 2 * MARGIN)), width)
    cy, cx = defect.y + defect.h // 2, defect.x + defect.w // 2
    y0 = min(max(cy - side_y // 2, 0), height - side_y)
    x0 = min(max(cx - side_x // 2, 0), width - side_x)
    return y0, y0 + side_y, x0, x0 + side_x


def frame_mask(
    segmenter: FilmSegmenter,
    frame: U8Image,
    defects: Sequence[Defect],
    size: int = CROP,
) -> U8Image:
    """A frame-size uint8 mask (0/255): the segmenter's masks on crops around ``defects``.

    Crops of the same size run as one batch; where crops overlap, a pixel is a defect when
    any crop says so. Pixels outside every crop are 0.
    """
    height, width = frame.shape[:2]
    out = np.zeros((height, width), dtype=np.uint8)
    windows = [defect_window(d, (height, width), size) for d in defects]
    for (y0, y1, x0, x1), m in zip(windows, crop_masks(segmenter, frame, windows), strict=True):
        np.maximum(out[y0:y1, x0:x1], m, out=out[y0:y1, x0:x1])
    return out


def crop_masks(
    segmenter: FilmSegmenter, image: U8Image, windows: Sequence[Window]
) -> list[U8Image]:
    """The masks of ``image``'s crops at ``windows`` (y0, y1, x0, x1), in their order; crops
    of the same size run as one batch."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for n, (y0, y1, x0, x1) in enumerate(windows):
        by_size.setdefault((y1 - y0, x1 - x0), []).append(n)
    masks: dict[int, U8Image] = {}
    for members in by_size.values():
        crops = [
            image[windows[n][0] : windows[n][1], windows[n][2] : windows[n][3]] for n in members
        ]
        masks.update(zip(members, segmenter.masks(crops), strict=True))
    return [masks[n] for n in range(len(windows))]
