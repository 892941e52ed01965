"""ResNet18 with GSConv and multi-head SE attention (seed 002), in plain torch.

``build_resnet18(gsconv=..., mse=...)`` gives the four networks of the seed's ablation:
the plain ResNet18 (both off), ResNet18 + GSConv, ResNet18 + MSE, and the paper's model
(both on). The stem (7x7 stride 2 conv, 3x3 stride 2 max pool), the four stages of two
basic blocks (64, 128, 256, 512 channels), global average pooling and the linear head
are those of ResNet18; the input has one channel.

- GSConv replaces each 3x3 convolution of a residual block: a standard 3x3 convolution
  to half the output channels, a 5x5 depth-wise convolution of that half, both halves
  concatenated and their channels shuffled (groups of two), so every output group mixes
  dense and depth-wise features.
- MSE sits after the block's second convolution, before the residual sum: the SE
  squeeze (global average pool) gives one descriptor per channel; each descriptor is
  lifted to a small embedding and the channels attend to each other through multi-head
  self-attention (8 heads, each over an eighth of the channels); the attended
  descriptors, projected back to one value per channel and added to the squeeze, go
  through the SE excitation (FC-ReLU-FC-sigmoid) that re-weights the channels.
"""

# mypy: disallow-subclassing-any=False
# (torch is optional: without it nn.Module is Any to the type checker)
from __future__ import annotations

import math
from typing import Final

import torch
from torch import nn

STAGE_WIDTHS: Final = (64, 128, 256, 512)
STEM_WIDTH: Final = 64
HEADS: Final = 8
TOKEN_DIM: Final = 8
SE_REDUCTION: Final = 16
DW_KERNEL: Final = 5
STEMS: Final = ("standard", "s2d")


def shuffle_order(channels: int, groups: int) -> list[int]:
    """Channel order that interleaves ``groups`` equal blocks (ShuffleNet's channel shuffle).

    >>> shuffle_order(6, 2)
    [0, 3, 1, 4, 2, 5]
    """
    per_group = channels // groups
    return [g * per_group + i for i in range(per_group) for g in range(groups)]


class GSConv(nn.Module):
    """Half dense 3x3 conv, half depth-wise conv of that, concatenated and shuffled."""

    order: torch.Tensor

    def __init__(self, cin: int, cout: int, stride: int = 1, *, act: bool = True) -> None:
        super().__init__()
        if cout % 2:
            msg = f"GSConv needs an even number of output channels, got {cout}"
            raise ValueError(msg)
        half = cout // 2
        self.dense = nn.Sequential(
            nn.Conv2d(cin, half, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )
        depthwise: list[nn.Module] = [
            nn.Conv2d(half, half, DW_KERNEL, padding=DW_KERNEL // 2, groups=half, bias=False),
            nn.BatchNorm2d(half),
        ]
        if act:
            depthwise.append(nn.ReLU(inplace=True))
        self.depthwise = nn.Sequential(*depthwise)
        order = torch.tensor(shuffle_order(cout, 2), dtype=torch.int64)
        self.register_buffer("order", order, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense: torch.Tensor = self.dense(x)
        return torch.cat((dense, self.depthwise(dense)), dim=1).index_select(1, self.order)


class MultiHeadSE(nn.Module):
    """SE squeeze -> self-attention among channel descriptors -> SE excitation -> re-weight.

    Each channel's descriptor becomes a token (a learned lift of the scalar plus a learned
    per-channel embedding). The ``heads`` heads each take an equal share of the channels
    and attend among them, so the cost grows as C^2 / heads, not C^2 * heads. The
    attended tokens are projected back to one value per channel and added to the squeeze
    (the projection starts at zero: a fresh MSE is a plain SE block).
    """

    def __init__(
        self,
        channels: int,
        heads: int = HEADS,
        token_dim: int = TOKEN_DIM,
        reduction: int = SE_REDUCTION,
    ) -> None:
        super().__init__()
        if channels % heads:
            msg = f"MSE needs channels divisible by heads, got {channels} and {heads}"
            raise ValueError(msg)
        self.heads = heads
        self.channels = channels
        self.token_dim = token_dim
        self.scale = 1.0 / math.sqrt(token_dim)
        self.lift = nn.Linear(1, token_dim)
        self.position = nn.Parameter(torch.zeros(channels, token_dim))
        self.qkv_dim = 3 * token_dim
        self.qkv = nn.Linear(token_dim, self.qkv_dim)
        self.proj = nn.Linear(token_dim, 1)
        hidden = max(channels // reduction, 8)
        self.excite = nn.Sequential(
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
            nn.Sigmoid(),
        )
        nn.init.normal_(self.position, std=0.02)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def attend(self, squeeze: torch.Tensor) -> torch.Tensor:
        """(N, C) descriptors -> (N, C) descriptors after multi-head self-attention."""
        per_head = self.channels // self.heads
        tokens = self.lift(squeeze.unsqueeze(-1)) + self.position
        qkv = self.qkv(tokens).reshape(-1, self.heads, per_head, self.qkv_dim)
        q, k, v = qkv.chunk(3, dim=-1)
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        mixed = torch.matmul(scores.softmax(dim=-1), v).reshape(-1, self.channels, self.token_dim)
        attended: torch.Tensor = squeeze + self.proj(mixed).squeeze(-1)
        return attended

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.mean(dim=(2, 3))
        weights: torch.Tensor = self.excite(self.attend(squeeze))
        return x * weights[:, :, None, None]


def _conv3x3(cin: int, cout: int, stride: int, *, gsconv: bool, act: bool) -> nn.Module:
    if gsconv:
        return GSConv(cin, cout, stride, act=act)
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block; the 3x3 convs may be GSConv, MSE may re-weight the residual."""

    def __init__(
        self, cin: int, cout: int, stride: int = 1, *, gsconv: bool = False, mse: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride, gsconv=gsconv, act=True)
        self.conv2 = _conv3x3(cout, cout, 1, gsconv=gsconv, act=False)
        self.attention: nn.Module = MultiHeadSE(cout) if mse else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.attention(self.conv2(self.conv1(x)))
        out: torch.Tensor = self.relu(residual + self.shortcut(x))
        return out


class ResNet18(nn.Module):
    """One-channel ResNet18; ``gsconv`` and ``mse`` switch the seed-002 changes on.

    ``stem="s2d"`` puts a 2x2 space-to-depth (pixel unshuffle) before the 7x7 stem
    convolution: no pixel is dropped, but the residual stages run at half the side (28 to
    4 for a 224 input instead of 56 to 7), a quarter of the compute.
    """

    def __init__(
        self, num_classes: int, *, gsconv: bool = False, mse: bool = False, stem: str = "standard"
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            msg = f"unknown stem {stem!r}; expected one of {', '.join(STEMS)}"
            raise ValueError(msg)
        s2d = stem == "s2d"
        self.stem = nn.Sequential(
            *([nn.PixelUnshuffle(2)] if s2d else []),
            nn.Conv2d(4 if s2d else 1, STEM_WIDTH, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(STEM_WIDTH),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        blocks: list[nn.Module] = []
        cin = STEM_WIDTH
        for i, width in enumerate(STAGE_WIDTHS):
            stride = 1 if i == 0 else 2
            blocks.append(BasicBlock(cin, width, stride, gsconv=gsconv, mse=mse))
            blocks.append(BasicBlock(width, width, 1, gsconv=gsconv, mse=mse))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x))
        logits: torch.Tensor = self.head(features.mean(dim=(2, 3)))
        return logits


ARCHITECTURES: Final[dict[str, tuple[bool, bool]]] = {
    "resnet18": (False, False),
    "resnet18_gsconv": (True, False),
    "resnet18_mse": (False, True),
    "resnet18_gsconv_mse": (True, True),
}
"""Name -> (gsconv, mse): the four rows of the seed's ablation."""


def build(architecture: str, num_classes: int, stem: str = "standard") -> ResNet18:
    if architecture not in ARCHITECTURES:
        msg = f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}"
        raise ValueError(msg)
    gsconv, mse = ARCHITECTURES[architecture]
    return ResNet18(num_classes, gsconv=gsconv, mse=mse, stem=stem)


def parameter_count(model: nn.Module) -> int:
    return sum(int(p.numel()) for p in model.parameters())


def describe(architecture: str, stem: str = "standard") -> str:
    gsconv, mse = ARCHITECTURES[architecture]
    parts = ["ResNet18 (1 channel)"]
    if stem == "s2d":
        parts.append("2x2 space-to-depth before the stem (stages at 28 to 4 px)")
    if gsconv:
        parts.append(f"GSConv (3x3 dense half, {DW_KERNEL}x{DW_KERNEL} depth-wise half, shuffle)")
    if mse:
        parts.append(f"MSE ({HEADS}-head self-attention over channel descriptors, SE excitation)")
    return " + ".join(parts)
