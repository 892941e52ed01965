"""Line-variation augmentation: shapes, ranges, determinism, the flips a station allows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from linevision.train import augment  # noqa: E402
from linevision.train.augment import LineVariation  # noqa: E402

NONE = LineVariation(
    gain=0.0,
    offset=0.0,
    gamma=(1.0, 1.0),
    blur_sigma=0.0,
    noise_factor=1.0,
    shift=0.0,
    rotation=0.0,
    gradient=0.0,
    rot90=False,
    flips=(),
)


def crops(n: int = 6, side: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    images = np.full((n, side, side), 60.0)
    images[:, :, side // 2 :] = 180.0  # an edge down the middle, bright on the right
    images[:, : side // 4, : side // 4] = 120.0  # and a mark in the top-left corner
    return np.clip(images + rng.normal(0, 3, images.shape), 0, 255).astype(np.uint8)


def test_shapes_dtype_and_determinism_with_a_seed() -> None:
    images = crops()
    a = augment.augment(images, np.random.default_rng(7), LineVariation())
    b = augment.augment(images, np.random.default_rng(7), LineVariation())
    c = augment.augment(images, np.random.default_rng(8), LineVariation())
    assert a.shape == images.shape
    assert a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, images)
    assert augment.augment(images[:0], np.random.default_rng(0), LineVariation()).shape[0] == 0


def test_nothing_drawn_leaves_the_crops_as_they_are() -> None:
    images = crops()
    assert np.array_equal(augment.augment(images, np.random.default_rng(0), NONE), images)


def test_gain_and_offset_stay_within_25_percent() -> None:
    flat = np.full((200, 8, 8), 100, dtype=np.uint8)
    gained = augment.augment(flat, np.random.default_rng(1), replace(NONE, gain=0.25))
    means = gained.reshape(200, -1).mean(axis=1)
    assert means.min() >= 75 - 0.5
    assert means.max() <= 125 + 0.5
    assert means.max() - means.min() > 30  # the range is used, not just its middle
    shifted = augment.augment(flat, np.random.default_rng(1), replace(NONE, offset=0.25))
    levels = shifted.reshape(200, -1).mean(axis=1)
    assert levels.min() >= 75 - 0.5
    assert levels.max() <= 125 + 0.5


def test_blur_and_noise_stay_in_their_ranges() -> None:
    images = crops(n=40)
    own = float(augment.noise_sigma(torch.from_numpy(images).float()[:, None]).mean())
    noisy = augment.augment(images, np.random.default_rng(2), replace(NONE, noise_factor=2.0))
    sigma = augment.noise_sigma(torch.from_numpy(noisy).float()[:, None]).numpy()
    assert sigma.max() <= 2.0 * own * 1.3
    assert sigma.mean() > 1.2 * own
    blurred = augment.augment(images, np.random.default_rng(3), replace(NONE, blur_sigma=1.5))
    # the edge keeps its place and at most 1.5 px of blur spreads it over a few pixels
    row = blurred[:, 16, :].astype(float)
    assert np.all(row[:, 10] < 90)
    assert np.all(row[:, 22] > 150)


def test_geometry_moves_a_few_pixels_at_most() -> None:
    images = crops(n=30)
    moved = augment.augment(
        images,
        np.random.default_rng(4),
        replace(NONE, shift=4.0, rotation=3.0),
    )
    columns = (moved[:, 8:24, :] > 120).mean(axis=1)  # where the bright side starts, per crop
    starts = np.argmax(columns > 0.5, axis=1)
    assert np.all(np.abs(starts - 16) <= 5)
    assert len(set(starts.tolist())) > 1


@pytest.mark.parametrize(("edge", "allowed"), [("vertical", "ud"), ("horizontal", "lr")])
def test_a_fixed_edge_gets_only_the_flip_along_it(edge: str, allowed: str) -> None:
    images = crops(n=40)
    fixed = augment.for_edge(edge)
    assert fixed.rot90 is False
    spec = replace(NONE, flips=fixed.flips)
    out = augment.augment(images, np.random.default_rng(5), spec)
    flipped = np.flip(images, axis=1 if allowed == "ud" else 2)
    same = [np.array_equal(o, i) for o, i in zip(out, images, strict=True)]
    flip = [np.array_equal(o, f) for o, f in zip(out, flipped, strict=True)]
    assert all(s or f for s, f in zip(same, flip, strict=True))
    assert any(same)
    assert any(flip)


def test_any_edge_draws_rotations_too() -> None:
    images = crops(n=40)
    spec = replace(NONE, rot90=True, flips=(augment.ROWS,))
    out = augment.augment(images, np.random.default_rng(6), spec)
    rotated = [
        np.array_equal(o, np.rot90(i)) or np.array_equal(o, np.rot90(i, 3))
        for o, i in zip(out, images, strict=True)
    ]
    assert any(rotated)
    with pytest.raises(ValueError, match="edge"):
        augment.for_edge("diagonal")
