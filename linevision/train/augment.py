"""Augment gray crops the way a production line varies them (used by the classifier loop).

Per crop, in the order the line makes them: the crop's geometry (a multiple of 90 degrees
and flips where the station allows them, a small rotation, a shift of a few pixels; the
border is mirrored), the lighting (a linear gradient across the crop, a gain and an offset),
the sensor's response (gamma), the optics (a Gaussian blur) and the sensor's noise (up to
``noise_factor`` times the noise the crop already has, estimated from its pixel-to-pixel
differences). Everything is drawn from the ``numpy`` generator passed in, so a seed gives
the same batch; the output is uint8 like a camera's.

Which flips a station allows is its geometry's business. For ``pole_piece`` the burr
classes do not depend on the direction the edge runs: Short vs Long is whether the burr
crosses the separator line, Powder and Other are specks and crushed segments. The generator
draws every multiple of 90 degrees and a flip for each crop, so ``EDGE_ANY`` (all eight)
matches it. A line whose crops all show the edge one way round (a fixed camera) passes
``vertical`` or ``horizontal``: only the flip along the edge is drawn (the strip running the
other way), which keeps the foil on its side, and no rotation by 90 degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional

U8Images = npt.NDArray[np.uint8]

ROWS: Final = 2
COLS: Final = 3
EDGE_ANY: Final = "any"
EDGES: Final = (EDGE_ANY, "vertical", "horizontal")
MAD_TO_SIGMA: Final = 1.0 / (0.6745 * math.sqrt(2.0))


@dataclass(frozen=True)
class LineVariation:
    """The ranges one crop's variation is drawn from (uniform unless said otherwise)."""

    gain: float = 0.25
    """Pixel values times 1 +- ``gain``."""
    offset: float = 0.25
    """Plus up to +- ``offset`` times the crop's mean grey level."""
    gamma: tuple[float, float] = (0.75, 1.33)
    """Exponent on the [0, 1] grey level, log-uniform in this range."""
    blur_sigma: float = 1.5
    """Gaussian blur with sigma in [0, ``blur_sigma``] px."""
    noise_factor: float = 2.0
    """Total noise up to this many times the crop's own noise."""
    shift: float = 4.0
    """Translation up to +- ``shift`` px on each axis."""
    rotation: float = 3.0
    """Rotation up to +- ``rotation`` degrees."""
    gradient: float = 0.15
    """Lighting 1 +- ``gradient`` from one side of the crop to the other, any direction."""
    rot90: bool = True
    """Rotate by a random multiple of 90 degrees (square crops only)."""
    flips: tuple[int, ...] = (ROWS, COLS)
    """Tensor dims that may be flipped: ``ROWS`` (top-bottom), ``COLS`` (left-right)."""

    def describe(self) -> str:
        flips = {ROWS: "top-bottom", COLS: "left-right"}
        geometry = ", ".join(
            [*(["rot90"] if self.rot90 else []), *(f"{flips[d]} flip" for d in self.flips)]
        )
        return (
            f"per crop: {geometry or 'no flip'}, rotation +-{self.rotation:g} deg, "
            f"shift +-{self.shift:g} px, lighting gradient +-{self.gradient:.0%}, "
            f"gain +-{self.gain:.0%}, offset +-{self.offset:.0%} of the mean, "
            f"gamma {self.gamma[0]:g}-{self.gamma[1]:g}, blur sigma 0-{self.blur_sigma:g} px, "
            f"noise up to x{self.noise_factor:g}"
        )


def for_edge(edge: str) -> LineVariation:
    """The pole-piece variation for crops whose edge runs ``edge`` (see the module text)."""
    if edge == EDGE_ANY:
        return LineVariation()
    if edge == "vertical":
        return LineVariation(rot90=False, flips=(ROWS,))
    if edge == "horizontal":
        return LineVariation(rot90=False, flips=(COLS,))
    msg = f"edge must be one of {', '.join(EDGES)}, got {edge!r}"
    raise ValueError(msg)


def noise_sigma(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> (N,) noise estimate: the median horizontal difference, as a sigma."""
    diff = (x[..., 1:] - x[..., :-1]).abs().flatten(1)
    return diff.median(dim=1).values * MAD_TO_SIGMA


def _geometry(x: torch.Tensor, spec: LineVariation, rng: np.random.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    crops = []
    for i in range(n):
        crop = x[i : i + 1]
        if spec.rot90 and h == w:
            crop = torch.rot90(crop, int(rng.integers(0, 4)), dims=(ROWS, COLS))
        for dim in spec.flips:
            if rng.random() < 0.5:
                crop = torch.flip(crop, dims=(dim,))
        crops.append(crop)
    x = torch.cat(crops)
    if spec.rotation <= 0 and spec.shift <= 0:
        return x
    angle = np.radians(rng.uniform(-spec.rotation, spec.rotation, n))
    shift = rng.uniform(-spec.shift, spec.shift, (n, 2)) * 2.0 / np.array([w, h])
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = np.cos(angle)
    theta[:, 0, 1], theta[:, 1, 0] = -np.sin(angle), np.sin(angle)
    theta[:, :, 2] = shift
    grid = functional.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=False)
    return functional.grid_sample(x, grid, padding_mode="reflection", align_corners=False)


def _blur(x: torch.Tensor, sigmas: npt.NDArray[np.float64]) -> torch.Tensor:
    """Separable Gaussian blur, one sigma per crop (0: unchanged), mirrored border."""
    n = x.shape[0]
    limit = min(x.shape[2], x.shape[3]) - 1
    radius = min(max(math.ceil(3.0 * float(sigmas.max(initial=0.0))), 1), limit)
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernels = np.zeros((n, len(taps)), dtype=np.float64)
    for i, sigma in enumerate(sigmas):
        if sigma < 0.05:
            kernels[i, radius] = 1.0
        else:
            k = np.exp(-0.5 * (taps / sigma) ** 2)
            kernels[i] = k / k.sum()
    k = torch.from_numpy(kernels.astype(np.float32))
    y = functional.pad(x.transpose(0, 1), (radius, radius, radius, radius), mode="reflect")
    y = functional.conv2d(y, k[:, None, None, :], groups=n)
    y = functional.conv2d(y, k[:, None, :, None], groups=n)
    return y.transpose(0, 1)


def _draw(rng: np.random.Generator, low: float, high: float, n: int) -> torch.Tensor:
    """``n`` float32 values, uniform in [low, high]."""
    return torch.from_numpy(rng.uniform(low, high, size=(n,)).astype(np.float32))


def augment(images: U8Images, rng: np.random.Generator, spec: LineVariation) -> U8Images:
    """(N, H, W) uint8 crops -> the same shape, each varied as ``spec`` draws it."""
    n, h, w = images.shape
    if n == 0:
        return images.copy()
    x = torch.from_numpy(np.ascontiguousarray(images)).float()[:, None] / 255.0
    own_noise = noise_sigma(x)
    x = _geometry(x, spec, rng)
    rows = torch.linspace(-1.0, 1.0, h)[:, None]
    cols = torch.linspace(-1.0, 1.0, w)[None, :]
    gx, gy = (
        _draw(rng, -spec.gradient, spec.gradient, n),
        _draw(rng, -spec.gradient, spec.gradient, n),
    )
    light = 1.0 + gx[:, None, None] * cols + gy[:, None, None] * rows
    gain = _draw(rng, 1.0 - spec.gain, 1.0 + spec.gain, n)
    offset = _draw(rng, -spec.offset, spec.offset, n) * x.mean(dim=(1, 2, 3))
    x = x * (light[:, None] * gain[:, None, None, None]) + offset[:, None, None, None]
    gamma = _draw(rng, math.log(spec.gamma[0]), math.log(spec.gamma[1]), n).exp()
    x = x.clamp(0.0, 1.0) ** gamma[:, None, None, None]
    x = _blur(x, _draw(rng, 0.0, spec.blur_sigma, n).numpy().astype(np.float64))
    extra = math.sqrt(max(spec.noise_factor**2 - 1.0, 0.0))
    level = _draw(rng, 0.0, extra, n) * own_noise
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    x = x + torch.randn(x.shape, generator=generator) * level[:, None, None, None]
    out = (x[:, 0] * 255.0).round().clamp(0.0, 255.0).to(torch.uint8)
    return np.asarray(out.numpy(), dtype=np.uint8)
