"""The demo's generated images are cached per key (seed, film size); the cache never serves
another key's images."""

from __future__ import annotations

from typing import TYPE_CHECKING

from linevision.tools import demo

if TYPE_CHECKING:
    from pathlib import Path


def test_going_back_to_an_earlier_key_rebuilds_its_images(tmp_path: Path) -> None:
    built: list[str] = []

    def writer(key: str):
        def build(folder: Path) -> None:
            built.append(key)
            (folder / "strip.txt").write_text(key)

        return build

    folder = tmp_path / "blue_film"
    for key in ("4000x18000", "1024x2048", "4000x18000", "4000x18000"):
        demo._once(folder, key, writer(key))
        assert (folder / "strip.txt").read_text() == key
    # built once per change of key, reused while the key stays
    assert built == ["4000x18000", "1024x2048", "4000x18000"]
