"""The demo's line: a few percent NG (configurable) out of the generated half-NG images, as
hard links; the recipe and the film's resolution for the page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from linevision.tools import demo, demo_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    film = demo.FilmSize(width=256, lines=512, strip_lines=128)
    return root, demo.ensure_demo_data(root, film)


def _inode(p: Path) -> int:
    return p.stat().st_ino


def test_the_line_runs_at_the_ng_rate_asked_and_links_the_generated_files(data):
    root, generated = data
    line = demo_line.line_data(generated, root, 0.03)
    pole = sorted(line.pole_piece.iterdir())
    assert len(pole) == demo_line.CELLS["pole_piece"]
    bad = {_inode(p) for p in generated.pole_piece.glob("*.png") if not p.stem.endswith("_Normal")}
    ng = [p for p in pole if _inode(p) in bad]
    assert len(ng) == round(0.03 * len(pole))  # 6 of 200
    assert all(p.stat().st_nlink > 1 for p in pole)  # links, not copies
    seal_bad = {
        _inode(p) for p in generated.seal_images.glob("*.png") if not p.stem.endswith("_OK")
    }
    seal = sorted(line.seal_images.iterdir())
    assert sum(_inode(p) in seal_bad for p in seal) == 6
    # the six views of cell k come from one generated cell
    made_cells = (generated.six_reference.parent / "cells").iterdir()
    cells = sorted(p.name for p in made_cells if p.is_dir() and p.name != "reference")
    by_view = []
    for v, (served, made) in enumerate(zip(line.six_views, generated.six_views, strict=True)):
        index = {_inode(made / f"{i:04d}.png"): i for i in range(len(cells))}
        by_view.append([index[_inode(p)] for p in sorted(served.iterdir())])
        assert len(by_view[v]) == demo_line.CELLS["six_view"]
    assert all(col == by_view[0] for col in by_view)
    assert sum(not cells[i].endswith("_OK") for i in by_view[0]) == 6
    strips = sorted(line.film_strips.iterdir())
    assert len(strips) == demo_line.CELLS["blue_film"] * generated.film.strips
    ng_frames = {
        p.name[:3]
        for p in strips
        if _inode(p) == _inode(generated.film_strips / f"001_{p.name[4:]}")
    }
    assert len(ng_frames) == 3
    # another rate is another sequence; asking again reuses what was built
    calm = demo_line.line_data(generated, root, 0.0)
    assert not [p for p in calm.pole_piece.iterdir() if _inode(p) in bad]
    assert _inode(demo_line.line_data(generated, root, 0.03).pole_piece / "00000.png") == _inode(
        pole[0]
    )


def test_the_demo_has_a_recipe_and_metres_along_the_film(data, tmp_path):
    _, generated = data
    cfg = demo_line.configure(demo.four_station_config(generated), tmp_path)
    assert cfg.recipes.active == demo_line.DEMO_RECIPE
    assert (tmp_path / "recipes" / "demo_cell.yaml").is_file()
    film = cfg.camera("film_cam")
    assert film.line_scan is not None
    assert film.line_scan.mm_per_line == demo_line.DEMO_MM_PER_LINE


@pytest.mark.parametrize(("args", "problem"), [
    (["--ng-rate", "1.5"], "a fraction 0..1"),
    (["--ng-rate", "x"], "not a number"),
    (["--ng-rate", "0.1", "--config", "/nonexistent.yaml"], "the demo's (no --config)"),
])  # fmt: skip
def test_a_bad_ng_rate_is_refused_naming_the_option(args, problem):
    run = subprocess.run(
        [sys.executable, "-m", "linevision", "run", "--no-hmi", *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "--ng-rate" in run.stderr
    assert problem in run.stderr
