"""``linevision synth``: each station's folder, written small, readable by the contract reader."""

from __future__ import annotations

import cv2
import pytest

from linevision.cli import main
from linevision.cli.common import EXIT_CONFIG, EXIT_OK
from linevision.synth.contract import read_labels

CASES = [
    ("pole_piece", ["--n", "1"], 5),
    ("seal_edge", ["--n", "3"], 3),
    ("six_view", ["--n", "2"], 2),
    ("blue_film", ["--n", "2", "--width", "1024", "--height", "1280"], 2),
]


@pytest.mark.parametrize(("station", "extra", "count"), CASES)
def test_synth_writes_a_contract_folder(tmp_path, capsys, station, extra, count) -> None:
    out = tmp_path / station
    code = main(["synth", "--station", station, "--out", str(out), "--seed", "4", *extra])
    assert code == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{out}: {count} {station}")
    samples = read_labels(out, station)
    assert len(samples) == count
    if station == "blue_film":
        image = cv2.imread(str(samples[0].path), cv2.IMREAD_UNCHANGED)
        assert image.shape == (1280, 1024, 3)


def test_synth_is_deterministic_with_a_seed(tmp_path) -> None:
    for name in ("a", "b"):
        args = ["synth", "--station", "seal_edge", "--out", str(tmp_path / name), "--n", "2"]
        assert main([*args, "--seed", "9"]) == EXIT_OK
    for rel in ("labels.csv", "reference.png", "images/00000_OK.png", "images/00001_crack.png"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_synth_rejects_small_frames_and_bad_counts(tmp_path, capsys) -> None:
    out = str(tmp_path / "x")
    assert main(["synth", "--station", "blue_film", "--out", out, "--width", "512"]) == EXIT_CONFIG
    assert main(["synth", "--station", "seal_edge", "--out", out, "--n", "-1"]) == EXIT_CONFIG
    assert "linevision synth:" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        main(["synth", "--station", "welding", "--out", out])


def test_design_seed_draws_other_cells_of_one_product(tmp_path) -> None:
    def synth(name: str, *extra: str) -> int:
        args = ["synth", "--station", "six_view", "--out", str(tmp_path / name), "--n", "1"]
        return main([*args, "--ng-fraction", "0", *extra])

    assert synth("product", "--seed", "21") == EXIT_OK
    assert synth("more", "--seed", "99", "--design-seed", "21") == EXIT_OK
    assert synth("other", "--seed", "99") == EXIT_OK
    ref, cell = "reference/1.png", "00000_OK/1.png"
    product, more, other = (tmp_path / n for n in ("product", "more", "other"))
    assert (product / ref).read_bytes() == (more / ref).read_bytes()
    assert (product / cell).read_bytes() != (more / cell).read_bytes()
    assert (more / ref).read_bytes() != (other / ref).read_bytes()
    refused = ["synth", "--station", "seal_edge", "--out", str(tmp_path / "r"), "--n", "1"]
    assert main([*refused, "--design-seed", "2"]) == EXIT_CONFIG
