"""Train the seal-edge reference-compare network (seed 001) and ship it as two ONNX graphs.

    python -m linevision.train.seal_edge --data DIR --val DIR --test DIR --out models/seal_edge

The patent's "dual detection network", built as:

- **Twin encoders, shared weights**: the frozen ImageNet EfficientNet-Lite0 stem and blocks
  0-4 (stride 8, 40 channels; the gray strip is folded onto the RGB stem), then a trainable
  1x1 conv + BatchNorm + ReLU adapter to ``DIM`` channels. The same encoder turns the
  inspection strip and the reference strip into 16 x 64 feature maps. Keeping the
  pretrained part frozen lets training cache its features once per image (onnxruntime),
  so only the adapter and the head are trained, in minutes on two cores.
- **Inter-feature attention interaction**: multi-head cross-attention with queries from the
  inspection features and keys/values from the reference features (pooled to 16 x 8 along the
  strip), learned row and column position embeddings on queries and keys. The interaction
  map is a 1x1 conv over [inspection, attended reference, their difference].
- **Distribution gain**: each interaction channel is standardised with a learned centre and
  scale, z, and multiplied by 1 + lambda * (pi(z) - pi(0)) / (1 - pi(0)) where pi(z) =
  Cauchy(z) / (Cauchy(z) + Gauss(z)) is the posterior that z comes from the heavy-tailed
  (defect) rather than the Gaussian (normal variation) density; ``GAIN_WEIGHT`` is lambda.
- **Classifier**: two 3x3 conv-BN-ReLU layers (the second stride 2), global average and max
  pooling, linear -> (OK, NG) logits.

``encoder.onnx`` maps an image to features, ``head.onnx`` maps (inspection features,
reference features) to logits, so the runtime encodes the reference once per recipe.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Final

import torch
from torch import nn
from torch.nn import functional

from linevision.inference.manifest import InputSpec, Normalisation, ViewSpec
from linevision.log import configure, get_logger
from linevision.synth import seal_edge as synth
from linevision.train import anomaly, mode
from linevision.train._cells import Station
from linevision.train._shipping import parse_args, run
from linevision.train.anomaly import AnomalyStation
from linevision.train.budget import run_interruptibly
from linevision.train.efficientnet_lite import PIXEL_MEAN, PIXEL_STD, STRIDE_CHANNELS

if TYPE_CHECKING:
    from collections.abc import Sequence

NAME: Final = "seal_edge"
STRIDE: Final = 8
DIM: Final = 48
HEADS: Final = 4
REF_POOL: Final = 8
GAIN_WEIGHT: Final = 1.0
INPUT = InputSpec(name="image", channels=1, height=synth.HEIGHT, width=synth.WIDTH)
NORM = Normalisation(scale=1.0, mean=(PIXEL_MEAN,), std=(PIXEL_STD,))
VIEW = ViewSpec(
    name="seal",
    height=synth.HEIGHT,
    width=synth.WIDTH,
    inspection_input="inspection",
    reference_input="reference",
)
GRID: Final = (synth.HEIGHT // STRIDE, synth.WIDTH // STRIDE)

log = get_logger(__name__)


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class CrossAttention(nn.Module):
    """Multi-head attention: queries from the inspection map, keys/values from the reference."""

    def __init__(self, dim: int, heads: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.rows = nn.Parameter(torch.zeros(1, dim, grid[0], 1))
        self.cols = nn.Parameter(torch.zeros(1, dim, 1, grid[1]))
        nn.init.normal_(self.rows, std=0.5)
        nn.init.normal_(self.cols, std=0.5)
        self.q = nn.Conv2d(dim, dim, 1)
        self.k = nn.Conv2d(dim, dim, 1)
        self.v = nn.Conv2d(dim, dim, 1)
        self.out = nn.Conv2d(dim, dim, 1)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        return x.reshape(n, self.heads, c // self.heads, -1)

    def forward(self, inspection: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        pos = self.rows + self.cols
        pos_ref = functional.avg_pool2d(pos, (1, REF_POOL))
        reference = functional.avg_pool2d(reference, (1, REF_POOL))
        reference = reference + torch.zeros_like(inspection[:, :1, :1, :1])
        q = self._tokens(self.q(inspection + pos))
        k = self._tokens(self.k(reference + pos_ref))
        v = self._tokens(self.v(reference))
        attention = torch.softmax(torch.einsum("nhdq,nhdk->nhqk", q, k) * self.scale, dim=-1)
        attended = torch.einsum("nhqk,nhdk->nhdq", attention, v)
        y: torch.Tensor = self.out(attended.reshape(inspection.shape))
        return y


class DistributionGain(nn.Module):
    """x * (1 + w * (pi(z) - pi(0)) / (1 - pi(0))), pi = Cauchy / (Cauchy + Gauss) at z.

    z = (x - centre) / scale per channel, both learned; the gain rises from 1 for z near 0
    (where the Gaussian density dominates) to 1 + w for outliers (heavy Cauchy tail).
    """

    def __init__(self, channels: int, weight: float) -> None:
        super().__init__()
        self.weight = weight
        self.centre = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.pi0 = 1.0 / (1.0 + math.sqrt(math.pi / 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z2 = ((x - self.centre) * torch.exp(-self.log_scale)) ** 2
        gauss_over_cauchy = math.sqrt(math.pi / 2.0) * (1.0 + z2) * torch.exp(-0.5 * z2)
        posterior = 1.0 / (1.0 + gauss_over_cauchy)
        return x * (1.0 + self.weight * (posterior - self.pi0) / (1.0 - self.pi0))


class Head(nn.Module):
    """(inspection features, reference features) -> (OK, NG) logits."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = CrossAttention(DIM, HEADS, GRID)
        self.interaction = nn.Sequential(
            nn.Conv2d(3 * DIM, DIM, 1, bias=False), nn.BatchNorm2d(DIM)
        )
        self.gain = DistributionGain(DIM, GAIN_WEIGHT)
        self.classifier = nn.Sequential(conv_bn(DIM, DIM), conv_bn(DIM, DIM, stride=2))
        self.fc = nn.Linear(2 * DIM, 2)

    def forward(
        self, inspections: list[torch.Tensor], references: list[torch.Tensor]
    ) -> torch.Tensor:
        (inspection,), (reference,) = inspections, references
        attended = self.attention(inspection, reference)
        mixed = torch.cat([inspection, attended, inspection - attended], dim=1)
        x = functional.relu(self.gain(self.interaction(mixed)))
        x = self.classifier(x)
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        logits: torch.Tensor = self.fc(pooled)
        return logits


class Trainable(nn.Module):
    """The trained layers: the encoder's adapter (after the frozen stem) and the head."""

    def __init__(self) -> None:
        super().__init__()
        self.adapter = conv_bn(STRIDE_CHANNELS[STRIDE], DIM, kernel=1)
        self.head = Head()


STATION = Station(
    name=NAME,
    views=(VIEW,),
    input_spec=INPUT,
    normalisation=NORM,
    stride=STRIDE,
    build=Trainable,
    architecture=(__doc__ or "").split("The patent's", 1)[-1].strip(),
    dynamic_size=False,
)


ANOMALY = AnomalyStation(STATION, tolerance=0, photometric="none")
"""Anomaly mode: the strip as captured (a seal's place on it is part of what is judged, so
no registration and no tolerance), the stem's features only."""


def main(argv: Sequence[str] | None = None) -> int:
    configure(fmt="json")
    config = parse_args(NAME, argv)
    log.info("train_start", **{k: str(v) for k, v in vars(config).items()})
    if mode.resolve(config.mode, (*config.data, *config.val), NAME) == "anomaly":
        setup = (
            ANOMALY if config.tolerance is None else replace(ANOMALY, tolerance=config.tolerance)
        )
        return run_interruptibly(lambda: anomaly.run(setup, config).training, config.out)
    return run_interruptibly(lambda: run(STATION, config).training, config.out)


if __name__ == "__main__":
    sys.exit(main())
