"""Blue-film map geometry: tile plans on the cell map, stitching, windows and defect boxes.

The anomaly map has one cell per ``map_stride`` frame pixels. These pure functions move tile
plans onto it, stitch tile maps, place the second stage's windows on it and turn it (or a
segmentation mask) into defect boxes in frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from linevision.tiling import Tile
from linevision.types import Defect

F32Array = npt.NDArray[np.float32]
TileKey = tuple[int, int]

DEFECT_KIND: Final = "film_anomaly"
SEGMENT_KIND: Final = "film_segment"
"""A defect the screen flagged and the segmentation network marked, below the map's threshold."""


def scaled_plan(plan: tuple[Tile, ...], factor: int) -> tuple[Tile, ...]:
    """The same plan on a map with one cell per ``factor`` pixels.

    >>> from linevision.tiling import plan_tiles
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

    >>> from linevision.tiling import plan_tiles
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


def segment_box(
    score: float,
    xs: npt.NDArray[np.intp],
    ys: npt.NDArray[np.intp],
    pad: int,
    frame_shape: tuple[int, int],
) -> Defect:
    """A segmented defect: the box around pixels ``(ys, xs)`` grown by ``pad`` px each side,
    inside the frame (as the map's boxes are grown by one cell).

    >>> segment_box(1.0, np.array([5, 9]), np.array([2, 3]), 4, (100, 100))
    Defect(kind='film_segment', score=1.0, x=1, y=0, w=13, h=8)
    """
    height, width = frame_shape
    x0, y0 = max(int(xs.min()) - pad, 0), max(int(ys.min()) - pad, 0)
    x1, y1 = min(int(xs.max()) + 1 + pad, width), min(int(ys.max()) + 1 + pad, height)
    return Defect(SEGMENT_KIND, round(score, 4), x0, y0, x1 - x0, y1 - y0)


def overlap(a: Defect, b: Defect) -> bool:
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
