"""The ONNX head of an anomaly model: the fitted Gaussians of every view as one graph.

Inputs are the runtime's (``linevision.inference.reference``): per view the inspection
features (the frozen stem's, then any pixel residual channels) and the reference's stem
features. Per view the graph takes the inspection less the reference, appends the
compressed residual channels, divides by the good cells' channel spreads, measures the
Mahalanobis distance at every location (the least over the locations within the tolerance),
normalises it per location and returns the largest value, normalised by the good cells'
view scores: output ``view_scores`` (N, views). The cell's score is their largest; the
threshold lives in the manifest (``AnomalySpec``), so it travels with the graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np
import torch
from torch import nn

from linevision.train.anomaly_fit import RESIDUAL_GAIN, ViewFit, shift_tables

if TYPE_CHECKING:
    from collections.abc import Sequence

OUTPUT: Final = "view_scores"


class ViewGaussians(nn.Module):
    """One view's fitted Gaussians (``ViewFit``) and its score normalisation."""

    scale: torch.Tensor
    mean: torch.Tensor
    precision: torch.Tensor
    location: torch.Tensor
    spread: torch.Tensor
    gather: torch.Tensor
    select: torch.Tensor

    def __init__(
        self, fit: ViewFit, features: int, view_location: float, view_spread: float
    ) -> None:
        super().__init__()
        if fit.location is None or fit.spread is None:
            msg = "the view's fit has no per-location normalisation (normalise it first)"
            raise ValueError(msg)
        self.features = features
        self.residual = fit.scale.shape[0] > features
        self.register_buffer("scale", torch.from_numpy(fit.scale.reshape(1, -1, 1, 1)))
        self.register_buffer("mean", torch.from_numpy(fit.mean[:, None, :]))
        self.register_buffer("precision", torch.from_numpy(fit.precision))
        self.register_buffer("location", torch.from_numpy(fit.location[:, None]))
        self.register_buffer("spread", torch.from_numpy(fit.spread[:, None]))
        gather, select = shift_tables(fit.shape, fit.tolerance)
        self.count = gather.shape[0]
        self.register_buffer("gather", torch.from_numpy(gather.reshape(-1)))
        self.register_buffer("select", torch.from_numpy(select))
        self.view_location = float(view_location)
        self.view_spread = float(view_spread)

    def forward(self, inspection: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        difference = inspection[:, : self.features] - reference
        if self.residual:
            residual = torch.log1p(torch.abs(inspection[:, self.features :]) * RESIDUAL_GAIN)
            difference = torch.cat([difference, residual], dim=1)
        z = difference / self.scale
        n, c = z.shape[0], z.shape[1]
        x = z.flatten(2).permute(2, 0, 1)  # (L, N, C)
        locations = x.shape[0]
        if self.count == 1:
            d = x - self.mean  # (L, N, C)
            m = (torch.matmul(d, self.precision) * d).sum(dim=-1)  # (L, N)
        else:
            # every Gaussian once, on the vectors of the locations it may stand for
            moved = torch.index_select(x, 0, self.gather).reshape(self.count, locations, n, c)
            d = moved.permute(1, 0, 2, 3).reshape(locations, self.count * n, c) - self.mean
            scored = (torch.matmul(d, self.precision) * d).sum(dim=-1)  # (L, S * N)
            flat = scored.reshape(locations * self.count, n)
            picked = torch.index_select(flat, 0, self.select.reshape(-1))
            m = picked.reshape(self.count, locations, n).amin(dim=0)  # (L, N)
        distance = torch.sqrt(torch.clamp(m, min=0.0))
        normalised = (distance - self.location) / self.spread  # (L, N)
        return (normalised.amax(dim=0) - self.view_location) / self.view_spread


class AnomalyHead(nn.Module):
    """Every view's inspection and reference features -> (N, views) normalised scores."""

    def __init__(self, views: Sequence[ViewGaussians]) -> None:
        super().__init__()
        self.views = nn.ModuleList(views)

    def forward(
        self, inspections: list[torch.Tensor], references: list[torch.Tensor]
    ) -> torch.Tensor:
        scores = [
            view(i, r) for view, i, r in zip(self.views, inspections, references, strict=True)
        ]
        return torch.stack(scores, dim=1)


def cell_scores(view_scores: np.ndarray) -> np.ndarray:
    """(N, views) -> (N,) the cell's score u, the largest over its views."""
    return np.asarray(np.asarray(view_scores, np.float64).max(axis=1), dtype=np.float64)
