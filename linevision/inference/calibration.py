"""A product's calibrated score for a ``reference_compare`` model (pure functions on arrays).

The head sees every view at once. To tell which view of a cell looks unlike the product's
good cells, the head is also run once per view with every other view replaced by the
product's typical good view (the good cells' mean inspection features): ``view_batch``
builds those rows, so one head run over 1 + V rows gives the cell's margins
m = logit(NG) - logit(OK) as captured (``cell``) and per view. ``calibrated`` normalises
each by the good cells' location and scale and keeps the largest: a view whose margin is
unusual for this product counts, whatever the others do.

>>> import numpy as np
>>> calibrated(np.array([[-3.0, -1.0, 2.0]]), np.array([-4.0, -2.0, -4.0]), np.ones(3))
array([6.])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from collections.abc import Sequence

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]

CELL = "cell"
MAD_TO_SD = 1.4826


def view_batch(cell: Sequence[F32Array], typical: Sequence[F32Array]) -> list[F32Array]:
    """Per view, the head's inspection input of 1 + V rows for one cell.

    ``cell`` and ``typical``: per view a (1, C, h, w) map. Row 0 is the cell as captured;
    row 1 + v holds the cell's view v and the typical good map of every other view.
    """
    views = len(cell)
    out = []
    for w in range(views):
        rows = [cell[w]] + [cell[w] if v == w else typical[w] for v in range(views)]
        out.append(np.concatenate(rows, axis=0).astype(np.float32, copy=False))
    return out


def calibrated(margins: F64Array, location: F64Array, scale: F64Array) -> F64Array:
    """(N, K) margins -> (N,) the largest of (margin - location) / scale per row."""
    u = (np.asarray(margins, np.float64) - location) / scale
    return np.asarray(u.max(axis=1), dtype=np.float64)


def robust_scale(margins: F64Array, floor: float) -> tuple[F64Array, F64Array]:
    """Per column of (N, K) margins: the median and 1.4826 x MAD, at least ``floor``.

    >>> loc, sc = robust_scale(np.array([[0.0, 1.0], [1.0, 1.0], [3.0, 1.0]]), 0.25)
    >>> loc.tolist(), sc.tolist()
    ([1.0, 1.0], [1.4826, 0.25])
    """
    m = np.asarray(margins, np.float64)
    location = np.median(m, axis=0)
    scale = np.maximum(MAD_TO_SD * np.median(np.abs(m - location), axis=0), floor)
    return np.asarray(location, np.float64), np.asarray(scale, np.float64)


def leave_one_out_means(stack: F32Array) -> F32Array:
    """(N, C, h, w) good maps -> (N, 1, C, h, w): each map's mean over the other N - 1."""
    n = stack.shape[0]
    total = stack.sum(axis=0, keepdims=True, dtype=np.float64)
    return np.asarray((total - stack) / (n - 1), dtype=np.float32)[:, None]
