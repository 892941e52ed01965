"""A manifest records its data folders without absolute paths of the training machine."""

from __future__ import annotations

import doctest
from typing import TYPE_CHECKING

from linevision.train import folder_data
from linevision.train.folder_data import recorded_path

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def test_a_folder_is_recorded_relative_to_the_command_or_by_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert recorded_path(tmp_path / "build" / "seal_train") == "build/seal_train"
    assert recorded_path(tmp_path.parent / "elsewhere" / "seal_val") == "seal_val"
    assert recorded_path((tmp_path / "seal_test").relative_to(tmp_path)) == "seal_test"


def test_doctests() -> None:
    failures, _ = doctest.testmod(folder_data)
    assert failures == 0
