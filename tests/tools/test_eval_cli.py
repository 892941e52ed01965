"""``linevision eval`` on the shipped pole-piece model and a freshly generated folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linevision.cli import main
from linevision.synth import pole_piece
from tests.helpers import EVAL_KEYS

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "pole_piece"
KEYS = EVAL_KEYS


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pole_piece_eval")
    pole_piece.write_dataset(out, 20, seed=31337)
    return out


def test_eval_json_on_the_shipped_model(folder, capsys) -> None:
    code = main(["eval", "--station", "pole_piece", "--data", str(folder), "--json"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    for key in KEYS:
        assert key in report
    assert report["n"] == 100
    assert report["accuracy"] >= 0.9
    assert report["macro_f1"] >= 0.9
    assert report["auroc"] >= 0.95
    assert report["ng_recall"] >= 0.9
    assert report["ok_false_reject"] <= 0.15
    assert set(report["per_class"]) == set(pole_piece.CLASSES)
    assert sum(map(sum, report["confusion"])) == 100
    assert 0.0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]


def test_eval_text_names_the_figures(folder, capsys) -> None:
    code = main(
        ["eval", "--station", "pole_piece", "--data", str(folder), "--model", str(MODEL_DIR)]
    )
    assert code == 0
    out = capsys.readouterr().out
    for word in ("accuracy", "macro F1", "AUROC", "NG recall", "OK false-reject", "p99"):
        assert word in out
    assert "Powder" in out


def test_eval_with_a_missing_model_is_a_usage_error(folder, tmp_path, capsys) -> None:
    args = ["eval", "--station", "pole_piece", "--data", str(folder), "--model", str(tmp_path)]
    assert main(args) == 2
    assert "manifest not found" in capsys.readouterr().err


def test_eval_with_a_folder_of_another_station_is_a_usage_error(tmp_path, capsys) -> None:
    (tmp_path / "labels.csv").write_text("image,label\nx.png,OK\n", encoding="utf-8")
    args = ["eval", "--station", "pole_piece", "--data", str(tmp_path), "--model", str(MODEL_DIR)]
    assert main(args) == 2
    assert "labels.csv" in capsys.readouterr().err
