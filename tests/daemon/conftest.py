"""Fixtures for the daemon tests: a folder with two tiny models and a folder of frames."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon.parts import make_frames, make_model


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    make_model(root / "tiny")
    make_model(root / "tiny_inv", name="tiny_inv", invert=True)
    return root


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    return make_frames(tmp_path / "frames")
