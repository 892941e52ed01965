"""Train the six-view reference-compare network (seed 000) and ship it as two ONNX graphs.

    python -m linevision.train.six_view --data DIR [DIR ...] --val DIR --test DIR \
        --out models/six_view

Each dataset folder is one product design with its six reference views, so training on
several folders (several designs) teaches the comparison rather than one product. The patent's
network, built as:

- **One shared encoder with spatial attention** for all twelve views: the frozen ImageNet
  EfficientNet-Lite0 stem and blocks 0-4 (stride 8; gray folded onto the RGB stem), then a
  trainable 1x1 conv-BN-ReLU to ``DIM`` channels (the conv features) multiplied position-wise
  by a sigmoid spatial map (a 3x3 conv of those features). Each view keeps its native size
  (faces 384 x 256, end edges 64 x 256, long edges 64 x 384, multiples of 32, so the
  TensorFlow padding stays exact); the sizes are recorded per view in the manifest and the
  runtime resizes any other capture to them. The frozen stem lets training cache its features.
- **Position-wise difference** of each inspection map and its reference map, made tolerant of
  the cameras' misalignment: per channel, how far the inspection value lies outside the range
  of the reference values in the 3 x 3 cells around (zero inside), minus the view's mean
  difference. A shared 1x1 conv-BN-ReLU over [difference, inspection features] per view, max
  pooling onto a common 8 x 16 grid (faces 6 x 2, end edges 1 x 2, long edges 1 x 3), the six
  maps concatenated on channels.
- **Second CNN with channel attention**: two 3x3 conv-BN-ReLU layers, each followed by
  squeeze-excitation (global average pool -> FC -> ReLU -> FC -> sigmoid channel weights).
- **Class-representation flattening**: x * exp(t * (x - mean)) / mean(exp(t * (x - mean))) per
  channel over the grid (t learned per channel), then the grid mean: a learned normalisation
  between average pooling (t = 0) and max pooling (large t).
- **Fully connected** layer -> (OK, NG) logits for the whole cell.

``encoder.onnx`` maps one view (any of the six sizes) to its attended feature map;
``head.onnx`` maps six inspection and six reference maps to logits, so the runtime encodes
each view as it arrives and the references once per recipe.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Final

import torch
from torch import nn
from torch.nn import functional

from linevision.inference import residual as pixel_residual
from linevision.inference.manifest import InputSpec, Normalisation, ViewSpec
from linevision.log import configure, get_logger
from linevision.synth import six_view as synth
from linevision.train import anomaly, mode
from linevision.train._cells import Station
from linevision.train._shipping import parse_args, run
from linevision.train.anomaly import AnomalyStation
from linevision.train.budget import run_interruptibly
from linevision.train.efficientnet_lite import PIXEL_MEAN, PIXEL_STD, STRIDE_CHANNELS

if TYPE_CHECKING:
    from collections.abc import Sequence

NAME: Final = "six_view"
STRIDE: Final = 8
STRIDES: Final = (4, 8)
DIM: Final = 16
GRID: Final = (8, 16)
WIDTH: Final = 48
SE_REDUCTION: Final = 4
FLATTEN_LIMIT: Final = 30.0
VIEWS: Final = tuple(
    ViewSpec(
        name=str(view),
        height=shape[0],
        width=shape[1],
        inspection_input=f"inspection_{view}",
        reference_input=f"reference_{view}",
    )
    for view, shape in zip(synth.VIEWS, synth.VIEW_SHAPES, strict=True)
)


def pools(views: Sequence[ViewSpec], stride: int = STRIDE) -> tuple[tuple[int, int], ...]:
    """Max-pool sizes that bring each view's stem map onto the common grid."""
    return tuple((v.height // stride // GRID[0], v.width // stride // GRID[1]) for v in views)


INPUT = InputSpec(name="image", channels=1, height=VIEWS[0].height, width=VIEWS[0].width)
NORM = Normalisation(scale=1.0, mean=(PIXEL_MEAN,), std=(PIXEL_STD,))

log = get_logger(__name__)


def conv_bn(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SpatialAttention(nn.Module):
    """Conv features times a sigmoid spatial map computed from them (position-wise product)."""

    def __init__(self, cin: int, dim: int) -> None:
        super().__init__()
        self.features = conv_bn(cin, dim, kernel=1)
        self.map = nn.Conv2d(dim, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f: torch.Tensor = self.features(x)
        return f * torch.sigmoid(self.map(f))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(functional.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * w[:, :, None, None]


class ClassFlatten(nn.Module):
    """x * exp(t (x - mean)) / mean(exp(t (x - mean))) over the grid, then the grid mean."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.t = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = (x - x.mean(dim=(2, 3), keepdim=True)) * self.t
        weight = torch.exp(torch.clamp(centred, max=FLATTEN_LIMIT))
        weight = weight / weight.mean(dim=(2, 3), keepdim=True)
        return (x * weight).mean(dim=(2, 3))


class EnvelopeDifference(nn.Module):
    """Position-wise difference that tolerates a shift of one cell (8 px) of the reference.

    Per channel: how far the inspection feature lies above the largest or below the smallest
    reference value of the 3 x 3 cells around the position (zero inside that range), minus the
    view's mean difference (the capture's own gain and lighting).
    """

    def forward(self, inspection: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        high = functional.max_pool2d(reference, 3, stride=1, padding=1)
        low = -functional.max_pool2d(-reference, 3, stride=1, padding=1)
        d = functional.relu(inspection - high) - functional.relu(low - inspection)
        return d - d.mean(dim=(2, 3), keepdim=True)


class Head(nn.Module):
    """Six inspection maps and six reference maps -> (OK, NG) logits.

    With ``extra`` > 0 each inspection map carries that many channels after its ``DIM``
    features (the pixel residual, ``linevision.inference.residual``); they join the
    difference and the inspection features in the per-view 1x1 conv.
    """

    def __init__(
        self, views: Sequence[ViewSpec] = VIEWS, stride: int = STRIDE, extra: int = 0
    ) -> None:
        super().__init__()
        self.pools = pools(views, stride)
        self.aligned = EnvelopeDifference()
        self.difference = conv_bn(2 * DIM + extra, DIM, kernel=1)
        channels = DIM * len(views)
        self.cnn = nn.Sequential(
            conv_bn(channels, WIDTH),
            SqueezeExcitation(WIDTH, SE_REDUCTION),
            conv_bn(WIDTH, WIDTH),
            SqueezeExcitation(WIDTH, SE_REDUCTION),
        )
        self.flatten = ClassFlatten(WIDTH)
        self.fc = nn.Linear(WIDTH, 2)

    def forward(
        self, inspections: list[torch.Tensor], references: list[torch.Tensor]
    ) -> torch.Tensor:
        maps = []
        for insp, ref, pool in zip(inspections, references, self.pools, strict=True):
            features, extra = insp[:, :DIM], insp[:, DIM:]
            d = self.difference(torch.cat([self.aligned(features, ref), features, extra], dim=1))
            maps.append(functional.max_pool2d(d, pool) if pool != (1, 1) else d)
        x = self.cnn(torch.cat(maps, dim=1))
        logits: torch.Tensor = self.fc(self.flatten(x))
        return logits


class Trainable(nn.Module):
    """The trained layers: the encoder's spatial attention (after the frozen stem), the head."""

    def __init__(
        self, views: Sequence[ViewSpec] = VIEWS, stride: int = STRIDE, extra: int = 0
    ) -> None:
        super().__init__()
        self.adapter = SpatialAttention(STRIDE_CHANNELS[stride], DIM)
        self.head = Head(views, stride, extra)


STATION = Station(
    name=NAME,
    views=VIEWS,
    input_spec=INPUT,
    normalisation=NORM,
    stride=STRIDE,
    build=Trainable,
    architecture=(__doc__ or "").split("The patent's", 1)[-1].strip(),
    dynamic_size=True,
    align="affine",
)


def scaled(factor: int, stride: int = STRIDE, *, residual: pixel_residual.Mode = "none") -> Station:
    """The station with every view ``factor`` times larger and features at ``stride``.

    ``factor`` 2 gives finer features at ~5x the time; ``stride`` 4 (the stem's blocks 0-2,
    24 channels) gives the same grid as scale 2 at less than scale 1's stem cost, with
    shallower features. The runtime resizes each capture to the manifest's view sizes, so a
    model trained either way runs unchanged; sizes stay multiples of 32 and fit the common
    grid for any whole factor.
    """
    if factor < 1:
        msg = f"--view-scale must be a whole number >= 1, got {factor}"
        raise ValueError(msg)
    if stride not in STRIDES:
        msg = f"--stride must be one of {STRIDES}, got {stride}"
        raise ValueError(msg)
    if factor == 1 and stride == STRIDE and residual == "none":
        return STATION
    views = tuple(
        v.model_copy(update={"height": v.height * factor, "width": v.width * factor}) for v in VIEWS
    )
    size = {"height": views[0].height, "width": views[0].width}
    return replace(
        STATION,
        views=views,
        input_spec=INPUT.model_copy(update=size),
        stride=stride,
        build=partial(Trainable, views, stride, pixel_residual.CHANNELS[residual]),
        residual=residual,
    )


ANOMALY = AnomalyStation(
    replace(STATION, residual="envelope_edges"), tolerance=1, photometric="match_reference"
)
"""Anomaly mode: each view registered onto its reference, matched to its grey levels and
encoded by the stem, with the residual channels; a part may sit one cell (8 px) off."""


def main(argv: Sequence[str] | None = None) -> int:
    configure(fmt="json")
    config = parse_args(NAME, argv, view_scale=True)
    log.info("train_start", **{k: str(v) for k, v in vars(config).items()})
    if mode.resolve(config.mode, (*config.data, *config.val), NAME) == "anomaly":
        setup = (
            ANOMALY if config.tolerance is None else replace(ANOMALY, tolerance=config.tolerance)
        )
        return run_interruptibly(lambda: anomaly.run(setup, config).training, config.out)
    station = scaled(config.view_scale, config.stride, residual=config.residual)
    return run_interruptibly(lambda: run(station, config).training, config.out)


if __name__ == "__main__":
    sys.exit(main())
