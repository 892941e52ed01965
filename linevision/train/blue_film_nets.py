"""The blue-film anomaly networks (seed 004): frozen pretrained teacher, small student.

The teacher is EfficientNet-Lite0 up to output stride 8 (40 channels) with its ImageNet
weights, frozen. The student is a plain conv net of the same stride and width that learns to
reproduce the teacher's standardised features on good film only. ``AnomalyGraph`` holds both
and returns the per-position discrepancy, so one ONNX file maps a tile to its anomaly map.

Every network here takes BGR tiles as float32 in 0..255, (N, 3, H, W) with H and W multiples
of 8, and converts them to the teacher's RGB (x - 127) / 128 inside the graph.
"""

from __future__ import annotations

from typing import Final

import torch
from torch import nn
from torch.nn import functional

from linevision.train.efficientnet_lite import (
    PIXEL_MEAN,
    PIXEL_STD,
    STRIDE_BLOCKS,
    STRIDE_CHANNELS,
    load_pretrained,
)

STRIDE: Final = 8
FEATURES: Final = STRIDE_CHANNELS[STRIDE]
STUDENT_WIDTHS: Final = (24, 48, 64)
COSINE_WEIGHT: Final = 0.5


def _bgr_to_input(x: torch.Tensor) -> torch.Tensor:
    return (torch.flip(x, dims=(1,)) - PIXEL_MEAN) / PIXEL_STD


class Teacher(nn.Module):  # type: ignore[misc, unused-ignore]
    """Pretrained stem and blocks up to stride 8, standardised, frozen (no gradients)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        net = load_pretrained()
        self.stem = net._conv_stem  # noqa: SLF001
        self.bn = net._bn0  # noqa: SLF001
        self.blocks = nn.Sequential(*list(net._blocks)[: STRIDE_BLOCKS[STRIDE]])  # noqa: SLF001
        self.register_buffer("mean", torch.zeros(1, FEATURES, 1, 1))
        self.register_buffer("std", torch.ones(1, FEATURES, 1, 1))
        for param in self.parameters():
            param.requires_grad = False
        self.eval()

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.blocks(functional.relu6(self.bn(self.stem(_bgr_to_input(x)))))
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.mean) / self.std

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        with torch.no_grad():
            self.mean.copy_(mean.reshape(1, FEATURES, 1, 1))
            self.std.copy_(std.expand(FEATURES).reshape(1, FEATURES, 1, 1).clamp_min(1e-3))


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def build_student() -> nn.Sequential:
    """Three stride-2 stages of two 3x3 conv-BN-ReLU each, then a 1x1 conv to the features."""
    layers: list[nn.Module] = []
    cin = 3
    for width in STUDENT_WIDTHS:
        layers += _block(cin, width, 2) + _block(width, width, 1)
        cin = width
    layers.append(nn.Conv2d(cin, FEATURES, 1))
    return nn.Sequential(*layers)


class Student(nn.Module):  # type: ignore[misc, unused-ignore]
    """The student network with the same BGR 0..255 input as the teacher."""

    def __init__(self) -> None:
        super().__init__()
        self.net = build_student()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.net(_bgr_to_input(x))
        return y


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE + 0.5 * (1 - cosine) over the channel axis, averaged over positions (seed 004)."""
    mse = (student - teacher).pow(2).mean()
    cosine = functional.cosine_similarity(student, teacher, dim=1).mean()
    return mse + COSINE_WEIGHT * (1.0 - cosine)


def discrepancy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-position anomaly: channel-mean squared error + 0.5 * (1 - cosine), (N, 1, h, w)."""
    mse = (student - teacher).pow(2).mean(dim=1, keepdim=True)
    cosine = functional.cosine_similarity(student, teacher, dim=1).unsqueeze(1)
    return mse + COSINE_WEIGHT * (1.0 - cosine)


class AnomalyGraph(nn.Module):  # type: ignore[misc, unused-ignore]
    """Tile (N, 3, H, W) BGR 0..255 -> anomaly map (N, 1, H / 8, W / 8).

    The map is not smoothed: a 3 px defect covers about one cell at stride 8 of the half
    scale tile, and a 3 x 3 average divided its peak below the good tiles' largest cells.
    """

    def __init__(self, teacher: Teacher, student: Student) -> None:
        super().__init__()
        self.teacher = teacher
        self.student = student

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return discrepancy(self.student(x), self.teacher(x))
