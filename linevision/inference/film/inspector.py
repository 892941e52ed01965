"""Blue-film inspection over a streaming line-scan frame: screen every pixel, score the flagged.

Two stages (seeds 003 + 004), then masks. The screen (:mod:`.screen`) flags pixels at full
resolution; where it reaches the manifest's threshold, the anomaly graph (pretrained teacher
and distilled student in one ONNX file) scores a window around it, downscaled by
``downscale``; the segmentation network (:mod:`.segment`) masks the hot regions.

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
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np
import numpy.typing as npt

from linevision.inference.film.geometry import (
    DEFECT_KIND,
    Window,
    defects_from_map,
    overlap,
    scaled_plan,
    window_at,
)
from linevision.inference.film.screen import ScreenScratch, screen_signal_into
from linevision.inference.film.segment import (
    SEGMENT_ROLE,
    FilmSegmenter,
    FrameMasks,
    cut_tiles,
)
from linevision.inference.manifest import Manifest, ModelFileError, TileAnomalySpec, load_manifest
from linevision.inference.session import (
    Session,
    SessionOptions,
    check_runtime,
    open_session,
)
from linevision.log import get_logger
from linevision.tiling import plan_tiles
from linevision.types import Crop, Decision, ModelRef

if TYPE_CHECKING:
    from pathlib import Path

U8Image = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]
TileKey = tuple[int, int]

THUMBNAIL: Final = 8
"""The frame's reduced copy (for the archive and the HMI) has one pixel per 8 x 8 (bilinear)."""
SEGMENT_COLOUR: Final = (0, 0, 255)
HEIGHT: Final = 18000
WIDTH: Final = 4000

log = get_logger(__name__)


class FrameSizeError(ValueError):
    """Lines that do not fit the inspector's frame (wrong width, or past its last line)."""


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
    crops: tuple[Crop, ...]
    """Full-resolution pixels around the first masks (for the archive and the page)."""
    tiles: tuple[Crop, ...]
    """Full-resolution tiles around the first masks (``segment.cut_tiles``), for a dataset."""
    segment_ms: float
    screen_ms: float
    anomaly_ms: float
    finish_ms: float

    @property
    def flagged(self) -> tuple[TileKey, ...]:
        return tuple(sorted(self.tile_scores))


def _check_frame_size(spec: TileAnomalySpec, height: int, width: int) -> None:
    stride, roi = spec.map_stride, spec.roi
    if height % stride or width % stride:
        msg = f"frame {width} x {height} must be a multiple of {stride} px on each side"
        raise FrameSizeError(msg)
    if height < roi or width < roi:
        msg = f"frame {width} x {height} is smaller than the {roi} px second-stage window"
        raise FrameSizeError(msg)


def _fixed_input_side(session: Session) -> int | None:
    shape = session.input_shape(session.input_names[0])
    return shape[2] if len(shape) == 4 else None


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

    def __init__(  # noqa: PLR0913  (the folder, the frame size, the session options, the split)
        self,
        model_dir: Path,
        height: int = HEIGHT,
        width: int = WIDTH,
        *,
        threads: int = 2,
        graph_optimization: str = "all",
        split_last_band: bool = True,
        options: SessionOptions | None = None,
    ) -> None:
        manifest, onnx_path = load_manifest(model_dir)
        self.model_dir = model_dir
        if manifest.kind != "tile_anomaly" or manifest.tile_anomaly is None:
            msg = f"{onnx_path}: kind {manifest.kind!r}, expected 'tile_anomaly'"
            raise ModelFileError(msg)
        self.manifest: Manifest = manifest
        base = options or SessionOptions()
        options = SessionOptions(threads, graph_optimization, base.backend, base.precision)
        self.variant = check_runtime(manifest, options, model_dir)
        spec = manifest.tile_anomaly
        if self.variant.threshold != spec.score_threshold:  # this runtime's own threshold
            spec = spec.model_copy(update={"score_threshold": self.variant.threshold})
        self.spec = spec
        _check_frame_size(self.spec, height, width)
        stride, roi = self.spec.map_stride, self.spec.roi
        self.ref = ModelRef(manifest.name, manifest.version, manifest.sha256)
        self._session = open_session(onnx_path, options)
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
        segmenter = (
            FilmSegmenter(
                model_dir, threads=threads, graph_optimization=graph_optimization, options=options
            )
            if SEGMENT_ROLE in manifest.files
            else None
        )
        self._masks = FrameMasks(segmenter, self.spec)
        size = (manifest.input.width, manifest.input.height)
        self._resized: U8Image = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        self._input: F32Array = np.zeros((1, 3, size[1], size[0]), dtype=np.float32)
        side = roi // self.spec.downscale
        self._roi_resized: U8Image = np.zeros((side, side, 3), dtype=np.uint8)
        self._roi_input: F32Array = np.zeros((1, 3, side, side), dtype=np.float32)
        self._halo = self.spec.screen.halo
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
        self._masks.reset()
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
        s = self.spec.screen.scale
        stride = self.spec.map_stride // s  # in the signal's pixels
        top = max(y0 - self._halo, 0)
        bottom = min(y1 + self._halo, self._lines)
        band = screen_signal_into(self.buffer[top:bottom], self.spec.screen, scratch)
        signal = band[(y0 - top) // s : (y1 - top) // s]
        rows, width = signal.shape
        pooled = signal.reshape(rows // stride, stride, width).max(axis=1)
        cells = pooled.reshape(rows // stride, width // stride, stride).max(axis=2)
        self._cells[y0 // self.spec.map_stride : y1 // self.spec.map_stride] = cells

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
        self._masks.add(self.buffer, self._lines, w, kept, self._cells)

    def _painted_thumbnail(self) -> U8Image:
        """The thumbnail with every segmented defect pixel painted."""
        out = self._thumb.copy()
        for y0, x0, mask in self._masks.masks:
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
        for d in self._masks.defects:
            if not any(overlap(d, o) for o in defects):
                defects += (d,)
        best = float(anomaly.max())
        infer_ms = (self._screen_s + self._anomaly_s + self._masks.seconds) * 1e3
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
            segments=tuple(self._masks.masks),
            crops=tuple(self._masks.crops),
            tiles=cut_tiles(self.buffer, self._masks.masks) if complete and defects else (),
            segment_ms=self._masks.seconds * 1e3,
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
        self._masks.warm_up(self.buffer)
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
