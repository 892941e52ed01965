"""The embedded demo: emulated pylon cameras serving generated pole-piece images."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from linevision.config import Config
from linevision.synth import pole_piece

DEMO_IMAGES = 60
DEMO_SEED = 20261124


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "linevision" / "demo"


def find_models_root() -> Path:
    """``$LINEVISION_MODELS``, else ``models/`` beside the package (source checkout), else cwd."""
    env = os.environ.get("LINEVISION_MODELS")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parent.parent / "models"
    if beside.is_dir():
        return beside
    return Path.cwd() / "models"


def ensure_pole_piece_images(folder: Path, count: int = DEMO_IMAGES, seed: int = DEMO_SEED) -> Path:
    """Write ``count`` generated images (mixed classes, mostly Normal) once; reuse after."""
    folder.mkdir(parents=True, exist_ok=True)
    # the emulator serves every file in the folder, so the marker lives beside it
    marker = folder.parent / f".{folder.name}-complete-{count}-{seed}"
    if marker.exists():
        return folder
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    rng = np.random.default_rng(seed)
    weights = np.array([0.6, 0.1, 0.1, 0.1, 0.1])
    for i in range(count):
        label = pole_piece.CLASSES[int(rng.choice(len(pole_piece.CLASSES), p=weights))]
        img = pole_piece.generate(label, rng)
        tmp = folder / f".{i:04d}_{label}.tmp.png"
        cv2.imwrite(str(tmp), img)
        tmp.replace(folder / f"{i:04d}_{label}.png")
    marker.touch()
    return folder


def demo_config(images: Path, rate_hz: float = 20.0) -> Config:
    return Config.model_validate(
        {
            "cameras": [
                {
                    "id": "pole_piece_cam",
                    "backend": "pylon",
                    "device": {"serial": "0815-0000"},
                    "pixel_format": "Mono8",
                    "trigger": {"mode": "software", "rate_hz": rate_hz},
                    "grab_timeout_ms": 500,
                    "emulation": {"image_path": str(images), "frame_period_us": 2000},
                }
            ],
            "stations": [
                {
                    "name": "pole_piece",
                    "type": "pole_piece",
                    "cameras": ["pole_piece_cam"],
                    "model": "pole_piece",
                    "deadline_ms": 30,
                }
            ],
        }
    )


def prepare_emulation(devices: int = 1) -> None:
    """Expose emulated Basler cameras; must run before pypylon's factory is first used."""
    os.environ.setdefault("PYLON_CAMEMU", str(devices))
