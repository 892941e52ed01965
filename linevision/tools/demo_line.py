"""The demo as a line runs: mostly good cells, a few NG, a recipe, a film resolution.

The generated images (:mod:`linevision.tools.demo`) are half NG, which is what a benchmark
wants and not what a shift looks like: every yield alarm would be on. ``line_data`` serves
them as a long sequence of cells of which ``ng_rate`` (3 % by default) are NG, spread at
random (seeded), as hard links to the generated files (a film frame is 72 MB), built once
per rate. The emulator serves a folder's files in name order and cycles, so the sequence
repeats. ``configure`` gives the demo the recipe ``demo_cell`` and its film camera a
resolution along the film, so the page shows a recipe and metres.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from linevision.config import Config
from linevision.tools.demo import DEMO_SEED, DemoData, _once

DEMO_NG_RATE = 0.03
CELLS = {"pole_piece": 200, "seal_edge": 200, "six_view": 200, "blue_film": 100}
"""Cells in each station's sequence (at the rated load: 10 s, 50 s, 100 s and 100 s)."""
DEMO_RECIPE = "demo_cell"
DEMO_MM_PER_LINE = 0.02
"""The demo film's travel per line: its 18,000-line frame is 0.36 m of film."""


def sequence(cells: int, ng_rate: float, seed: int) -> list[bool]:
    """Which of ``cells`` consecutive cells are NG: ``round(cells * ng_rate)`` at random.

    >>> s = sequence(200, 0.03, 1)
    >>> len(s), sum(s), sequence(10, 0.0, 1) == [False] * 10
    (200, 6, True)
    """
    if not 0.0 <= ng_rate <= 1.0:
        msg = f"ng_rate {ng_rate} is not a fraction between 0 and 1"
        raise ValueError(msg)
    rng = np.random.default_rng([seed, cells])
    bad = set(rng.choice(cells, size=round(cells * ng_rate), replace=False).tolist())
    return [i in bad for i in range(cells)]


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _serve(out: Path, good: list[Path], bad: list[Path], ng: list[bool], name: str) -> None:
    """``out/<k>`` for each cell k: the next bad file for an NG cell, else the next good."""
    out.mkdir(parents=True)
    took = {True: 0, False: 0}
    for k, is_ng in enumerate(ng):
        pool = bad if is_ng and bad else good
        src = pool[took[is_ng] % len(pool)]
        took[is_ng] += 1
        _link(src, out / name.format(k=k, suffix=src.suffix))


def line_data(data: DemoData, root: Path, ng_rate: float = DEMO_NG_RATE) -> DemoData:
    """``data`` served as a line at ``ng_rate`` (generated once per rate under ``root``)."""
    folder = root / f"line-{round(ng_rate * 1000):04d}-per-mille"
    film = data.film

    def build(out: Path) -> None:
        pole = sorted(data.pole_piece.glob("*.png"))
        ng = sequence(CELLS["pole_piece"], ng_rate, DEMO_SEED)
        good = [p for p in pole if p.stem.endswith("_Normal")]
        _serve(out / "pole_piece", good, [p for p in pole if p not in good], ng, "{k:05d}{suffix}")
        seal = sorted(data.seal_images.glob("*.png"))
        ng = sequence(CELLS["seal_edge"], ng_rate, DEMO_SEED + 1)
        good = [p for p in seal if p.stem.endswith("_OK")]
        _serve(out / "seal_edge", good, [p for p in seal if p not in good], ng, "{k:05d}{suffix}")
        made = (data.six_reference.parent / "cells").iterdir()
        cells = sorted(p.name for p in made if p.is_dir() and p.name != "reference")
        ng = sequence(CELLS["six_view"], ng_rate, DEMO_SEED + 2)
        for view, served in enumerate(data.six_views, start=1):
            files = [served / f"{i:04d}.png" for i in range(len(cells))]
            good = [f for f, c in zip(files, cells, strict=True) if c.endswith("_OK")]
            bad = [f for f in files if f not in good]
            _serve(out / "six_view" / f"view{view}", good, bad, ng, "{k:05d}{suffix}")
        ng = sequence(CELLS["blue_film"], ng_rate, DEMO_SEED + 3)
        (out / "blue_film").mkdir()
        for k, is_ng in enumerate(ng):  # the demo's film: frame 0 good, frame 1 NG
            for s in range(film.strips):
                _link(data.film_strips / f"{int(is_ng):03d}_{s:03d}.bmp",
                      out / "blue_film" / f"{k:03d}_{s:03d}.bmp")  # fmt: skip

    key = f"{DEMO_SEED}-{ng_rate}-{film.width}x{film.lines}-{film.strip_lines}"
    _once(folder, key, build)
    return replace(
        data,
        pole_piece=folder / "pole_piece",
        seal_images=folder / "seal_edge",
        six_views=tuple(folder / "six_view" / f"view{v}" for v in range(1, 7)),
        film_strips=folder / "blue_film",
    )


def configure(cfg: Config, root: Path) -> Config:
    """The demo's recipe (``demo_cell``: the models and rules of the configuration, written
    under ``root/recipes``) and its film camera's resolution along the film."""
    recipes = root / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    recipe = recipes / f"{DEMO_RECIPE}.yaml"
    if not recipe.exists():
        text = f"name: {DEMO_RECIPE}\ndescription: the demo's generated cells\nstations: {{}}\n"
        recipe.write_text(text, encoding="utf-8")
    data = cfg.model_dump(mode="json")
    data["recipes"] = {"dir": str(recipes), "active": DEMO_RECIPE}
    for cam in data["cameras"]:
        if cam.get("line_scan"):
            cam["line_scan"]["mm_per_line"] = DEMO_MM_PER_LINE
    return Config.model_validate(data)
