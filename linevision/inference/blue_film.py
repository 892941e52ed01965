"""Blue-film inspection over a streaming line-scan frame: screen every pixel, score the flagged.

Two stages (seeds 003 + 004). The screen is a local-contrast detector at full resolution (the
film is blue, every defect kind is grey, white or black, so the chroma B - R drops on a
defect; a box-blur background minus the pixel keeps 3 px defects). Where the screen signal
reaches the manifest's threshold, the anomaly graph (pretrained teacher and distilled
student in one ONNX file) scores a window around it, downscaled by ``downscale``.

``FilmInspector`` owns one preallocated frame buffer; ``add_strip`` copies arriving lines
into it, screens the rows whose neighbourhood is complete and scores every window whose last
line is in, so that ``finish`` only handles the last band. The outermost map cells of a
window inside the frame are dropped (the student is least reliable at its input's edges;
another window keeps those cells when they are flagged).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from linevision.inference.film_segment import (
    SEGMENT_ROLE,
    FilmSegmenter,
    crop_masks,
    defect_window,
)
from linevision.inference.manifest import (
    Manifest,
    ModelFileError,
    ScreenSpec,
    TileAnomalySpec,
    load_manifest,
)
from linevision.log import get_logger
from linevision.tiling import Tile, plan_tiles
from linevision.types import Decision, Defect, ModelRef

if TYPE_CHECKING:
    from pathlib import Path

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]
TileKey = tuple[int, int]

DEFECT_KIND: Final = "film_anomaly"
SEGMENT_KIND: Final = "film_segment"
"""A defect the screen flagged and the segmentation network marked, below the map's threshold."""
SEGMENT_MIN_PX: Final = 6
"""Pixels the segmentation network must mark for a screen-only region to be a defect (the
smallest defect of the contract, 3 px across, covers about 7)."""
THUMBNAIL: Final = 8
"""The frame's reduced copy (for the archive and the HMI) has one pixel per 8 x 8 (bilinear)."""
SEGMENT_CROP: Final = 64
"""Smallest side of the full-resolution crop the segmentation network sees around a defect
(the defect's box with 32 px each side when that is larger). 1.1 ms a crop, where 128 px
took 4.4 ms for the same pixel IoU on held-out frames."""
SEGMENT_COLOUR: Final = (0, 0, 255)
HEIGHT: Final = 18000
WIDTH: Final = 4000

log = get_logger(__name__)


class FrameSizeError(ValueError):
    """Lines that do not fit the inspector's frame (wrong width, or past its last line)."""


def screen_signal(tile: U8Image, spec: ScreenSpec) -> U8Image:
    """|box_blur(B - R) - (B - R)|, box-smoothed: high where the film's chroma breaks."""
    blue, _, red = cv2.split(tile)
    chroma = cv2.subtract(blue, red)
    background = cv2.blur(chroma, (spec.kernel, spec.kernel))
    signal = cv2.absdiff(background, chroma)
    if spec.smooth > 1:
        signal = cv2.blur(signal, (spec.smooth, spec.smooth))
    return np.asarray(signal, dtype=np.uint8)


class ScreenScratch:
    """Preallocated planes for :func:`screen_signal` on bands of up to ``rows`` x ``width``.

    Fresh multi-megabyte arrays per band cost page faults on every call in a busy process
    (3x the arithmetic here); these are allocated once and grow only for a taller band.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.rows = 0
        self._planes: list[U8Image] = []

    def planes(self, rows: int) -> list[U8Image]:
        """Seven (rows, width) views: B, G, R, chroma, background, signal, smoothed."""
        if rows > self.rows:
            self.rows = rows
            self._planes = [np.zeros((rows, self.width), np.uint8) for _ in range(7)]
        return [p[:rows] for p in self._planes]


def screen_signal_into(band: U8Image, spec: ScreenSpec, scratch: ScreenScratch) -> U8Image:
    """:func:`screen_signal` written into ``scratch`` (the result is a view of it)."""
    rows = band.shape[0]
    blue, green, red, chroma, background, signal, smooth = scratch.planes(rows)
    cv2.split(band, [blue, green, red])
    cv2.subtract(blue, red, dst=chroma)
    cv2.blur(chroma, (spec.kernel, spec.kernel), dst=background)
    cv2.absdiff(background, chroma, dst=signal)
    if spec.smooth > 1:
        cv2.blur(signal, (spec.smooth, spec.smooth), dst=smooth)
        return smooth
    return signal


def screen_score(tile: U8Image, spec: ScreenSpec) -> float:
    """The largest screen signal of a BGR tile; the tile is flagged at ``spec.threshold``."""
    return float(screen_signal(tile, spec).max())


def scaled_plan(plan: tuple[Tile, ...], factor: int) -> tuple[Tile, ...]:
    """The same plan on a map with one cell per ``factor`` pixels.

    >>> p = scaled_plan(plan_tiles(2048, 4000, 1024, 0), 16)
    >>> (p[-1].y0, p[-1].y1, p[-1].x0, p[-1].x1, p[-1].own_x0)
    (64, 128, 186, 250, 189)
    """
    for t in plan:
        if any(v % factor for v in (t.y0, t.y1, t.x0, t.x1)):
            msg = f"tile ({t.row},{t.col}) window is not a multiple of {factor} px"
            raise ValueError(msg)
    return tuple(
        Tile(
            row=t.row,
            col=t.col,
            y0=t.y0 // factor,
            y1=t.y1 // factor,
            x0=t.x0 // factor,
            x1=t.x1 // factor,
            own_y0=t.own_y0 // factor,
            own_y1=t.own_y1 // factor,
            own_x0=t.own_x0 // factor,
            own_x1=t.own_x1 // factor,
        )
        for t in plan
    )


def drop_inner_edges(
    tile_map: F32Array, tile: Tile, frame_shape: tuple[int, int], cells: int
) -> F32Array:
    """Zero ``cells`` map cells along each tile edge that is not on the frame's edge.

    >>> t = plan_tiles(2048, 1024, 1024, 32)[0]
    >>> drop_inner_edges(np.ones((4, 4), np.float32), t, (2048, 1024), 1)[:, 0]
    array([1., 1., 1., 0.], dtype=float32)
    """
    if cells <= 0:
        return tile_map
    height, width = frame_shape
    if tile.y0 > 0:
        tile_map[:cells] = 0.0
    if tile.y1 < height:
        tile_map[-cells:] = 0.0
    if tile.x0 > 0:
        tile_map[:, :cells] = 0.0
    if tile.x1 < width:
        tile_map[:, -cells:] = 0.0
    return tile_map


def max_stitch(plan: tuple[Tile, ...], maps: dict[TileKey, F32Array], out: F32Array) -> F32Array:
    """Write each tile's whole map into ``out`` keeping the maximum where tiles overlap.

    Order-independent; tiles missing from ``maps`` leave ``out`` as it was.
    """
    for t in plan:
        tile_map = maps.get((t.row, t.col))
        if tile_map is None:
            continue
        if tile_map.shape != (t.y1 - t.y0, t.x1 - t.x0):
            msg = f"tile ({t.row},{t.col}) map shape {tile_map.shape} != tile map size"
            raise ValueError(msg)
        window = out[t.y0 : t.y1, t.x0 : t.x1]
        np.maximum(window, tile_map, out=window)
    return out


def defects_from_map(
    anomaly: F32Array, threshold: float, stride: int, frame_shape: tuple[int, int]
) -> tuple[Defect, ...]:
    """Connected regions of ``anomaly > threshold`` as frame boxes, padded by one cell.

    >>> m = np.zeros((8, 8), np.float32)
    >>> m[2:4, 5] = 3.0
    >>> defects_from_map(m, 1.0, 16, (128, 128))
    (Defect(kind='film_anomaly', score=3.0, x=64, y=16, w=48, h=64),)
    """
    if anomaly.size == 0 or float(anomaly.max()) <= threshold:
        return ()
    hot = anomaly > threshold
    ys, xs = np.nonzero(hot)
    # regions only within the cells above the threshold (the map is mostly empty)
    top, left = int(ys.min()), int(xs.min())
    rows, cols = slice(top, int(ys.max()) + 1), slice(left, int(xs.max()) + 1)
    mask, part = hot[rows, cols].astype(np.uint8), anomaly[rows, cols]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    height, width = frame_shape
    found: list[Defect] = []
    for i in range(1, count):
        cx, cy, cw, ch = (int(v) for v in stats[i, :4])
        cx, cy = cx + left, cy + top
        x0, y0 = max((cx - 1) * stride, 0), max((cy - 1) * stride, 0)
        x1, y1 = min((cx + cw + 1) * stride, width), min((cy + ch + 1) * stride, height)
        score = float(part[labels == i].max())
        found.append(Defect(DEFECT_KIND, round(score, 4), x0, y0, x1 - x0, y1 - y0))
    return tuple(sorted(found, key=lambda d: -d.score))


def _segment_box(
    score: float,
    xs: npt.NDArray[np.intp],
    ys: npt.NDArray[np.intp],
    pad: int,
    frame_shape: tuple[int, int],
) -> Defect:
    """A segmented defect: the box around pixels ``(ys, xs)`` grown by ``pad`` px each side,
    inside the frame (as the map's boxes are grown by one cell).

    >>> _segment_box(1.0, np.array([5, 9]), np.array([2, 3]), 4, (100, 100))
    Defect(kind='film_segment', score=1.0, x=1, y=0, w=13, h=8)
    """
    height, width = frame_shape
    x0, y0 = max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0)
    x1, y1 = min(int(xs.max()) + 1 + pad, width), min(int(ys.max()) + 1 + pad, height)
    return Defect(SEGMENT_KIND, round(score, 4), x0, y0, x1 - x0, y1 - y0)


def _overlap(a: Defect, b: Defect) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def box_contains(box: Defect, x0: int, y0: int, x1: int, y1: int) -> bool:
    """Whether the pixel box ``[x0:x1, y0:y1]`` lies inside ``box``."""
    return box.x <= x0 and box.y <= y0 and x1 <= box.x + box.w and y1 <= box.y + box.h


@dataclass(frozen=True, slots=True)
class Window:
    """A second-stage window in map cells: ``[cy0:cy1, cx0:cx1]``, kept part ``keep_*``."""

    cy0: int
    cy1: int
    cx0: int
    cx1: int
    keep_y0: int
    keep_y1: int
    keep_x0: int
    keep_x1: int

    def keeps(self, cy: int, cx: int) -> bool:
        return self.keep_y0 <= cy < self.keep_y1 and self.keep_x0 <= cx < self.keep_x1


def window_at(cy: int, cx: int, size: int, edge: int, cells: tuple[int, int]) -> Window:
    """The ``size``-cell window centred on cell (cy, cx), inside the map of ``cells``.

    Its ``edge`` outermost cells are dropped on every side that is not the map's border.

    >>> w = window_at(0, 100, 32, 3, (1125, 250))
    >>> (w.cy0, w.cy1, w.cx0, w.cx1, w.keep_y0, w.keep_y1, w.keep_x0, w.keep_x1)
    (0, 32, 84, 116, 0, 29, 87, 113)
    """
    rows, cols = cells
    cy0 = min(max(cy - size // 2, 0), max(rows - size, 0))
    cx0 = min(max(cx - size // 2, 0), max(cols - size, 0))
    cy1, cx1 = min(cy0 + size, rows), min(cx0 + size, cols)
    return Window(
        cy0,
        cy1,
        cx0,
        cx1,
        cy0 + (edge if cy0 > 0 else 0),
        cy1 - (edge if cy1 < rows else 0),
        cx0 + (edge if cx0 > 0 else 0),
        cx1 - (edge if cx1 < cols else 0),
    )


@dataclass(frozen=True)
class FilmResult:
    """One frame's outcome: the decision, the reduced-resolution map and mask, tile scores."""

    decision: Decision
    anomaly: F32Array
    mask: U8Image
    screen_scores: dict[TileKey, float]
    tile_scores: dict[TileKey, float]
    windows: int
    thumbnail: U8Image
    segments: tuple[tuple[int, int, U8Image], ...]
    """Full-resolution defect masks: (y0, x0, mask 0/255) per crop, in frame pixels."""
    segment_ms: float
    screen_ms: float
    anomaly_ms: float
    finish_ms: float

    @property
    def flagged(self) -> tuple[TileKey, ...]:
        return tuple(sorted(self.tile_scores))


def _session(path: Path, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        msg = f"onnxruntime cannot load {path}: {exc}"
        raise ModelFileError(msg) from exc


def _check_frame_size(spec: TileAnomalySpec, height: int, width: int) -> None:
    stride, roi = spec.map_stride, spec.roi
    if height % stride or width % stride:
        msg = f"frame {width} x {height} must be a multiple of {stride} px on each side"
        raise FrameSizeError(msg)
    if height < roi or width < roi:
        msg = f"frame {width} x {height} is smaller than the {roi} px second-stage window"
        raise FrameSizeError(msg)


def _fixed_input_side(session: Any) -> int | None:
    shape = session.get_inputs()[0].shape
    side = shape[2] if len(shape) == 4 else None
    return side if isinstance(side, int) else None


class FilmInspector:
    """Two-stage inspection of ``height`` x ``width`` BGR frames arriving as strips of lines.

    Stage 1 runs over the whole frame band by band as lines arrive (a band's rows are final
    once the lines its blur needs are in), so every pixel is screened at full resolution and
    only the last band is left for ``finish``. Its result is kept per map cell (the largest
    signal in each ``map_stride`` square). Stage 2 runs on a ``roi`` window centred on each
    flagged cell that no earlier window keeps, as soon as the window's last line is in.
    Windows are made in raster order of their cells, so the result does not depend on how the
    frame was cut into strips. With ``split_last_band`` the frame's last band, which stands
    between the last line and the verdict, is screened in two halves at once (the second on
    a thread of the inspector's own); the cells are the same either way.
    """

    def __init__(
        self,
        model_dir: Path,
        height: int = HEIGHT,
        width: int = WIDTH,
        *,
        threads: int = 2,
        split_last_band: bool = True,
    ) -> None:
        manifest, onnx_path = load_manifest(model_dir)
        self.model_dir = model_dir
        if manifest.kind != "tile_anomaly" or manifest.tile_anomaly is None:
            msg = f"{onnx_path}: kind {manifest.kind!r}, expected 'tile_anomaly'"
            raise ModelFileError(msg)
        self.manifest: Manifest = manifest
        self.spec = manifest.tile_anomaly
        _check_frame_size(self.spec, height, width)
        stride, roi = self.spec.map_stride, self.spec.roi
        self.ref = ModelRef(manifest.name, manifest.version, manifest.sha256)
        self._session = _session(onnx_path, threads)
        fixed = _fixed_input_side(self._session)
        if fixed is not None and fixed != roi // self.spec.downscale:
            msg = f"{onnx_path}: input fixed at {fixed} px; the {roi} px window needs any size"
            raise ModelFileError(msg)
        self.buffer: U8Image = np.zeros((height, width, 3), dtype=np.uint8)
        self.plan = plan_tiles(height, width, self.spec.tile, self.spec.overlap)
        self._map_plan = scaled_plan(self.plan, stride)
        cells = (height // stride, width // stride)
        self._map: F32Array = np.zeros(cells, dtype=np.float32)
        self._cells: U8Image = np.zeros(cells, dtype=np.uint8)
        self._thumb: U8Image = np.zeros(
            (height // THUMBNAIL, width // THUMBNAIL, 3), dtype=np.uint8
        )
        self._thumb_rows = 0
        self._segmenter = (
            FilmSegmenter(model_dir, threads=threads) if SEGMENT_ROLE in manifest.files else None
        )
        self._segments: list[tuple[int, int, U8Image]] = []
        self._segment_defects: list[Defect] = []
        self._segment_s = 0.0
        size = (manifest.input.width, manifest.input.height)
        self._resized: U8Image = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        self._input: F32Array = np.zeros((1, 3, size[1], size[0]), dtype=np.float32)
        side = roi // self.spec.downscale
        self._roi_resized: U8Image = np.zeros((side, side, 3), dtype=np.uint8)
        self._roi_input: F32Array = np.zeros((1, 3, side, side), dtype=np.float32)
        screen = self.spec.screen
        self._halo = screen.kernel // 2 + screen.smooth // 2 + 1
        self._scratch = ScreenScratch(width)
        self._scratch_2 = ScreenScratch(width)
        self._screen_pool = (
            ThreadPoolExecutor(1, thread_name_prefix="film-screen") if split_last_band else None
        )
        self._lines = 0
        self._screened_rows = 0
        self._windows: list[Window] = []
        self._waiting: list[Window] = []
        self._screen_s = 0.0
        self._anomaly_s = 0.0
        log.info("film_inspector_ready", model=self.ref.name, height=height, width=width)

    @property
    def lines(self) -> int:
        return self._lines

    def reset(self) -> None:
        """Start a new frame in the same buffer."""
        self._lines = 0
        self._thumb_rows = 0
        self._segments = []
        self._segment_defects = []
        self._segment_s = 0.0
        self._screened_rows = 0
        self._windows = []
        self._waiting = []
        self._map.fill(0.0)
        self._cells.fill(0)
        self._screen_s = 0.0
        self._anomaly_s = 0.0

    def add_strip(self, lines: U8Image) -> None:
        """Copy the next ``lines`` (n, width, 3) into the frame; screen and score what is ready."""
        height, width = self.buffer.shape[:2]
        n = lines.shape[0]
        if lines.shape[1:] != (width, 3) or self._lines + n > height:
            msg = (
                f"strip of shape {lines.shape} does not fit frame {width} x {height} "
                f"after {self._lines} lines"
            )
            raise FrameSizeError(msg)
        self.buffer[self._lines : self._lines + n] = lines
        self._lines += n
        self._shrink()
        self._advance()

    def _shrink(self) -> None:
        """Reduce the lines that complete a row of the thumbnail (/8, bilinear: 0.1 ms a strip
        where INTER_AREA takes 1.6 ms; defects are painted and boxed on it anyway)."""
        rows = self._lines // THUMBNAIL
        if rows <= self._thumb_rows:
            return
        y0, y1 = self._thumb_rows * THUMBNAIL, rows * THUMBNAIL
        out = self._thumb[self._thumb_rows : rows]
        size = (out.shape[1], out.shape[0])
        cv2.resize(self.buffer[y0:y1], size, dst=out, interpolation=cv2.INTER_LINEAR)
        self._thumb_rows = rows

    def _advance(self) -> None:
        height = self.buffer.shape[0]
        stride = self.spec.map_stride
        final = height if self._lines == height else self._lines - self._halo
        final -= final % stride
        if final > self._screened_rows:
            t0 = time.perf_counter()
            self._screen_band(self._screened_rows, final)
            self._screen_s += time.perf_counter() - t0
        ready = [w for w in self._waiting if w.cy1 * stride <= self._lines]
        if ready:
            self._waiting = [w for w in self._waiting if w.cy1 * stride > self._lines]
            t0 = time.perf_counter()
            for w in ready:
                self._score_window(w)
            self._anomaly_s += time.perf_counter() - t0

    def _screen_band(self, y0: int, y1: int) -> None:
        """Screen rows [y0, y1) (multiples of the stride) and open windows on flagged cells.

        The frame's last band is on the path to the verdict: its two halves are screened at
        once, one on the film's own screen thread (OpenCV releases the GIL).
        """
        screen, stride = self.spec.screen, self.spec.map_stride
        mid = y0 + (y1 - y0) // 2 // stride * stride
        last = self._lines == self.buffer.shape[0]
        if self._screen_pool is not None and last and y0 < mid < y1:
            lower = self._screen_pool.submit(self._screen_cells, mid, y1, self._scratch_2)
            self._screen_cells(y0, mid, self._scratch)
            lower.result()
        else:
            self._screen_cells(y0, y1, self._scratch)
        self._screened_rows = y1
        cells = self._cells[y0 // stride : y1 // stride]
        hot_y, hot_x = np.nonzero(cells >= screen.threshold)
        shape = (self._cells.shape[0], self._cells.shape[1])
        size = self.spec.roi // stride
        for cy, cx in zip((hot_y + y0 // stride).tolist(), hot_x.tolist(), strict=True):
            if any(w.keeps(cy, cx) for w in self._windows):
                continue
            window = window_at(cy, cx, size, self.spec.roi_edge_cells, shape)
            self._windows.append(window)
            self._waiting.append(window)

    def _screen_cells(self, y0: int, y1: int, scratch: ScreenScratch) -> None:
        """The largest screen signal of each map cell in rows [y0, y1), into the cell map."""
        stride = self.spec.map_stride
        top = max(y0 - self._halo, 0)
        bottom = min(y1 + self._halo, self._lines)
        band = screen_signal_into(self.buffer[top:bottom], self.spec.screen, scratch)
        signal = band[y0 - top : y1 - top]
        rows, width = signal.shape
        pooled = signal.reshape(rows // stride, stride, width).max(axis=1)
        cells = pooled.reshape(rows // stride, width // stride, stride).max(axis=2)
        self._cells[y0 // stride : y1 // stride] = cells

    def _score_window(self, w: Window) -> None:
        stride, side = self.spec.map_stride, self._roi_resized.shape[0]
        pixels = self.buffer[w.cy0 * stride : w.cy1 * stride, w.cx0 * stride : w.cx1 * stride]
        cv2.resize(pixels, (side, side), dst=self._roi_resized, interpolation=cv2.INTER_AREA)
        self._roi_input[0] = self._roi_resized.transpose(2, 0, 1)
        name = self.manifest.input.name
        out = self._session.run([self.manifest.output], {name: self._roi_input})
        window_map = out[0][0, 0]
        ky, kx = slice(w.keep_y0, w.keep_y1), slice(w.keep_x0, w.keep_x1)
        kept = window_map[
            w.keep_y0 - w.cy0 : w.keep_y1 - w.cy0, w.keep_x0 - w.cx0 : w.keep_x1 - w.cx0
        ]
        np.maximum(self._map[ky, kx], kept, out=self._map[ky, kx])
        if self._segmenter is not None:
            self._segment(w, kept)

    def _segment(self, w: Window, kept: F32Array) -> None:
        """Full-resolution masks (seed 003's network) around the window's hot regions.

        A region is a connected set of kept cells where the anomaly map is above its
        threshold or the screen flagged. Regions above the threshold are defects and get
        their mask. A screen-only region (too small for the downscaled anomaly graph to
        lift above the threshold) is a defect when the network marks ``SEGMENT_MIN_PX``
        pixels in it: seed 003's two stages, screen then segmentation.
        """
        assert self._segmenter is not None
        ky, kx = slice(w.keep_y0, w.keep_y1), slice(w.keep_x0, w.keep_x1)
        above = kept > self.spec.score_threshold
        hot = np.asarray(above | (self._cells[ky, kx] >= self.spec.screen.threshold), np.uint8)
        if not hot.any():
            return
        t0 = time.perf_counter()
        stride = self.spec.map_stride
        count, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
        shape = (self._lines, self.buffer.shape[1])
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
        masks = crop_masks(self._segmenter, self.buffer, windows)
        for (y0, _, x0, _), (confirmed, score), mask in zip(windows, regions, masks, strict=True):
            if confirmed:
                self._segments.append((y0, x0, mask))
                continue
            ys, xs = np.nonzero(mask)
            if ys.size < SEGMENT_MIN_PX:
                continue
            self._segments.append((y0, x0, mask))
            self._segment_defects.append(_segment_box(score, x0 + xs, y0 + ys, stride, shape))
        self._segment_s += time.perf_counter() - t0

    def _painted_thumbnail(self) -> U8Image:
        """The thumbnail with every segmented defect pixel painted."""
        out = self._thumb.copy()
        for y0, x0, mask in self._segments:
            ys, xs = np.nonzero(mask)
            out[(y0 + ys) // THUMBNAIL, (x0 + xs) // THUMBNAIL] = SEGMENT_COLOUR
        return out

    def _anomaly(self, tile: U8Image) -> F32Array:
        size = (self._resized.shape[1], self._resized.shape[0])
        if tile.shape[:2] == self._resized.shape[:2]:
            self._resized[:] = tile
        else:
            cv2.resize(tile, size, dst=self._resized, interpolation=cv2.INTER_AREA)
        self._input[0] = self._resized.transpose(2, 0, 1)
        name = self.manifest.input.name
        out = self._session.run([self.manifest.output], {name: self._input})
        return np.array(out[0][0, 0], dtype=np.float32)

    def finish(self) -> FilmResult:
        """Complete the frame: the last band, the windows left, the defects, the decision.

        A frame with missing lines is a fail-safe NG (``bad_frame``), never an OK.
        """
        t0 = time.perf_counter()
        height, width = self.buffer.shape[:2]
        complete = self._lines == height
        if complete:
            self._advance()
        threshold = self.spec.score_threshold
        screen_scores = {
            (t.row, t.col): float(self._cells[t.y0 : t.y1, t.x0 : t.x1].max())
            for t in self._map_plan
        }
        tile_scores = {
            (t.row, t.col): float(self._map[t.y0 : t.y1, t.x0 : t.x1].max())
            for t in self._map_plan
            if screen_scores[t.row, t.col] >= self.spec.screen.threshold
        }
        anomaly = self._map.copy()
        defects = defects_from_map(anomaly, threshold, self.spec.map_stride, (height, width))
        for d in self._segment_defects:
            if not any(_overlap(d, o) for o in defects):
                defects += (d,)
        best = float(anomaly.max())
        infer_ms = (self._screen_s + self._anomaly_s + self._segment_s) * 1e3
        if not complete:
            detail = f"frame incomplete: {self._lines} of {height} lines"
            decision = Decision.fault("bad_frame", detail, self.ref)
        elif defects:
            decision = Decision("NG", "defect", DEFECT_KIND, best, defects, self.ref, infer_ms)
        else:
            decision = Decision("OK", None, "OK", best, (), self.ref, infer_ms)
        result = FilmResult(
            decision=decision,
            anomaly=anomaly,
            mask=np.asarray((anomaly > threshold) * 255, dtype=np.uint8),
            screen_scores=screen_scores,
            tile_scores=tile_scores,
            windows=len(self._windows),
            thumbnail=self._painted_thumbnail(),
            segments=tuple(self._segments),
            segment_ms=self._segment_s * 1e3,
            screen_ms=self._screen_s * 1e3,
            anomaly_ms=self._anomaly_s * 1e3,
            finish_ms=(time.perf_counter() - t0) * 1e3,
        )
        log.info(
            "film_inspected",
            verdict=decision.verdict,
            flagged=len(tile_scores),
            windows=result.windows,
            defects=len(defects),
            score=round(best, 4),
            screen_ms=round(result.screen_ms, 1),
            anomaly_ms=round(result.anomaly_ms, 1),
        )
        self.reset()
        return result

    def warm_up(self) -> float:
        """Touch every page of the frame buffer and run both stages once on it (blank);
        returns the ms it took. A fresh buffer would otherwise fault its pages in during the
        first frame (~216 MB)."""
        t0 = time.perf_counter()
        self.buffer.fill(0)
        self._thumb.fill(0)
        self.reset()
        stride = self.spec.map_stride
        self._lines = self.buffer.shape[0]
        self._screen_band(0, min(self.spec.roi, self._lines) // stride * stride)
        self._score_window(window_at(0, 0, self.spec.roi // stride, 0, self._cells.shape))
        if self._segmenter is not None:
            for side in range(SEGMENT_CROP, 2 * SEGMENT_CROP + 1, 16):
                self._segmenter.mask(self.buffer[:side, :side])
        self.reset()
        return (time.perf_counter() - t0) * 1e3

    def inspect_frame(self, frame: U8Image) -> FilmResult:
        """The whole frame at once (evaluation, replay)."""
        self.reset()
        self.add_strip(frame)
        return self.finish()

    def score_tile(self, tile: U8Image) -> F32Array:
        """The anomaly map of one whole tile of the plan's size, without the screen.

        The second stage applied to every tile: the straightforward method the two stages
        are measured against.
        """
        return self._anomaly(tile)
