"""Tile plans over large frames, and stitching of per-tile results. Pure functions.

A plan covers every pixel of the frame. Along each axis tiles start every
``stride = tile - overlap`` pixels; the last tile is moved back so that it ends exactly at the
frame's edge (it overlaps its neighbour more than ``overlap``). A frame side shorter than the
tile gives one tile of that side's length.

Each pixel is *owned* by exactly one tile: overlaps are split at their midpoint. Stitching
writes each tile's owned region only, so the stitched result does not depend on tile order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Tile:
    """A tile's window ``[y0:y1, x0:x1]`` and the part of it that it owns."""

    row: int
    col: int
    y0: int
    y1: int
    x0: int
    x1: int
    own_y0: int
    own_y1: int
    own_x0: int
    own_x1: int


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis.

    >>> axis_starts(18000, 1024, 0)[-3:]
    [15360, 16384, 16976]
    >>> axis_starts(4000, 1024, 64)
    [0, 960, 1920, 2880, 2976]
    >>> axis_starts(1000, 1024, 0)
    [0]
    >>> axis_starts(2048, 1024, 0)
    [0, 1024]
    """
    if length <= 0 or tile <= 0:
        msg = f"length and tile must be positive, got length={length} tile={tile}"
        raise ValueError(msg)
    if not 0 <= overlap < tile:
        msg = f"overlap must be in [0, tile), got overlap={overlap} tile={tile}"
        raise ValueError(msg)
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _owned(starts: list[int], size: int, length: int) -> list[tuple[int, int]]:
    """Split overlaps at their midpoint: (own_start, own_end) per tile, covering [0, length)."""
    ends = [min(s + size, length) for s in starts]
    bounds = [0, *((starts[i] + ends[i - 1]) // 2 for i in range(1, len(starts))), length]
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


def plan_tiles(height: int, width: int, tile: int = 1024, overlap: int = 0) -> tuple[Tile, ...]:
    """Row-major tiles covering a ``height`` x ``width`` frame.

    >>> plan = plan_tiles(18000, 4000, 1024, 0)
    >>> len(plan), plan[-1].y1, plan[-1].x1
    (72, 18000, 4000)
    """
    ys = axis_starts(height, tile, overlap)
    xs = axis_starts(width, tile, overlap)
    own_y = _owned(ys, tile, height)
    own_x = _owned(xs, tile, width)
    return tuple(
        Tile(
            row=r,
            col=c,
            y0=y,
            y1=min(y + tile, height),
            x0=x,
            x1=min(x + tile, width),
            own_y0=own_y[r][0],
            own_y1=own_y[r][1],
            own_x0=own_x[c][0],
            own_x1=own_x[c][1],
        )
        for r, y in enumerate(ys)
        for c, x in enumerate(xs)
    )


def tiles_ready(plan: tuple[Tile, ...], lines_received: int) -> tuple[Tile, ...]:
    """The tiles whose every line has arrived (a line-scan frame fills from the top).

    >>> plan = plan_tiles(3000, 2048, 1024, 0)
    >>> [(t.row, t.col) for t in tiles_ready(plan, 2000)]
    [(0, 0), (0, 1)]
    """
    return tuple(t for t in plan if t.y1 <= lines_received)


def stitch(
    plan: tuple[Tile, ...],
    results: dict[tuple[int, int], npt.NDArray[np.generic]],
    out: npt.NDArray[np.generic],
) -> npt.NDArray[np.generic]:
    """Write each tile's owned region of its result (same size as the tile) into ``out``.

    Tiles missing from ``results`` leave ``out`` untouched there.
    """
    for t in plan:
        res = results.get((t.row, t.col))
        if res is None:
            continue
        if res.shape[:2] != (t.y1 - t.y0, t.x1 - t.x0):
            msg = f"tile ({t.row},{t.col}) result shape {res.shape[:2]} != tile size"
            raise ValueError(msg)
        oy0, oy1 = t.own_y0 - t.y0, t.own_y1 - t.y0
        ox0, ox1 = t.own_x0 - t.x0, t.own_x1 - t.x0
        out[t.own_y0 : t.own_y1, t.own_x0 : t.own_x1] = res[oy0:oy1, ox0:ox1]
    return out
