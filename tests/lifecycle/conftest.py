"""Fixtures of the lifecycle tests: tiny real models and a folder camera's frames."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon.parts import make_frames, make_model


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """``tiny`` calls frames brighter than half NG; ``blind`` only those above 0.9: it
    misses the bright master NG cells (mean about 0.76)."""
    root = tmp_path / "models"
    make_model(root / "tiny")
    make_model(root / "blind", name="blind", at=0.9)
    return root


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    return make_frames(tmp_path / "frames")
