"""The dataset folder contract: write_dataset -> read_labels round trips and reader errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from linevision.synth import blue_film, pole_piece, seal_edge, six_view
from linevision.synth.contract import LABELS, DataError, read_labels, reference_paths


def test_labels_match_the_generators() -> None:
    assert LABELS["pole_piece"] == pole_piece.CLASSES
    assert LABELS["seal_edge"] == seal_edge.CLASSES
    assert LABELS["six_view"] == six_view.CLASSES
    assert LABELS["blue_film"] == blue_film.CLASSES


def test_pole_piece_round_trip(tmp_path) -> None:
    pole_piece.write_dataset(tmp_path, 2, seed=1)
    samples = read_labels(tmp_path, "pole_piece")
    assert [s.label for s in samples] == [c for c in pole_piece.CLASSES for _ in range(2)]
    assert all(s.path.is_file() and s.path.parent.name == s.label for s in samples)
    assert reference_paths(tmp_path, "pole_piece") == ()


def test_seal_edge_round_trip(tmp_path) -> None:
    seal_edge.write_dataset(tmp_path, 6, seed=1)
    samples = read_labels(str(tmp_path), "seal_edge")
    assert [s.label for s in samples] == ["OK", "NG"] * 3
    assert all(s.path.is_file() and s.mask is None for s in samples)
    assert reference_paths(tmp_path, "seal_edge") == (tmp_path / "reference.png",)


def test_six_view_round_trip(tmp_path) -> None:
    six_view.write_dataset(tmp_path, 2, seed=1)
    samples = read_labels(tmp_path, "six_view")
    assert [s.label for s in samples] == ["OK", "NG"]
    for sample in samples:
        assert sample.path.is_dir()
        assert [v.name for v in sample.views] == [f"{i}.png" for i in range(1, 7)]
    refs = reference_paths(tmp_path, "six_view")
    assert [r.relative_to(tmp_path).as_posix() for r in refs] == [
        f"reference/{i}.png" for i in range(1, 7)
    ]


def test_blue_film_round_trip(tmp_path) -> None:
    blue_film.write_dataset(tmp_path, 2, seed=1, size=(1024, 1024))
    ok, ng = read_labels(tmp_path, "blue_film")
    assert (ok.label, ok.mask) == ("OK", None)
    assert ng.label == "NG"
    assert ng.mask is not None
    assert ng.mask.is_file()


def _folder(tmp_path: Path, text: str, files: tuple[str, ...] = ()) -> Path:
    for name in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"png")
    (tmp_path / "labels.csv").write_text(text, encoding="utf-8")
    return tmp_path


def _raises(folder: Path, station: str, pattern: str) -> DataError:
    with pytest.raises(DataError, match=pattern) as info:
        read_labels(folder, station)
    return info.value


def test_missing_labels_file_is_named(tmp_path) -> None:
    error = _raises(tmp_path, "pole_piece", "missing")
    assert str(tmp_path / "labels.csv") in str(error)


def test_wrong_header(tmp_path) -> None:
    folder = _folder(tmp_path, "path,class\na.png,OK\n", ("a.png",))
    error = _raises(folder, "seal_edge", r"labels\.csv:1: header must start with image,label")
    assert "path,class" in str(error)


def test_unknown_label_names_file_and_line(tmp_path) -> None:
    folder = _folder(tmp_path, "image,label\na.png,Normal\nb.png,Burr\n", ("a.png", "b.png"))
    error = _raises(folder, "pole_piece", re.escape("labels.csv:3: unknown label 'Burr'"))
    assert "Normal, Short, Long, Powder, Other" in str(error)


def test_missing_image_names_line(tmp_path) -> None:
    folder = _folder(tmp_path, "image,label\na.png,OK\nimages/b.png,NG\n", ("a.png",))
    shutil.copy(folder / "a.png", folder / "reference.png")
    _raises(folder, "seal_edge", re.escape("labels.csv:3: image 'images/b.png' not found"))


def test_seal_edge_needs_its_reference(tmp_path) -> None:
    folder = _folder(tmp_path, "image,label\na.png,OK\n", ("a.png",))
    _raises(folder, "seal_edge", re.escape(f"{tmp_path / 'reference.png'}: missing"))


def test_six_view_missing_view_and_reference(tmp_path) -> None:
    views = tuple(f"c1/{i}.png" for i in range(1, 6))
    refs = tuple(f"reference/{i}.png" for i in range(1, 7))
    folder = _folder(tmp_path, "cell,label\nc1,OK\n", views + refs)
    _raises(folder, "six_view", re.escape("labels.csv:2: cell 'c1' is missing view 6.png"))
    (folder / "reference" / "4.png").unlink()
    _raises(folder, "six_view", re.escape("4.png: missing"))


def test_blue_film_mask_rules(tmp_path) -> None:
    files = ("f0.png", "f1.png", "m1.png")
    folder = _folder(tmp_path, "image,label,mask\nf0.png,OK,m1.png\n", files)
    _raises(folder, "blue_film", "labels.csv:2: an OK frame takes no mask")
    _folder(tmp_path, "image,label,mask\nf0.png,OK,\nf1.png,NG,m9.png\n")
    _raises(folder, "blue_film", re.escape("labels.csv:3: mask 'm9.png' not found"))
    _folder(tmp_path, "image,label,mask\nf0.png,OK,\nf1.png,NG,\n")
    assert [s.mask for s in read_labels(folder, "blue_film")] == [None, None]


def test_row_shape_duplicates_paths_and_emptiness(tmp_path) -> None:
    folder = _folder(tmp_path, "image,label\na.png\n", ("a.png",))
    _raises(folder, "pole_piece", "labels.csv:2: expected 2 fields")
    _folder(tmp_path, "image,label\na.png,Long\na.png,Short\n")
    _raises(folder, "pole_piece", r"labels\.csv:3: image 'a.png' listed twice \(first on line 2\)")
    _folder(tmp_path, "image,label\n../a.png,Long\n")
    _raises(folder, "pole_piece", "labels.csv:2: image path must be relative")
    _folder(tmp_path, "image,label\n\n")
    _raises(folder, "pole_piece", "no samples")
    _folder(tmp_path, "")
    _raises(folder, "pole_piece", "header must start with image,label, got 'an empty file'")


def test_unknown_station(tmp_path) -> None:
    _raises(tmp_path, "welding", "unknown station 'welding'")
