"""The statistics of an anomaly model: the good cells' Gaussian at every location of a view.

Pure numpy (no torch): ``linevision.train.anomaly`` computes the features, this module fits
them, and ``linevision.train.anomaly_head`` turns the fit into the ONNX head.

Per view, each good cell gives a feature vector z at every location of the feature map (the
encoder's features less the reference's, and the pixel residual channels compressed by
log1p(4 |r|)), each channel divided by its spread over the good cells. At each location the
good vectors have a mean and a covariance, shrunk towards a multiple of the identity
(``SHRINKAGE``) so that a few dozen cells give a usable inverse. A cell's distance at a
location is the Mahalanobis distance of its vector there, the least over the vectors within
``tolerance`` cells (a part placed one cell away is not a defect), then normalised by the
good cells' own distances at that location (median and spread, from cells the fit did not
see: ``cross_fit``). A view's score is the largest over its map, normalised again by the
good cells' view scores; the cell's score u is the largest over the views.

>>> rng = np.random.default_rng(0)
>>> good = rng.normal(size=(40, 3, 4, 5)).astype(np.float32)
>>> fit = fit_view(good, tolerance=0)
>>> maps = distances(good[:2], fit)
>>> maps.shape
(2, 4, 5)
>>> bad = good[:1].copy(); bad[0, :, 2, 3] += 12.0
>>> bool(distances(bad, fit)[0, 2, 3] > 3 * maps.max())
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]

SHRINKAGE: Final = 0.1
"""Covariance = (1 - s) x sample covariance + s x (its mean variance) x identity."""
MAD_TO_SD: Final = 1.4826
SPREAD_FLOOR: Final = 0.25
"""A location's spread is at least this share of the view's median spread (a location
where the good cells barely vary must not turn noise into huge scores)."""
FOLDS: Final = 5
RESIDUAL_GAIN: Final = 4.0
"""Residual channels enter as log1p(4 |r|): large residuals are compressed, so the good
cells' occasional large ones do not dominate their covariance."""


@dataclass(frozen=True)
class ViewFit:
    """One view's Gaussians: per-channel ``scale`` (C,), ``mean`` (H*W, C), ``precision``
    (H*W, C, C), ``shape`` (H, W), ``tolerance`` in cells, and after ``normalise`` the
    per-location ``location``/``spread`` (H*W,) of the good cells' distances."""

    scale: F32Array
    mean: F32Array
    precision: F32Array
    shape: tuple[int, int]
    tolerance: int
    location: F32Array | None = None
    spread: F32Array | None = None


def compress_residual(residual: F32Array) -> F32Array:
    """The residual channels as the head sees them: log1p(4 |r|).

    >>> [round(float(v), 3) for v in compress_residual(np.array([0.0, -0.25], np.float32))]
    [0.0, 0.693]
    """
    return np.asarray(np.log1p(np.abs(residual) * RESIDUAL_GAIN), dtype=np.float32)


def fit_view(z: F32Array, tolerance: int, shrinkage: float = SHRINKAGE) -> ViewFit:
    """The Gaussians of (N, C, H, W) good vectors; needs N >= 2."""
    n, c, h, w = z.shape
    if n < 2:
        msg = f"a Gaussian per location needs at least 2 good cells, got {n}"
        raise ValueError(msg)
    scale = np.asarray(z.std(axis=(0, 2, 3)) + 1e-3, dtype=np.float32)
    x = (z / scale[None, :, None, None]).reshape(n, c, h * w).transpose(2, 0, 1)  # (L, N, C)
    mean = x.mean(axis=1)
    centred = x - mean[:, None, :]
    cov = np.matmul(centred.transpose(0, 2, 1), centred) / (n - 1)  # (L, C, C)
    level = np.trace(cov, axis1=1, axis2=2) / c
    eye = np.eye(c, dtype=np.float64)
    cov = (1.0 - shrinkage) * cov + (shrinkage * level[:, None, None] + 1e-6) * eye
    precision = np.linalg.inv(cov).astype(np.float32)
    return ViewFit(scale, mean.astype(np.float32), precision, (h, w), tolerance)


def shift_index(shape: tuple[int, int], tolerance: int) -> npt.NDArray[np.int64]:
    """(S, H*W): for each shift within ``tolerance`` cells, the location whose Gaussian each
    location is compared with (clamped at the map's edges: a shift already in the set).

    >>> shift_index((2, 3), 1).shape, shift_index((2, 3), 0).tolist()
    ((9, 6), [[0, 1, 2, 3, 4, 5]])
    """
    h, w = shape
    rows, cols = np.arange(h), np.arange(w)
    out = []
    for dy in range(-tolerance, tolerance + 1):
        for dx in range(-tolerance, tolerance + 1):
            ys = np.clip(rows + dy, 0, h - 1)
            xs = np.clip(cols + dx, 0, w - 1)
            out.append((ys[:, None] * w + xs[None, :]).ravel())
    return np.asarray(out, dtype=np.int64)


def shift_tables(
    shape: tuple[int, int], tolerance: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``raw_distances`` with each Gaussian read once: (gather, select), both (S, H*W).

    Location k's Gaussian scores the vectors of locations ``gather[s, k]`` = k - shift s:
    M[k, s]. Location l's distance is then the least of M.ravel()[select[s, l]] over s, with
    ``select[s, l]`` = (l + shift s) * S + s where l + shift s is on the map, else l's own
    unshifted entry (shifts off the map are other shifts of the set, clamped).

    >>> gather, select = shift_tables((1, 3), 1)  # a row of 3; shifts 3-5: dx -1, 0, +1
    >>> gather[3:6].tolist()
    [[1, 2, 2], [0, 1, 2], [0, 0, 1]]
    >>> select[3:6].tolist()
    [[4, 3, 12], [4, 13, 22], [14, 23, 22]]
    """
    h, w = shape
    moves = [
        (dy, dx)
        for dy in range(-tolerance, tolerance + 1)
        for dx in range(-tolerance, tolerance + 1)
    ]
    centre = moves.index((0, 0))
    count = len(moves)
    ys, xs = np.divmod(np.arange(h * w), w)
    gather = np.empty((count, h * w), dtype=np.int64)
    select = np.empty((count, h * w), dtype=np.int64)
    own = np.arange(h * w) * count + centre
    for s, (dy, dx) in enumerate(moves):
        src_y, src_x = ys - dy, xs - dx
        inside = (src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)
        gather[s] = np.where(inside, src_y * w + src_x, np.arange(h * w))
        dst_y, dst_x = ys + dy, xs + dx
        onto = (dst_y >= 0) & (dst_y < h) & (dst_x >= 0) & (dst_x < w)
        select[s] = np.where(onto, (dst_y * w + dst_x) * count + s, own)
    return gather, select


CHUNK: Final = 64


def raw_distances(z: F32Array, fit: ViewFit) -> F32Array:
    """(N, H, W) Mahalanobis distances of (N, C, H, W) vectors, the least within tolerance."""
    if z.shape[0] > CHUNK:
        parts = [raw_distances(z[i : i + CHUNK], fit) for i in range(0, z.shape[0], CHUNK)]
        return np.concatenate(parts)
    n, c = z.shape[:2]
    h, w = fit.shape
    x = (z / fit.scale[None, :, None, None]).reshape(n, c, h * w).transpose(2, 0, 1)
    best = np.full((h * w, n), np.inf, dtype=np.float32)
    for index in shift_index(fit.shape, fit.tolerance):
        # each location's own vector against the Gaussian of a location within tolerance: a
        # defect must itself look like good there (a good neighbour may not stand in for it)
        d = x - fit.mean[index][:, None, :]  # (L, N, C)
        m = np.einsum("lnc,lnc->ln", np.matmul(d, fit.precision[index]), d)
        best = np.minimum(best, np.sqrt(np.maximum(m, 0.0)).astype(np.float32))
    return np.asarray(best.T.reshape(n, h, w), dtype=np.float32)


def distances(z: F32Array, fit: ViewFit) -> F32Array:
    """``raw_distances``, normalised per location once ``normalise`` has set the spreads."""
    raw = raw_distances(z, fit)
    if fit.location is None or fit.spread is None:
        return raw
    h, w = fit.shape
    return np.asarray(
        (raw - fit.location.reshape(h, w)) / fit.spread.reshape(h, w), dtype=np.float32
    )


def robust(values: F64Array | F32Array, axis: int = 0) -> tuple[F64Array, F64Array]:
    """Median and 1.4826 x MAD along ``axis``."""
    v = np.asarray(values, dtype=np.float64)
    median = np.median(v, axis=axis)
    spread = MAD_TO_SD * np.median(np.abs(v - np.expand_dims(median, axis)), axis=axis)
    return np.asarray(median, np.float64), np.asarray(spread, np.float64)


def folds_of(n: int, seed: int, folds: int = FOLDS) -> npt.NDArray[np.int64]:
    """Fold number of each of ``n`` cells, as even as can be, in a seeded random order."""
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n) % folds
    return out


def cross_fit(z: F32Array, fold: npt.NDArray[np.int64], tolerance: int) -> F32Array:
    """(N, H, W) raw distances of every good cell, each from a fit without its fold."""
    out = np.empty((z.shape[0], *z.shape[2:]), dtype=np.float32)
    for k in np.unique(fold):
        held = fold == k
        out[held] = raw_distances(z[held], fit_view(z[~held], tolerance))
    return out


def normalise(fit: ViewFit, held_out: F32Array) -> ViewFit:
    """``fit`` with per-location location and spread from (N, H, W) held-out raw distances."""
    n = held_out.shape[0]
    location, spread = robust(held_out.reshape(n, -1))
    floor = SPREAD_FLOOR * float(np.median(spread))
    spread = np.maximum(spread, max(floor, 1e-6))
    return ViewFit(
        fit.scale,
        fit.mean,
        fit.precision,
        fit.shape,
        fit.tolerance,
        location.astype(np.float32),
        spread.astype(np.float32),
    )


def view_scores(maps: F32Array) -> F64Array:
    """(N, H, W) normalised maps -> (N,) the largest value of each."""
    return np.asarray(maps.reshape(maps.shape[0], -1).max(axis=1), dtype=np.float64)


def view_scale(scores: F64Array) -> tuple[float, float]:
    """Location and spread of one view's good scores (the spread at least 1e-3)."""
    location, spread = robust(scores)
    return float(location), max(float(spread), 1e-3)


GOOD_QUANTILE: Final = 0.9
GOOD_MARGIN: Final = 2.0
NG_RECALL: Final = 0.99
FLOOR_QUANTILE: Final = 0.98
RULE_GOOD: Final = (
    "u >= q90 + 2 x (q90 - median) of the good cells' scores, each good cell scored by "
    "statistics fitted without it (5-fold cross-fit)"
)
RULE_NG: Final = (
    "lowered to keep NG recall 0.99 on the NG cells given, but not below the good cells' "
    "98th percentile (at most 2 % of them rejected)"
)


def good_threshold(good: F64Array) -> float:
    """The threshold from good cells alone (``RULE_GOOD``).

    >>> good_threshold(np.arange(11, dtype=np.float64))
    17.0
    """
    median = float(np.median(good))
    q = float(np.quantile(good, GOOD_QUANTILE))
    return q + GOOD_MARGIN * (q - median)


def refined_threshold(good: F64Array, ng: F64Array) -> float:
    """The threshold with some NG cells (``RULE_NG``): never above ``good_threshold``.

    >>> good = np.arange(11, dtype=np.float64)
    >>> refined_threshold(good, np.array([30.0])), refined_threshold(good, np.array([12.0]))
    (17.0, 12.0)
    >>> refined_threshold(good, np.array([3.0]))  # the floor: the good cells' 98th percentile
    9.8
    """
    upper = good_threshold(good)
    if len(ng) == 0:
        return upper
    keep = np.sort(np.asarray(ng, np.float64))[int(np.floor((1.0 - NG_RECALL) * len(ng)))]
    floor = float(np.quantile(good, FLOOR_QUANTILE))
    return float(min(upper, max(float(keep), floor)))
