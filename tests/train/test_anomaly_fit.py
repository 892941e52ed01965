"""The anomaly model's statistics (numpy) and its ONNX head (torch) compute the same scores."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

pytest.importorskip("torch")

import torch

from linevision.train import anomaly_fit
from linevision.train.anomaly_head import ViewGaussians


def test_doctests() -> None:
    failures, tried = doctest.testmod(anomaly_fit)
    assert tried > 0
    assert failures == 0


def _fitted(tolerance: int) -> tuple[anomaly_fit.ViewFit, np.ndarray]:
    rng = np.random.default_rng(3)
    good = rng.normal(size=(30, 5, 4, 6)).astype(np.float32)
    fit = anomaly_fit.fit_view(good, tolerance)
    held_out = anomaly_fit.cross_fit(good, anomaly_fit.folds_of(30, 0), tolerance)
    return anomaly_fit.normalise(fit, held_out), good


@pytest.mark.parametrize("tolerance", [0, 1, 2])
def test_the_head_scores_as_the_fit(tolerance: int) -> None:
    fit, _ = _fitted(tolerance)
    rng = np.random.default_rng(4)
    cells = rng.normal(size=(4, 5, 4, 6)).astype(np.float32)
    cells[0, :, 0, 5] += 6.0  # a corner: the edge handling of the tolerance
    cells[1, :, 2, 2] -= 6.0
    want = anomaly_fit.view_scores(anomaly_fit.distances(cells, fit))
    head = ViewGaussians(fit, features=5, view_location=0.5, view_spread=2.0)
    reference = torch.zeros(1, 5, 4, 6)
    got = head(torch.from_numpy(cells), reference).numpy()
    np.testing.assert_allclose(got, (want - 0.5) / 2.0, rtol=1e-4, atol=1e-4)


def test_a_defect_is_not_hidden_by_a_good_neighbour() -> None:
    """The tolerance lets a location match a neighbour's Gaussian, never lets a neighbour's
    good vector stand in for a defective one."""
    fit, good = _fitted(1)
    cell = good[:1].copy()
    cell[0, :, 2, 3] += 8.0
    maps = anomaly_fit.distances(cell, fit)
    assert np.unravel_index(int(np.argmax(maps)), maps.shape)[1:] == (2, 3)
    assert maps.max() > 5.0 * np.median(maps)


def test_ng_cells_lower_the_threshold_but_not_below_the_good_floor() -> None:
    good = np.linspace(0.0, 10.0, 101)
    alone = anomaly_fit.good_threshold(good)
    assert anomaly_fit.refined_threshold(good, np.array([])) == alone
    assert anomaly_fit.refined_threshold(good, np.array([alone + 5.0])) == alone
    assert anomaly_fit.refined_threshold(good, np.array([9.9, 20.0])) == pytest.approx(9.9)
    floor = float(np.quantile(good, anomaly_fit.FLOOR_QUANTILE))
    assert anomaly_fit.refined_threshold(good, np.array([1.0])) == pytest.approx(floor)


def test_too_few_cells_for_a_covariance() -> None:
    with pytest.raises(ValueError, match="at least 2 good cells"):
        anomaly_fit.fit_view(np.zeros((1, 2, 2, 2), np.float32), 0)
