"""Full-resolution defect masks on blue-film crops: the segmentation network of seed 003.

The first two stages (:mod:`linevision.inference.film.inspector`) find defects as boxes on a map
of one cell per 16 frame pixels. ``FilmSegmenter`` runs the small U-Net of
``linevision.train.film_segment`` (``segment.onnx``, listed in the model folder's manifest
under ``files["segment"]`` with its digest in ``sha256s``) on full-resolution BGR crops around
those boxes and returns per-pixel masks (255 = defect, 0 = film).

The graph takes (N, 3, H, W) float32 BGR 0..255 and returns (N, 1, H, W) logits; H and W
must be multiples of ``SIZE_MULTIPLE`` (other sizes are padded by reflection here and the
mask cropped back). ``defect_windows`` and ``frame_mask`` place crops on a frame's boxes and
paste the masks back into one frame-size mask; ``FrameMasks`` is the inspector's third stage,
masks around the hot regions of each window it scores. onnxruntime and OpenCV only.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np
import numpy.typing as npt

from linevision.inference.film.geometry import DEFECT_KIND, segment_box
from linevision.inference.manifest import ModelFileError, load_manifest
from linevision.inference.session import SessionOptions, check_runtime, open_session
from linevision.types import Crop, Defect, ModelRef

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from linevision.inference.film.geometry import Window as MapWindow
    from linevision.inference.manifest import TileAnomalySpec

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
SEGMENT_MIN_PX: Final = 6
"""Pixels the segmentation network must mark for a screen-only region to be a defect (the
smallest defect of the contract, 3 px across, covers about 7)."""
CONTEXT: Final = 256
"""Side of the full-resolution crop kept around each mask for the archive (at most
``CONTEXT_MAX``): the operator sees the defect with some film around it."""
CONTEXT_MAX: Final = 512
MAX_KEPT: Final = 8
"""Crops kept per frame; a frame with more masks keeps the first ones."""
TILE: Final = 1024
"""Side of the full-resolution tiles kept around a frame's first defects for a dataset (the
tile the anomaly model takes; a blue-film dataset's frames are at least this on each side)."""
TILES_KEPT: Final = 2
"""Tiles kept per NG frame: a 1024 x 1024 BGR tile is 3 MB to copy (about 2 ms) on the
frame's path, 1.9 MB as PNG in the archive."""
REFINE_MEDIAN: Final = 41
"""Side (frame pixels) of the median that stands for good film around a hot region when no
network masks it (a defect up to about 20 px across leaves the median as it was); it is taken
at half resolution, 21 px there, as the film's background is smooth."""
REFINE_HALF: Final = 0.5
"""A pixel is defect where its deviation reaches this share of the region's peak..."""
REFINE_FLOOR: Final = 4.0
"""...and this many noise sigmas (the crop's own, 1.4826 x its median absolute deviation)."""
SEGMENT_CROP: Final = 64
"""Smallest side of the full-resolution crop the network sees around a defect the inspector
found (the defect's box with 32 px each side when that is larger). 1.1 ms a crop, where 128 px
took 4.4 ms for the same pixel IoU on held-out frames."""


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

    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int = 1,
        graph_optimization: str = "all",
        options: SessionOptions | None = None,
    ) -> None:
        manifest, _ = load_manifest(model_dir)
        name = manifest.files.get(SEGMENT_ROLE)
        if name is None:
            msg = f"{model_dir}: the manifest lists no {SEGMENT_ROLE!r} file (no segment.onnx)"
            raise ModelFileError(msg)
        self.path = model_dir / name
        self.ref = ModelRef(manifest.name, manifest.version, manifest.sha256s[SEGMENT_ROLE])
        base = options or SessionOptions()
        options = SessionOptions(threads, graph_optimization, base.backend, base.precision)
        check_runtime(manifest, options, model_dir)
        self._session = open_session(self.path, options)
        inputs = self._session.input_names
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
        """One uint8 mask (0/255) per crop, each the size of its crop; one run for the batch
        (OpenVINO: one run per crop, so that the shapes it compiles for stay the warmed ones)."""
        if self._session.backend == "openvino" and len(crops) > 1:
            return [m for c in crops for m in self.masks([c])]
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


def cut_tiles(
    frame: U8Image,
    masks: Sequence[tuple[int, int, U8Image]],
    side: int = TILE,
    limit: int = TILES_KEPT,
) -> tuple[Crop, ...]:
    """Full-resolution ``side`` x ``side`` tiles around the first masks of a whole frame, each
    with every mask that falls in it painted on its own mask (0/255); a mask inside a tile
    already cut gets none of its own. None when the frame is smaller than a tile.

    >>> frame = np.zeros((2048, 1024, 3), np.uint8)
    >>> mask = np.full((8, 8), 255, np.uint8)
    >>> tiles = cut_tiles(frame, [(1500, 100, mask), (1510, 120, mask), (10, 10, mask)])
    >>> [(t.y, t.x, t.pixels.shape, int(t.mask.sum() // 255)) for t in tiles]
    [(992, 0, (1024, 1024, 3), 128), (0, 0, (1024, 1024, 3), 64)]
    """
    height, width = frame.shape[:2]
    if height < side or width < side:
        return ()
    tiles: list[Crop] = []
    for y0, x0, m in masks:
        if len(tiles) >= limit:
            break
        cy, cx = y0 + m.shape[0] // 2, x0 + m.shape[1] // 2
        if any(t.y <= cy < t.y + side and t.x <= cx < t.x + side for t in tiles):
            continue
        ty = min(max(cy - side // 2, 0), height - side)
        tx = min(max(cx - side // 2, 0), width - side)
        full = np.zeros((side, side), np.uint8)
        for my, mx, mm in masks:
            a0, a1 = max(my, ty), min(my + mm.shape[0], ty + side)
            b0, b1 = max(mx, tx), min(mx + mm.shape[1], tx + side)
            if a0 < a1 and b0 < b1:
                part = full[a0 - ty : a1 - ty, b0 - tx : b1 - tx]
                np.maximum(part, mm[a0 - my : a1 - my, b0 - mx : b1 - mx], out=part)
        tiles.append(Crop(tx, ty, frame[ty : ty + side, tx : tx + side].copy(), full))
    return tuple(tiles)


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


def deviation_mask(crop: U8Image, hot: npt.NDArray[np.bool_]) -> U8Image:
    """Pixel mask (0/255) of a hot region without a network: the pixels of ``hot`` whose
    largest deviation over the channels from a ``REFINE_MEDIAN`` median of the crop reaches
    half of the region's peak and ``REFINE_FLOOR`` sigmas of the crop's noise.

    Any change of appearance counts (darker, lighter, another hue), and the half-peak rule
    follows the defect's own outline whatever its contrast.

    >>> film = np.full((96, 96, 3), 120, np.uint8)
    >>> film[40:46, 50:58] = 70  # a dark spot of the film's own hue
    >>> hot = np.zeros((96, 96), bool); hot[32:64, 32:80] = True
    >>> m = deviation_mask(film, hot)
    >>> int(m.sum() // 255), bool(m[41:45, 51:57].all()), int(m[:, :48].sum())  # 48 px spot
    (44, True, 0)
    """
    three = as_bgr(crop)
    height, width = three.shape[:2]
    # the background is smooth: its median at half resolution, brought back up
    half = cv2.resize(three, ((width + 1) // 2, (height + 1) // 2), interpolation=cv2.INTER_AREA)
    side = min((REFINE_MEDIAN // 2) | 1, (min(half.shape[:2]) - 1) | 1)
    background = cv2.medianBlur(half, side) if side >= 3 else half
    background = cv2.resize(background, (width, height), interpolation=cv2.INTER_LINEAR)
    diff = cv2.absdiff(three, background)
    sample = diff[::2, ::2].reshape(-1, 3)
    sigma = 1.4826 * np.median(sample, axis=0).astype(np.float32) + 0.5
    planes = cv2.split(diff)  # contiguous planes: far faster than a max over the last axis
    largest = planes[0] * np.float32(1.0 / sigma[0])
    for c in (1, 2):
        np.maximum(largest, planes[c] * np.float32(1.0 / sigma[c]), out=largest)
    deviation = cv2.blur(largest, (3, 3))
    inside = deviation[hot]
    if inside.size == 0:
        return np.zeros(crop.shape[:2], np.uint8)
    level = max(REFINE_HALF * float(inside.max()), REFINE_FLOOR)
    return np.asarray((deviation >= level) & hot, np.uint8) * 255


class FrameMasks:
    """The inspector's third stage over one frame: full-resolution masks (seed 003's network)
    around each scored window's hot regions, and the screen-only defects they confirm.

    A region is a connected set of kept cells where the anomaly map is above its
    threshold or the screen flagged. Regions above the threshold are defects and get
    their mask. A screen-only region (too small for the downscaled anomaly graph to
    lift above the threshold) is a defect when the network marks ``SEGMENT_MIN_PX``
    pixels in it: seed 003's two stages, screen then segmentation. Without a segmenter
    (a model folder with no ``segment.onnx``, as ``linevision train`` writes from good frames
    alone) the regions above the threshold are outlined by ``deviation_mask`` and
    screen-only regions stay unconfirmed.
    """

    def __init__(self, segmenter: FilmSegmenter | None, spec: TileAnomalySpec) -> None:
        self.segmenter = segmenter
        self.spec = spec
        self.masks: list[tuple[int, int, U8Image]] = []
        """(y0, x0, mask 0/255) per crop, in frame pixels."""
        self.defects: list[Defect] = []
        """Screen-only regions the network confirmed (``SEGMENT_KIND``)."""
        self.crops: list[Crop] = []
        """Full-resolution pixels around the first ``MAX_KEPT`` masks, with the mask."""
        self.seconds = 0.0

    def reset(self) -> None:
        """Start a new frame."""
        self.masks = []
        self.defects = []
        self.crops = []
        self.seconds = 0.0

    def _keep(self, frame: U8Image, lines: int, window: Window, mask: U8Image) -> None:
        """Copy the pixels around a mask while they are in the buffer (a 256 px crop is
        about 200 kB; the network's run on the mask's crop costs far more)."""
        if len(self.crops) >= MAX_KEPT:
            return
        y0, y1, x0, x1 = window
        box = Defect(DEFECT_KIND, 0.0, x0, y0, x1 - x0, y1 - y0)
        cy0, cy1, cx0, cx1 = defect_window(box, (lines, frame.shape[1]), CONTEXT)
        if cy1 - cy0 > CONTEXT_MAX:
            cy0 = max(min((y0 + y1) // 2 - CONTEXT_MAX // 2, lines - CONTEXT_MAX), 0)
            cy1 = cy0 + CONTEXT_MAX
        if cx1 - cx0 > CONTEXT_MAX:
            cx0 = max(min((x0 + x1) // 2 - CONTEXT_MAX // 2, frame.shape[1] - CONTEXT_MAX), 0)
            cx1 = cx0 + CONTEXT_MAX
        full = np.zeros((cy1 - cy0, cx1 - cx0), np.uint8)
        ty0, ty1, tx0, tx1 = max(y0, cy0), min(y1, cy1), max(x0, cx0), min(x1, cx1)
        full[ty0 - cy0 : ty1 - cy0, tx0 - cx0 : tx1 - cx0] = mask[
            ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0
        ]
        self.crops.append(Crop(cx0, cy0, frame[cy0:cy1, cx0:cx1].copy(), full))

    def add(self, frame: U8Image, lines: int, w: MapWindow, kept: F32Array, cells: U8Image) -> None:
        """Segment the hot regions of window ``w`` of a frame of which ``lines`` are in.

        ``kept`` is the window's anomaly map over its kept cells, ``cells`` the frame's
        screen signal per map cell.
        """
        ky, kx = slice(w.keep_y0, w.keep_y1), slice(w.keep_x0, w.keep_x1)
        above = kept > self.spec.score_threshold
        if self.segmenter is None:
            self._outline(frame, lines, w, above)
            return
        hot = np.asarray(above | (cells[ky, kx] >= self.spec.screen.threshold), np.uint8)
        if not hot.any():
            return
        t0 = time.perf_counter()
        stride = self.spec.map_stride
        count, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
        shape = (lines, frame.shape[1])
        windows: list[tuple[int, int, int, int]] = []
        regions: list[tuple[bool, float]] = []
        for i in range(1, count):
            cx, cy, cw, ch = (int(v) for v in stats[i, :4])
            box = Defect(
                DEFECT_KIND,
                0.0,
                (w.keep_x0 + cx) * stride,
                (w.keep_y0 + cy) * stride,
                cw * stride,
                ch * stride,
            )
            inside = labels == i
            windows.append(defect_window(box, shape, SEGMENT_CROP))
            regions.append((bool(above[inside].any()), float(kept[inside].max())))
        masks = crop_masks(self.segmenter, frame, windows)
        for window, (confirmed, score), mask in zip(windows, regions, masks, strict=True):
            y0, _, x0, _ = window
            if not confirmed:
                ys, xs = np.nonzero(mask)
                if ys.size < SEGMENT_MIN_PX:
                    continue
                self.defects.append(segment_box(score, x0 + xs, y0 + ys, stride, shape))
            self.masks.append((y0, x0, mask))
            self._keep(frame, lines, window, mask)
        self.seconds += time.perf_counter() - t0

    def _outline(
        self, frame: U8Image, lines: int, w: MapWindow, above: npt.NDArray[np.bool_]
    ) -> None:
        """Masks of the regions above the threshold from the pixels' own deviation."""
        if not above.any():
            return
        t0 = time.perf_counter()
        stride = self.spec.map_stride
        grown = cv2.dilate(np.asarray(above, np.uint8), np.ones((3, 3), np.uint8))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
        pad = REFINE_MEDIAN // 2 + 1
        for i in range(1, count):
            cx, cy, cw, ch = (int(v) for v in stats[i, :4])
            y0, x0 = (w.keep_y0 + cy) * stride, (w.keep_x0 + cx) * stride
            y1, x1 = min(y0 + ch * stride, lines), min(x0 + cw * stride, frame.shape[1])
            py0, px0 = max(y0 - pad, 0), max(x0 - pad, 0)
            py1, px1 = min(y1 + pad, lines), min(x1 + pad, frame.shape[1])
            cells = np.asarray(labels[cy : cy + ch, cx : cx + cw] == i, np.uint8)
            hot = np.zeros((py1 - py0, px1 - px0), bool)
            region = np.kron(cells, np.ones((stride, stride), np.uint8))
            hot[y0 - py0 : y1 - py0, x0 - px0 : x1 - px0] = region[: y1 - y0, : x1 - x0] > 0
            full = deviation_mask(frame[py0:py1, px0:px1], hot)
            mask = np.ascontiguousarray(full[y0 - py0 : y1 - py0, x0 - px0 : x1 - px0])
            self.masks.append((y0, x0, mask))
            self._keep(frame, lines, (y0, y1, x0, x1), mask)
        self.seconds += time.perf_counter() - t0

    def warm_up(self, frame: U8Image) -> None:
        """Run the network once on every crop size from ``SEGMENT_CROP`` to twice that on
        each side (the crops around small and medium defects; OpenVINO compiles each size
        here, not on a cell's path; larger crops are compiled when first seen)."""
        if self.segmenter is None:
            return
        sides = range(SEGMENT_CROP, 2 * SEGMENT_CROP + 1, SIZE_MULTIPLE)
        for height in sides:
            for width in sides:
                self.segmenter.mask(frame[:height, :width])
